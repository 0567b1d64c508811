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

from duckflock.live.fold.computed import Computed, Refused
from duckflock.live.fold.query import DELTA
from duckflock.live.plan.compiler import Compiler, Unknown
from duckflock.live.plan.probes import probe_rows, same


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
    except (Unknown, Refused, duckdb.Error, pa.ArrowException, KeyError, TypeError, ValueError):
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
    except Unknown as exc:
        raise ValueError(str(exc)) from exc


def new_rows(relation: dict[str, Any], names: list[str], read: set[str]) -> bool:
    """Whether ``relation`` (a FROM clause's syntax tree) is the new rows themselves
    (:func:`_as_they_are`)."""
    try:
        _as_they_are(relation, names, read)
    except Unknown:
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
        raise Unknown("not a plain SELECT")
    if (
        node.get("modifiers")
        or node.get("sample")
        or node.get("aggregate_handling")
        not in (
            None,
            "STANDARD_HANDLING",
        )
    ):
        raise Unknown("modifiers")
    if relation:  # (else the caller checked the FROM clause)
        _as_they_are(node.get("from_table") or {}, source.names, read)
    names = {name.lower(): name for name in source.names}
    compiler = Compiler(names, types)
    keys, aggregates = [], []
    for item in node["select_list"]:
        alias = str(item.get("alias", ""))
        if alias.startswith("__k"):
            keys.append(compiler.expression(item))
        elif alias.startswith("__p"):
            aggregates.append(compiler.aggregate(item))
        else:
            raise Unknown(alias)
    if len(node.get("group_expressions") or []) != len(keys) or not keys:
        raise Unknown("the groups are not the keys")
    where = node.get("where_clause")
    return Computed(
        keys=tuple(keys),
        where=compiler.expression(where) if where else None,
        aggregates=tuple(aggregates),
        floating=tuple(sorted(compiler.floating)),
    )


def _as_they_are(relation: dict[str, Any], names: list[str], read: set[str]) -> None:
    """Raises :class:`Unknown` unless ``relation`` is the new rows themselves: the
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
            raise Unknown("the new rows, changed")
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
        raise Unknown("not the new rows")


def _appended(node: dict[str, Any], names: list[str], read: set[str]) -> dict[str, Any]:
    """The relation under a ``UNION ALL`` of no rows of the table and the new rows'
    columns (the read ones as they are); :class:`Unknown` for any other set operation."""
    if node.get("setop_type") != "UNION" or not node.get("setop_all") or node.get("modifiers"):
        raise Unknown("a set operation")
    empty, rows = node["left"], node["right"]
    none = False
    while empty.get("type") == "SELECT_NODE":  # SELECT * … LIMIT 0 over the table
        star = empty.get("select_list") or []
        if len(star) != 1 or star[0].get("class") != "STAR" or empty.get("where_clause"):
            raise Unknown("not the table's empty rows")
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
        raise Unknown("not the table's empty rows")
    items = rows.get("select_list") or []
    if len(items) != len(names) or rows.get("group_expressions") or rows.get("modifiers"):
        raise Unknown("not every column")
    for name, item in zip(names, items, strict=True):
        if name.lower() in read and (
            item.get("class") != "COLUMN_REF"
            or [str(part).lower() for part in item["column_names"]] != [name.lower()]
            or str(item.get("alias") or name).lower() != name.lower()
        ):
            raise Unknown(f"{name} is cast")
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
