"""Which analysis SQL can refresh incrementally, and the queries that do it.

DuckDB parses the SQL for us (``json_serialize_sql``): from its syntax tree we read the
tables a query reads, and decide whether it has the shape

    SELECT keys…, aggregates… FROM one_table [WHERE row-local predicate]
    [GROUP BY keys] [HAVING …] [ORDER BY …] [LIMIT …]

with aggregates among count(*), count(x), sum, min, max and avg (no DISTINCT, FILTER or
ORDER BY inside them). Such a query keeps a *state*: one row per group holding partial
aggregates (``__k0…`` keys, ``__p0…`` partials; avg keeps a sum and a count). Three
queries are generated, each run by DuckDB:

- ``build``: the state from the whole table (the first refresh, and after any write that
  is not an append through ``db.insert``);
- ``refresh``: the state folded together with the partials of newly appended rows.

Both also compute, per state row, the query's own outputs (its select list cast to the
types the full query has), the HAVING flag and the ORDER BY rank; :func:`split` filters,
sorts and slices (LIMIT/OFFSET) those with pyarrow into the result.

Everything else — joins, CTEs, subqueries, window functions, DISTINCT, other
aggregates, volatile functions, parameters — refreshes by re-running the whole query.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from .arrowfold import ArrowPlan, Output
from .errors import BindError, QueryError, translate
from .names import Identity, Resolver, quote
from .retention import Retraction, hidden_partials, retraction
from .syntax import Reads, parse, reads, table_parts, walk
from .windows import Window, sliding

STATE = "__duckflock_state"
DELTA = "__duckflock_delta"
# the new rows, scanned so that no filter is pushed into the Arrow scan: pyarrow compares
# NaN as unordered, DuckDB as greater than every number (WHERE v > 0 must keep NaN rows)
_DELTA_ROWS = f"(SELECT * FROM {DELTA} LIMIT 9223372036854775807)"

_SUPPORTED = {"count_star", "count", "sum", "min", "max", "avg", "mean"}
_VOLATILE = {
    "random",
    "uuid",
    "gen_random_uuid",
    "now",
    "current_timestamp",
    "get_current_timestamp",
    "transaction_timestamp",
    "current_date",
    "current_time",
    "get_current_time",
    "today",
    "nextval",
    "currval",
    "setseed",
    "current_localtime",
    "current_localtimestamp",
}
_ROW_LOCAL_CLASSES = {
    "COLUMN_REF",
    "CONSTANT",
    "FUNCTION",
    "OPERATOR",
    "CAST",
    "CASE",
    "COMPARISON",
    "CONJUNCTION",
    "BETWEEN",
}


@dataclass(frozen=True)
class Plan:
    """The generated queries of an incremental analysis, and how to read their output.

    ``build`` and ``refresh`` each return the new state (``__k…``/``__p…`` columns) and,
    beside it, the query's outputs (``__o…``, cast to the full query's types), a HAVING
    flag (``__keep``) and an ORDER BY rank (``__rank``); :func:`split` turns that into
    the state and the result. One DuckDB query per refresh: each costs 1-2 ms of fixed
    overhead on small inputs, more than the work itself.
    """

    table: Identity  # the source table
    pin: str  # touches the table: DuckDB takes a transaction's snapshot at first access
    build: str  # from the whole table
    refresh: str  # from STATE and the new rows in DELTA
    state_columns: tuple[str, ...]
    outputs: tuple[str, ...]  # the full query's column names
    filtered: bool  # has HAVING
    ordered: bool  # has ORDER BY
    offset: int
    limit: int | None
    arrow: ArrowPlan | None = None  # the pyarrow fast path, for the plainest shapes
    retract: Retraction | None = None  # how deleted rows leave the state (retention.py)


def split(plan: Plan, table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(state, result) from the output of ``plan.build`` or ``plan.refresh``."""
    state = table.select(list(plan.state_columns))
    result = table
    if plan.filtered:
        result = result.filter(pc.fill_null(result["__keep"], False))
    if plan.ordered:
        result = result.sort_by("__rank")
    if plan.offset or plan.limit is not None:
        result = result.slice(plan.offset, plan.limit)
    result = result.select([f"__o{i}" for i in range(len(plan.outputs))])
    return state, result.rename_columns(list(plan.outputs))


@dataclass(frozen=True)
class Shape:
    """What an analysis query reads, and how it can refresh."""

    reads: Reads
    columns: tuple[str, ...]
    plan: Plan | None
    reason: str  # why it refreshes as it does, in words
    types: tuple[str, ...] = field(default=())
    window: Window | None = None  # a sliding window over now(): plan is its bucketed state

    @property
    def tables(self) -> frozenset[Identity]:
        """The base tables it reads (views expanded)."""
        return self.reads.tables


def inspect(cursor: duckdb.DuckDBPyConnection, sql: str, *, params: Any = None) -> Shape:
    """Parse and bind ``sql``; raise for bad SQL or unknown tables; plan if possible."""
    tree = parse(cursor, sql)
    if tree["statements"][0]["node"].get("type") is None:
        raise QueryError("an analysis must be a SELECT statement", sql=sql)
    try:
        # a relation binds the query without running it, whatever trails it (; or --)
        relation = cursor.sql(sql, params=params)
        columns = tuple(str(name) for name in relation.columns)
        types = tuple(str(kind) for kind in relation.types)
        schema: pa.Schema | None = None
        if params is None:
            schema = relation.limit(0).to_arrow_table().schema
    except duckdb.Error as exc:
        raise translate(exc, sql=sql, params=params) from exc
    read = reads(cursor, tree)
    if params is not None:
        return Shape(read, columns, None, "full: the query takes parameters", types)
    planner = _Planner(cursor, tree["statements"][0]["node"], columns, types, schema)
    try:
        plan = planner.plan()
    except _NotIncremental as why:
        windowed = _sliding(cursor, tree["statements"][0]["node"], columns, types, schema)
        if windowed is None:
            return Shape(read, columns, None, f"full: {why}", types)
        plan, window = windowed
        reason = f"incremental: sliding window over {window.column}"
        return Shape(read, columns, plan, reason, types, window=window)
    return Shape(read, columns, plan, "incremental: append-only aggregate", types)


def _sliding(
    cursor: duckdb.DuckDBPyConnection,
    node: dict[str, Any],
    columns: tuple[str, ...],
    types: tuple[str, ...],
    schema: pa.Schema | None,
) -> tuple[Plan, Window] | None:
    """A sliding window over now() (duckflock.windows), planned with this planner."""

    def plan_node(select: dict[str, Any]) -> Plan:
        return _Planner(cursor, select, columns, types, schema).plan()

    render = _Planner(cursor, node, columns, types)._sql
    try:
        return sliding(cursor, node, columns, types, plan_node, render, _VOLATILE)
    except (_NotIncremental, duckdb.Error, QueryError):
        return None


class _NotIncremental(Exception):
    """The query's shape needs a full re-run; the message says why."""


def _canonical(node: Any) -> str:
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("alias", "query_location")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return json.dumps(strip(node), sort_keys=True)


class _Planner:
    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        node: dict[str, Any],
        columns: tuple[str, ...],
        types: tuple[str, ...],
        schema: pa.Schema | None = None,
    ) -> None:
        self._cursor = cursor
        self._node = node
        self._columns = columns
        self._types = types
        self._keys: dict[str, int] = {}  # canonical group expression -> key index
        self._partials: list[tuple[str, str]] = []  # (partial SQL, merge aggregate)
        self._finals: dict[str, str] = {}  # canonical aggregate -> final SQL over state
        # for the pyarrow fast path: each partial's (kind, plain column / None / False),
        # and each aggregate's output in terms of partials
        self._specs: list[tuple[str, str | bool | None]] = []
        self._outputs: dict[str, Output] = {}
        self._schema = schema

    # -- checks --------------------------------------------------------------------

    def plan(self) -> Plan:
        node = self._node
        if node.get("type") != "SELECT_NODE":
            raise _NotIncremental("not a plain SELECT (set operation or VALUES)")
        if node.get("cte_map", {}).get("map"):
            raise _NotIncremental("the query uses a WITH clause")
        source = node.get("from_table") or {}
        if source.get("type") != "BASE_TABLE":
            raise _NotIncremental("it does not read exactly one table (join or subquery)")
        found = Resolver(self._cursor).lookup(table_parts(source))
        if found is None or found.kind != "table":
            raise _NotIncremental("it reads a view, not a table")
        self._source = found.identity
        self._alias = quote(source.get("alias") or source["table_name"])
        if source.get("sample") or source.get("at_clause") or node.get("sample"):
            raise _NotIncremental("it samples or time-travels")
        if node.get("qualify") is not None:
            raise _NotIncremental("it uses QUALIFY")
        if node.get("aggregate_handling") != "STANDARD_HANDLING":
            raise _NotIncremental("it uses GROUP BY ALL or another special grouping")
        groups = node.get("group_expressions") or []
        sets = node.get("group_sets") or []
        if groups and sets != [list(range(len(groups)))]:
            raise _NotIncremental("it uses GROUPING SETS, ROLLUP or CUBE")
        for modifier in node.get("modifiers") or []:
            if modifier["type"] not in ("ORDER_MODIFIER", "LIMIT_MODIFIER"):
                raise _NotIncremental(f"it uses {modifier['type'].split('_')[0]}")
        where = node.get("where_clause")
        if where is not None:
            self._row_local(where, "the WHERE clause")
        for i, group in enumerate(groups):
            self._row_local(group, "a GROUP BY expression")
            self._keys[_canonical(group)] = i
        select = node.get("select_list") or []
        if any(item.get("class") == "STAR" for item in select):
            raise _NotIncremental("it selects *")
        final_select = [self._final(item) for item in select]
        if not self._partials:
            raise _NotIncremental("it has no aggregate")
        having = node.get("having")
        final_having = self._final(having) if having is not None else None
        return self._assemble(source, where, groups, final_select, final_having)

    def _row_local(self, expr: dict[str, Any], where: str) -> None:
        for sub in walk(expr):
            cls = sub.get("class")
            if cls is None:
                continue
            if cls not in _ROW_LOCAL_CLASSES:
                raise _NotIncremental(f"{where} uses {cls.lower()}")
            if cls == "FUNCTION":
                name = sub.get("function_name", "").lower()
                if name in _VOLATILE:
                    raise _NotIncremental(f"{where} calls {name}(), which is not repeatable")
                if self._is_aggregate(name):
                    raise _NotIncremental(f"{where} contains an aggregate")
            if cls == "COLUMN_REF" and sub.get("column_names", [""])[-1].lower() == "rowid":
                raise _NotIncremental(f"{where} reads rowid")
            if cls == "COLUMN_REF" and [n.lower() for n in sub.get("column_names", [])] in (
                ["current_timestamp"],
                ["current_date"],
                ["current_time"],
                ["localtimestamp"],
                ["localtime"],
            ):  # keywords, parsed as columns: volatile like now()
                raise _NotIncremental(f"{where} reads {sub['column_names'][0]}, not repeatable")

    def _is_aggregate(self, name: str) -> bool:
        row = self._cursor.execute(
            "SELECT count(*) FROM duckdb_functions() "
            "WHERE function_type = 'aggregate' AND function_name = ?",
            [name],
        ).fetchone()
        return bool(row and row[0])

    # -- rewriting -------------------------------------------------------------------

    def _final(self, expr: dict[str, Any]) -> dict[str, Any]:
        """``expr`` rewritten over the state: keys and aggregates become state columns."""
        canonical = _canonical(expr)
        if canonical in self._keys:
            return self._column(f"__k{self._keys[canonical]}")
        cls = expr.get("class")
        if cls == "FUNCTION" and self._is_aggregate(expr.get("function_name", "").lower()):
            return self._parse_expr(self._aggregate(expr, canonical))
        if cls in ("WINDOW", "SUBQUERY"):
            raise _NotIncremental(f"it uses a {cls.lower()} expression")
        if cls == "COLUMN_REF":
            raise _NotIncremental("it selects a column that is not grouped")
        if cls is None or cls not in _ROW_LOCAL_CLASSES:
            raise _NotIncremental(f"it uses {str(cls).lower()} in its output")
        if cls == "FUNCTION" and expr.get("function_name", "").lower() in _VOLATILE:
            raise _NotIncremental(f"it calls {expr['function_name']}()")
        rewritten = copy.copy(expr)
        for key, value in expr.items():
            if isinstance(value, dict) and "class" in value:
                rewritten[key] = self._final(value)
            elif (
                isinstance(value, list)
                and value
                and all(isinstance(v, dict) and "class" in v for v in value)
            ):
                rewritten[key] = [self._final(v) for v in value]
            elif key == "case_checks":
                rewritten[key] = [{k: self._final(v) for k, v in check.items()} for check in value]
        return rewritten

    def _aggregate(self, expr: dict[str, Any], canonical: str) -> str:
        if canonical in self._finals:
            return self._finals[canonical]
        name = expr["function_name"].lower()
        if name not in _SUPPORTED:
            raise _NotIncremental(f"{name}() cannot be merged from partial results")
        if expr.get("distinct") or expr.get("filter") or expr.get("export_state"):
            raise _NotIncremental(f"{name}() uses DISTINCT, FILTER or EXPORT_STATE")
        if (expr.get("order_bys") or {}).get("orders"):
            raise _NotIncremental(f"{name}() has an ORDER BY")
        children = expr.get("children") or []
        if name == "count_star":
            final = self._partial("count(*)", "sum", ("count_all", None))
            self._outputs[canonical] = Output("partial", len(self._partials) - 1)
        else:
            if len(children) != 1:
                raise _NotIncremental(f"{name}() takes {len(children)} arguments")
            child = children[0]
            self._row_local(child, f"the argument of {name}()")
            arg = self._sql(child)
            column = _plain_column(child)
            if name in ("sum", "avg", "mean") and self._wide(arg):
                raise _NotIncremental(
                    f"{name}() of a 128-bit or decimal value: a full run raises on overflow, "
                    "merging partial sums would not"
                )
            if name in ("count", "sum", "min", "max"):
                final = self._partial(
                    f"{name}({arg})", "sum" if name == "count" else name, (name, column)
                )
                self._outputs[canonical] = Output("partial", len(self._partials) - 1)
            else:  # avg / mean: a sum and a count
                total = self._partial(f"sum({arg})", "sum", ("sum", column))
                count = self._partial(f"count({arg})", "sum", ("count", column))
                final = f"({total} / NULLIF({count}, 0))"
                self._outputs[canonical] = Output(
                    "avg", len(self._partials) - 2, len(self._partials) - 1
                )
        self._finals[canonical] = final
        return final

    def _wide(self, arg: str) -> bool:
        """Whether ``arg`` (over the source table) is 128-bit: HUGEINT, UHUGEINT, or a
        DECIMAL wider than 18 digits (their sums overflow where DuckDB checks)."""
        probe = self._cursor.execute(
            f"SELECT ({arg}) FROM {self._source.sql} AS {self._alias} LIMIT 0"
        ).description
        kind = str(probe[0][1]).upper() if probe else ""
        return kind.startswith(("HUGEINT", "UHUGEINT", "VARINT", "BIGNUM")) or _wide_decimal(kind)

    def _partial(self, sql: str, merge: str, spec: tuple[str, str | bool | None]) -> str:
        self._partials.append((sql, merge))
        self._specs.append(spec)
        return f"__p{len(self._partials) - 1}"

    def _arrow_plan(
        self,
        where: dict[str, Any] | None,
        groups: list[dict[str, Any]],
        having: dict[str, Any] | None,
        offset: int,
        limit: int | None,
    ) -> ArrowPlan | None:
        """The pyarrow fast path, when the shape is plain enough (None otherwise)."""
        if where is not None or having is not None or self._schema is None:
            return None
        keys = [_plain_column(g) for g in groups]
        specs = self._specs
        if any(k is False for k in keys) or any(column is False for _, column in specs):
            return None
        if not self._arrow_agrees(specs):
            return None
        outputs = []
        for item in self._node.get("select_list") or []:  # the query's own, not rewritten
            canonical = _canonical(item)
            if canonical in self._keys:
                outputs.append(Output("key", self._keys[canonical]))
            elif canonical in self._outputs:
                outputs.append(self._outputs[canonical])
            else:
                return None  # an expression over aggregates or keys: DuckDB computes it
        order = []
        names = [name.lower() for name in self._columns]
        for modifier in self._node.get("modifiers") or []:
            for item in modifier.get("orders", []) if modifier["type"] == "ORDER_MODIFIER" else []:
                if item.get("null_order") not in ("ORDER_DEFAULT", "NULLS LAST"):
                    return None
                expr = item["expression"]
                if expr.get("class") == "CONSTANT":
                    index = self._constant(expr, "an ORDER BY position") - 1
                elif expr.get("class") == "COLUMN_REF" and len(expr["column_names"]) == 1:
                    name = expr["column_names"][0].lower()
                    if name not in names or names.count(name) > 1:
                        return None
                    index = names.index(name)
                else:
                    return None
                order.append((index, item["type"] == "DESCENDING"))
        return ArrowPlan(
            keys=tuple(str(k) for k in keys),
            partials=tuple(
                (kind, column if isinstance(column, str) else None) for kind, column in specs
            ),
            outputs=tuple(outputs),
            names=self._columns,
            schema=self._schema,
            order=tuple(order),
            offset=offset,
            limit=limit,
        )

    def _arrow_agrees(self, specs: list[tuple[str, str | bool | None]]) -> bool:
        """Whether pyarrow computes what DuckDB does for these columns' types: not for
        sums of 128-bit or decimal columns (DuckDB raises on overflow, pyarrow's
        decimal128 does not). NaN, where they differ too, is checked on each fold
        (``ArrowPlan.has_nan``)."""
        rows = self._cursor.execute(
            "SELECT lower(column_name), data_type FROM duckdb_columns() "
            "WHERE database_name = ? AND schema_name = ? AND table_name = ?",
            list(self._source),
        ).fetchall()
        types = {name: str(kind).upper() for name, kind in rows}

        def kind(column: str | bool | None) -> str:
            return types.get(str(column).lower(), "") if isinstance(column, str) else ""

        wide = ("HUGEINT", "UHUGEINT", "DECIMAL", "VARINT", "BIGNUM")  # pyarrow: none
        return not any(
            aggregate == "sum" and kind(column).startswith(wide) for aggregate, column in specs
        )

    def _assemble(
        self,
        source: dict[str, Any],
        where: dict[str, Any] | None,
        groups: list[dict[str, Any]],
        select: list[dict[str, Any]],
        having: dict[str, Any] | None,
    ) -> Plan:
        table_sql = self._source.sql
        alias = quote(source.get("alias") or source["table_name"])
        # retention deletes (duckflock.retention): a hidden count(*) and count(x) per sum(x)
        for sql, merge, spec in hidden_partials(self._partials, self._specs):
            self._partial(sql, merge, spec)
        keys = [f"{self._sql(g)} AS __k{i}" for i, g in enumerate(groups)]
        partials = [f"{sql} AS __p{i}" for i, (sql, _) in enumerate(self._partials)]
        where_sql = f" WHERE {self._sql(where)}" if where is not None else ""
        group_sql = " GROUP BY " + ", ".join(self._sql(g) for g in groups) if groups else ""

        def partial_over(relation: str) -> str:
            return (
                f"SELECT {', '.join(keys + partials)} FROM {relation} AS {alias}"
                f"{where_sql}{group_sql}"
            )

        key_names = [f"__k{i}" for i in range(len(groups))]
        merged = [f"{merge}(__p{i}) AS __p{i}" for i, (_, merge) in enumerate(self._partials)]
        merge_sql = (
            f"SELECT {', '.join(key_names + merged)} FROM "
            f"(SELECT * FROM {STATE} UNION ALL ({partial_over(_DELTA_ROWS)}))"
            + (f" GROUP BY {', '.join(key_names)}" if key_names else "")
        )
        outputs = [
            f"CAST({self._sql(expr)} AS {kind})"
            for expr, kind in zip(select, self._types, strict=True)
        ]
        extras = [f"{sql} AS __o{i}" for i, sql in enumerate(outputs)]
        if having is not None:
            extras.append(f"({self._sql(having)}) AS __keep")
        order, offset, limit = self._modifiers(outputs)
        if order:
            extras.append(f"row_number() OVER (ORDER BY {order}) AS __rank")

        def with_outputs(state_sql: str) -> str:
            return f"WITH __merged AS ({state_sql}) SELECT *, {', '.join(extras)} FROM __merged"

        return Plan(
            table=self._source,
            pin=f"SELECT 1 FROM {table_sql} LIMIT 0",
            build=with_outputs(partial_over(table_sql)),
            refresh=with_outputs(merge_sql),
            state_columns=tuple(key_names + [f"__p{i}" for i in range(len(self._partials))]),
            outputs=self._columns,
            filtered=having is not None,
            ordered=bool(order),
            offset=offset,
            limit=limit,
            arrow=self._arrow_plan(where, groups, having, offset, limit),
            retract=retraction(
                table_sql=table_sql,
                alias=alias,
                keys=[self._sql(g) for g in groups],
                partials=self._partials,
                where_sql=where_sql,
                deleted_partials=partial_over(_DELTA_ROWS),
                state=STATE,
            ),
        )

    def _modifiers(self, outputs: list[str]) -> tuple[str, int, int | None]:
        """ORDER BY terms over the state (output names and positions resolved to the
        outputs' expressions), and the constant OFFSET and LIMIT."""
        order: list[str] = []
        offset, limit = 0, None
        names = [name.lower() for name in self._columns]
        for modifier in self._node.get("modifiers") or []:
            if modifier["type"] == "ORDER_MODIFIER":
                for item in modifier["orders"]:
                    expr = item["expression"]
                    if expr.get("class") == "CONSTANT":
                        position = self._constant(expr, "an ORDER BY position")
                        if not 1 <= position <= len(outputs):
                            raise _NotIncremental(f"ORDER BY {position} is out of range")
                        term = outputs[position - 1]
                    elif (
                        expr.get("class") == "COLUMN_REF"
                        and len(expr["column_names"]) == 1
                        and expr["column_names"][0].lower() in names
                        and _canonical(expr) not in self._keys
                    ):
                        term = outputs[names.index(expr["column_names"][0].lower())]
                    else:
                        term = self._sql(self._final(expr))
                    direction = {"ASCENDING": " ASC", "DESCENDING": " DESC"}.get(item["type"], "")
                    nulls = {"NULLS FIRST": " NULLS FIRST", "NULLS LAST": " NULLS LAST"}.get(
                        item.get("null_order", ""), ""
                    )
                    order.append(term + direction + nulls)
            elif modifier["type"] == "LIMIT_MODIFIER":
                if modifier.get("limit") is not None:
                    limit = self._constant(modifier["limit"], "LIMIT")
                if modifier.get("offset") is not None:
                    offset = self._constant(modifier["offset"], "OFFSET")
        return ", ".join(order), offset, limit

    @staticmethod
    def _constant(expr: dict[str, Any], what: str) -> int:
        value = (expr.get("value") or {}).get("value") if expr.get("class") == "CONSTANT" else None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _NotIncremental(f"{what} is not a constant whole number")
        return value

    # -- SQL text from syntax trees --------------------------------------------------

    def _column(self, name: str) -> dict[str, Any]:
        return {
            "class": "COLUMN_REF",
            "type": "COLUMN_REF",
            "alias": "",
            "query_location": 0,
            "column_names": [name],
        }

    def _parse_expr(self, sql: str) -> dict[str, Any]:
        tree = parse(self._cursor, f"SELECT {sql}")
        expr: dict[str, Any] = tree["statements"][0]["node"]["select_list"][0]
        return expr

    def _sql(self, expr: dict[str, Any]) -> str:
        expr = dict(expr, alias="")
        template = parse(self._cursor, "SELECT 1")
        template["statements"][0]["node"]["select_list"] = [expr]
        row = self._cursor.execute(
            "SELECT json_deserialize_sql(?::JSON)", [json.dumps(template)]
        ).fetchone()
        if not row or not isinstance(row[0], str) or not row[0].startswith("SELECT "):
            raise BindError("cannot render an expression of the analysis")
        return row[0][len("SELECT ") :]


def _wide_decimal(kind: str) -> bool:
    found = re.match(r"DECIMAL\((\d+)", kind)
    return found is not None and int(found.group(1)) > 18


def _plain_column(expr: dict[str, Any]) -> str | bool:
    """The column an expression names, or False when it is anything more."""
    if expr.get("class") == "COLUMN_REF" and expr.get("column_names"):
        return str(expr["column_names"][-1])
    return False
