"""Whether the row-by-row merge's partials query can run as a pyarrow program
(:mod:`duckflock.live.fold.computed`), and that program.

The query's syntax tree (DuckDB's parser, ``json_serialize_sql``) is compiled when each
node is one this module knows: column references, constants, ``upper``/``lower``,
checked ``+ - *`` and ``%`` of integers, comparisons, NOT, AND/OR, IS [NOT] NULL, and the
aggregates of :data:`~duckflock.live.fold.computed.FUNCTIONS` with a FILTER. Knowing the
node is not enough: the program is admitted only after DuckDB ran the partials query
itself over probe rows (:func:`probe_rows`: negatives, zero, the ends of each integer
type, infinities, NULLs, ASCII strings of both cases) and the program gave the same
table bit for bit — as :mod:`duckflock.live.plan.bucketing` admits a time bucket. A type
promotion, a NULL rule or a function of the same name that DuckDB computes otherwise
fails the probe, and the shape keeps its DuckDB query.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from duckflock.live.fold.computed import (
    FUNCTIONS,
    ORDERED,
    Aggregate,
    Computed,
    Expression,
    Refused,
    Value,
)
from duckflock.live.fold.query import DELTA
from duckflock.live.plan.probes import PROBED, probe_rows, same
from duckflock.live.plan.trees import canonical

_CONSTANTS = {"INTEGER": pa.int32(), "BIGINT": pa.int64(), "VARCHAR": pa.string()}
_CONSTANTS |= {"BOOLEAN": pa.bool_(), "DOUBLE": pa.float64(), "TINYINT": pa.int8()}
_CONSTANTS |= {"SMALLINT": pa.int16()}
_COMPARE = {
    "COMPARE_EQUAL": pc.equal,
    "COMPARE_NOTEQUAL": pc.not_equal,
    "COMPARE_LESSTHAN": pc.less,
    "COMPARE_LESSTHANOREQUALTO": pc.less_equal,
    "COMPARE_GREATERTHAN": pc.greater,
    "COMPARE_GREATERTHANOREQUALTO": pc.greater_equal,
}
_ARITHMETIC = {"+": pc.add_checked, "-": pc.subtract_checked, "*": pc.multiply_checked}
_CASES = {"upper": pc.ascii_upper, "ucase": pc.ascii_upper}
_CASES |= {"lower": pc.ascii_lower, "lcase": pc.ascii_lower}
_DIRECTIONS = ("ASCENDING", "DESCENDING")
_NULLS = ("NULLS FIRST", "NULLS LAST")


class _Unknown(Exception):
    """A node this module does not compile."""


def computed(
    cursor: duckdb.DuckDBPyConnection,
    sql: str,
    schema: pa.Schema,
    source: pa.Schema,
    types: dict[str, str],
    oracle: Callable[[pa.Table], pa.Table],
) -> Computed | None:
    """The pyarrow program of the partials query ``sql`` (keys ``__k…``, partials
    ``__p…`` over the new rows; ``schema``: its Arrow result), when it compiles and
    matches ``oracle`` — DuckDB running ``sql`` over given new rows — on the probe rows;
    else None. ``source``: the new rows' Arrow schema; ``types``: their DuckDB types by
    lower-case name."""
    try:
        tree = json.loads(cursor.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])  # type: ignore[index]
        node = tree["statements"][0]["node"]
        read = program_reads({key: node.get(key) for key in ("select_list", "where_clause")})
        program = _compile(node, source, types, read)
        # over values at the ends of their types, an overflow must raise on both sides
        for ends in (False, True):
            # no tie on a first/last's ORDER BY in a group: such a batch is refused
            rows = program.untied(probe_rows(source, types, read, ends=ends))
            try:
                want = oracle(rows)
            except duckdb.Error:
                if not ends:
                    return None
                want = None
            try:
                got = program.partials(rows, schema)
            except pa.ArrowInvalid:
                got = None
            if (want is None) != (got is None) or not (
                want is None or got is None or same(want, got, schema)
            ):
                return None
    except (_Unknown, Refused, duckdb.Error, pa.ArrowException, KeyError, TypeError, ValueError):
        return None
    return program


def program_reads(node: Any) -> set[str]:
    """The lower-case names of the columns a syntax tree refers to."""
    found: set[str] = set()
    if isinstance(node, dict):
        if node.get("class") == "COLUMN_REF":
            found.add(str(node["column_names"][-1]).lower())
        for value in node.values():
            found |= program_reads(value)
    elif isinstance(node, list):
        for value in node:
            found |= program_reads(value)
    return found


def compiled(node: dict[str, Any], source: pa.Schema, types: dict[str, str]) -> Computed:
    """The program of a partials query's SELECT ``node`` whose FROM clause its caller
    proved gives rows of ``source`` (a join's, joined in pyarrow first:
    :mod:`duckflock.live.plan.joining`), not probed: the caller probes it. Raises
    :class:`ValueError` where a node is one this module does not compile."""
    read = program_reads({key: node.get(key) for key in ("select_list", "where_clause")})
    try:
        return _compile(node, source, types, read, relation=False)
    except _Unknown as exc:
        raise ValueError(str(exc)) from exc


def new_rows(relation: dict[str, Any], names: list[str], read: set[str]) -> bool:
    """Whether ``relation`` (a FROM clause's syntax tree) is the new rows themselves
    (:func:`_as_they_are`)."""
    try:
        _as_they_are(relation, names, read)
    except _Unknown:
        return False
    return True


def _compile(
    node: dict[str, Any],
    source: pa.Schema,
    types: dict[str, str],
    read: set[str],
    *,
    relation: bool = True,
) -> Computed:
    if node.get("type") != "SELECT_NODE" or node.get("having") or node.get("qualify"):
        raise _Unknown("not a plain SELECT")
    if (
        node.get("modifiers")
        or node.get("sample")
        or node.get("aggregate_handling")
        not in (
            None,
            "STANDARD_HANDLING",
        )
    ):
        raise _Unknown("modifiers")
    if relation:  # (else the caller checked the FROM clause)
        _as_they_are(node.get("from_table") or {}, source.names, read)
    names = {name.lower(): name for name in source.names}
    compiler = _Compiler(names, types)
    keys, aggregates = [], []
    for item in node["select_list"]:
        alias = str(item.get("alias", ""))
        if alias.startswith("__k"):
            keys.append(compiler.expression(item))
        elif alias.startswith("__p"):
            aggregates.append(compiler.aggregate(item))
        else:
            raise _Unknown(alias)
    if len(node.get("group_expressions") or []) != len(keys) or not keys:
        raise _Unknown("the groups are not the keys")
    where = node.get("where_clause")
    return Computed(
        keys=tuple(keys),
        where=compiler.expression(where) if where else None,
        aggregates=tuple(aggregates),
        floating=tuple(sorted(compiler.floating)),
    )


def _as_they_are(relation: dict[str, Any], names: list[str], read: set[str]) -> None:
    """Raises :class:`_Unknown` unless ``relation`` is the new rows themselves: the
    table :data:`DELTA`, under subqueries that only ``SELECT *`` (with the limit that
    keeps filters out of the Arrow scan) — no view's WHERE or projection inside — or,
    for a table whose types Arrow does not carry, the new rows cast back and appended
    to none of the table's (``UNION ALL``), each column the program reads as it is.
    ``names``: the new rows' columns, in order; ``read``: the ones read (lower case)."""
    while relation.get("type") == "SUBQUERY" and not relation.get("column_name_alias"):
        node = relation["subquery"]["node"]
        if node.get("type") == "SET_OPERATION_NODE":
            relation = _appended(node, names, read)
            continue
        star = node.get("select_list") or []
        if (
            node.get("type") != "SELECT_NODE"
            or len(star) != 1
            or star[0].get("class") != "STAR"
            or star[0].get("exclude_list")
            or star[0].get("replace_list")
            or star[0].get("rename_list")
            or star[0].get("columns")
            or star[0].get("relation_name")
            or any(node.get(part) for part in ("where_clause", "group_expressions", "having"))
            or any(node.get(part) for part in ("qualify", "sample", "group_sets"))
            or any(_not_all(modifier) for modifier in node.get("modifiers") or [])
        ):
            raise _Unknown("the new rows, changed")
        relation = node.get("from_table") or {}
    if (
        relation.get("type") != "BASE_TABLE"
        or relation.get("table_name") != DELTA
        or relation.get("schema_name")
        or relation.get("catalog_name")
        or relation.get("sample")
        or relation.get("at_clause")
        or relation.get("column_name_alias")
    ):
        raise _Unknown("not the new rows")


def _appended(node: dict[str, Any], names: list[str], read: set[str]) -> dict[str, Any]:
    """The relation under a ``UNION ALL`` of no rows of the table and the new rows'
    columns (the read ones as they are); :class:`_Unknown` for any other set operation."""
    if node.get("setop_type") != "UNION" or not node.get("setop_all") or node.get("modifiers"):
        raise _Unknown("a set operation")
    empty, rows = node["left"], node["right"]
    none = False
    while empty.get("type") == "SELECT_NODE":  # SELECT * … LIMIT 0 over the table
        star = empty.get("select_list") or []
        if len(star) != 1 or star[0].get("class") != "STAR" or empty.get("where_clause"):
            raise _Unknown("not the table's empty rows")
        for modifier in empty.get("modifiers") or []:
            limit = modifier.get("limit") or {}
            none |= (
                limit.get("class") == "CONSTANT" and (limit.get("value") or {}).get("value") == 0
            )
        inner = empty.get("from_table") or {}
        if inner.get("type") != "SUBQUERY":
            break
        empty = inner["subquery"]["node"]
    if not none or rows.get("type") != "SELECT_NODE" or rows.get("where_clause"):
        raise _Unknown("not the table's empty rows")
    items = rows.get("select_list") or []
    if len(items) != len(names) or rows.get("group_expressions") or rows.get("modifiers"):
        raise _Unknown("not every column")
    for name, item in zip(names, items, strict=True):
        if name.lower() in read and (
            item.get("class") != "COLUMN_REF"
            or [str(part).lower() for part in item["column_names"]] != [name.lower()]
            or str(item.get("alias") or name).lower() != name.lower()
        ):
            raise _Unknown(f"{name} is cast")
    return dict(rows.get("from_table") or {})


def _not_all(modifier: dict[str, Any]) -> bool:
    """Whether a modifier may drop or reorder rows (the largest LIMIT does not)."""
    limit = modifier.get("limit") or {}
    return (
        modifier.get("type") != "LIMIT_MODIFIER"
        or modifier.get("offset") is not None
        or limit.get("class") != "CONSTANT"
        or (limit.get("value") or {}).get("value") != 2**63 - 1
    )


class _Compiler:
    def __init__(self, names: dict[str, str], types: dict[str, str]) -> None:
        self._names = names
        self._types = types
        self.floating: set[str] = set()

    def aggregate(self, node: dict[str, Any]) -> Aggregate:
        if _sketch(node):  # CAST(approx_count_distinct(x) EXPORT_STATE AS BLOB)
            counted = self.expression(node["child"]["children"][0])
            return Aggregate(function="approx_count_distinct", argument=counted, filter=None)
        name = str(node.get("function_name", "")).lower()
        children = node.get("children") or []
        orders = (node.get("order_bys") or {}).get("orders") or []
        if (
            node.get("class") != "FUNCTION"
            or name not in FUNCTIONS
            or name == "approx_count_distinct"  # only its state, above
            or node.get("distinct")
            or node.get("export_state")
            or len(orders) != (name in ORDERED)
            or len(children) != {"count_star": 0, "arg_max": 2, "arg_min": 2}.get(name, 1)
        ):
            raise _Unknown(name)
        filtered = node.get("filter")
        argument = self.expression(children[0]) if children else None
        where = self.expression(filtered) if filtered else None
        if orders:  # first/last(v ORDER BY o): the planner spelt out the order
            (order,) = orders
            direction = order.get("type")
            nulls = str(order.get("null_order", "")).replace("_", " ")
            if direction not in _DIRECTIONS or nulls not in _NULLS:
                raise _Unknown(f"{name} ordered {direction} {nulls}")
            return Aggregate(
                function=name,
                argument=argument,
                filter=where,
                by=self.expression(order["expression"]),
                descending=direction == "DESCENDING",
                nulls_first=nulls == "NULLS FIRST",
                order=canonical(order["expression"]),
            )
        return Aggregate(
            function=name,
            argument=argument,
            filter=where,
            by=self.expression(children[1]) if len(children) == 2 else None,
            descending=name == "arg_max",
            order=canonical(children[1]) if len(children) == 2 else "",
        )

    def expression(self, node: dict[str, Any]) -> Expression:
        kind = node.get("class")
        if kind == "COLUMN_REF":
            return self._column(node)
        if kind == "CONSTANT":
            value = _constant(node)
            return lambda rows: value
        if kind == "COMPARISON" and node.get("type") in _COMPARE:
            compare = _COMPARE[node["type"]]
            left, right = self.expression(node["left"]), self.expression(node["right"])
            return lambda rows: compare(*_typed(left(rows), right(rows)))
        children = [self.expression(child) for child in node.get("children") or []]
        operator = node.get("type")
        if kind == "OPERATOR" and len(children) == 1:
            (child,) = children
            if operator == "OPERATOR_NOT":
                return lambda rows: pc.invert(child(rows))
            if operator == "OPERATOR_IS_NULL":
                return lambda rows: pc.is_null(child(rows))
            if operator == "OPERATOR_IS_NOT_NULL":
                return lambda rows: pc.is_valid(child(rows))
        if kind == "CONJUNCTION" and children:
            join = pc.and_kleene if operator == "CONJUNCTION_AND" else pc.or_kleene
            if operator not in ("CONJUNCTION_AND", "CONJUNCTION_OR"):
                raise _Unknown(operator)

            def joined(rows: pa.Table) -> Value:
                value = children[0](rows)
                for child in children[1:]:
                    value = join(value, child(rows))
                return value

            return joined
        if kind == "FUNCTION" and not node.get("filter") and not node.get("distinct"):
            return self._function(str(node.get("function_name", "")).lower(), children)
        raise _Unknown(f"{kind} {operator}")

    def _column(self, node: dict[str, Any]) -> Expression:
        parts = node["column_names"]
        name = self._names.get(str(parts[-1]).lower())
        if name is None or len(parts) > 2:
            raise _Unknown(f"column {parts}")
        kind = self._types.get(name.lower(), "")
        if kind in ("FLOAT", "DOUBLE"):
            self.floating.add(name)
        elif kind not in PROBED:
            raise _Unknown(f"a column of {kind}")  # no probe values for it
        return lambda rows: rows[name]

    def _function(self, name: str, children: list[Expression]) -> Expression:
        if name in _CASES and len(children) == 1:
            case, (child,) = _CASES[name], children

            def cased(rows: pa.Table) -> Value:
                value = child(rows)
                if pc.all(pc.string_is_ascii(value)).as_py() not in (True, None):
                    raise Refused("a non-ASCII string: DuckDB's case rules")
                return case(value)

            return cased
        if name in _ARITHMETIC and len(children) == 2:
            arithmetic, (left, right) = _ARITHMETIC[name], children
            return lambda rows: arithmetic(*_typed(left(rows), right(rows)))
        if name == "%" and len(children) == 2:
            left, right = children
            return lambda rows: _remainder(*_typed(left(rows), right(rows)))
        raise _Unknown(name)


def _sketch(node: dict[str, Any]) -> bool:
    child = node.get("child") or {}
    return (
        node.get("class") == "CAST"
        and (node.get("cast_type") or {}).get("id") == "BLOB"
        and not node.get("try_cast")
        and child.get("class") == "FUNCTION"
        and str(child.get("function_name", "")).lower() == "approx_count_distinct"
        and bool(child.get("export_state"))
        and len(child.get("children") or []) == 1
        and not child.get("filter")
        and not child.get("distinct")
        and not (child.get("order_bys") or {}).get("orders")
    )


def _remainder(left: Value, right: Value) -> Value:
    """Integer ``left % right`` truncated toward zero (the dividend's sign), as C's."""
    if not isinstance(right, pa.Scalar) or not pa.types.is_integer(right.type):
        raise Refused("a remainder by a column")
    if not right.as_py():
        raise Refused("a remainder by zero")
    return pc.subtract_checked(left, pc.multiply_checked(pc.divide_checked(left, right), right))


def _typed(left: Value, right: Value) -> tuple[Value, Value]:
    """A constant operand in its column operand's type (a safe cast; unsafe: refused)."""
    if isinstance(right, pa.Scalar) and not isinstance(left, pa.Scalar):
        right = right.cast(left.type)
    elif isinstance(left, pa.Scalar) and not isinstance(right, pa.Scalar):
        left = left.cast(right.type)
    if left.type != right.type:
        raise Refused(f"{left.type} against {right.type}")
    return left, right


def _constant(node: dict[str, Any]) -> pa.Scalar:
    value = node["value"]
    kind = str(value["type"]["id"])
    if value.get("is_null") or kind not in _CONSTANTS:
        raise _Unknown(f"a constant of {kind}")
    return pa.scalar(value["value"], _CONSTANTS[kind])
