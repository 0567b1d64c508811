"""Which analysis SQL can refresh incrementally, and the queries that do it.

DuckDB parses the SQL for us (``json_serialize_sql``): from its syntax tree we read the
tables a query reads, and decide whether it has the shape

    SELECT keys…, aggregates… FROM fact [JOIN dimension …] [WHERE row-local predicate]
    [GROUP BY keys] [HAVING …] [ORDER BY …] [LIMIT …]

Keys are any repeatable expressions of the rows (``date_trunc('second', ts)``,
``time_bucket(…)``, ``upper(sensor)``; by position or output name too): DuckDB's own
catalogue (``duckdb_functions().stability``) says which functions give the same answer
every time. Aggregates are those :mod:`duckflock.live.fold.states` can merge (count, sum, min,
max, avg, bool_and/bool_or, arg_max/arg_min, ordered first/last, count(DISTINCT …),
approx_count_distinct, each with or without FILTER). The fact table is the leftmost
table of the FROM clause; INNER, LEFT, SEMI and ANTI joins to other tables (or views)
are per fact row, so the new fact rows joined with the current dimension rows are
exactly what the join gains; a write to a dimension table rebuilds the state.

Such a query keeps a *state*: one row per group holding partial aggregates (``__k0…``
keys, ``__p0…`` partials). Two queries are generated, each run by DuckDB:

- ``build``: the state from the whole table (the first refresh, and after any write that
  is not an append through ``db.insert``);
- ``refresh``: the state folded together with the partials of newly appended rows.

Both also compute, per state row, the query's own outputs (its select list cast to the
types the full query has), the HAVING flag and the ORDER BY rank;
:func:`duckflock.live.plan.plans.split` filters, sorts and slices (LIMIT/OFFSET) those with pyarrow
into the result.

Everything else — CTEs, subqueries, window functions, other aggregates, volatile
functions, parameters — refreshes by re-running the whole query; the Shape's reason
names the first construct that prevents an incremental refresh.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from duckflock.core.names import Identity
from duckflock.core.syntax import Reads, parse, reads, walk
from duckflock.errors import BindError, QueryError, translate
from duckflock.live.fold.arrow import ArrowPlan, Output, OutputKind
from duckflock.live.fold.averages import divided_in_long_double, long_double_bits
from duckflock.live.fold.query import lost_types, typed
from duckflock.live.fold.retention import KEYS, hidden_partials, retraction
from duckflock.live.fold.states import (
    Aggregate,
    NotIncremental,
    Partial,
    Slots,
    plan_aggregate,
)
from duckflock.live.plan.plans import DELTA, DISTINCT_LIMIT, STATE, Plan
from duckflock.live.plan.sources import sources
from duckflock.live.windows import Window, sliding
from duckflock.sql import quote_ident

# the new rows, scanned so that no filter is pushed into the Arrow scan: pyarrow compares
# NaN as unordered, DuckDB as greater than every number (WHERE v > 0 must keep NaN rows)
_DELTA_ROWS = f"(SELECT * FROM {DELTA} LIMIT 9223372036854775807)"
_NEW = "__duckflock_new"  # stands for the new rows while the FROM clause is rendered
# partial kinds whose merge takes any number of a group's state rows (a window merges
# its buckets by the query's keys); pick/key/sketch merge one old row with one new
_MANY_ROWS = {"count_all", "count", "sum", "min", "max", "bool_and", "bool_or", "set", "seen"}
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


# column types whose equality and order pyarrow shares with DuckDB (floats: checked for
# NaN and -0.0 on every fold, see ArrowPlan.has_nan)
_ARROW_COMPARES = {
    "BOOLEAN",
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "FLOAT",
    "DOUBLE",
    "VARCHAR",
    "DATE",
    "TIME",
    "TIMESTAMP",
    "TIMESTAMP_S",
    "TIMESTAMP_MS",
    "TIMESTAMP_NS",
    "TIMESTAMP WITH TIME ZONE",
}

# CONSISTENT in duckdb_functions() yet not the same answer every time: the local clock
# (WHERE ts > current_localtimestamp() - INTERVAL 1 HOUR folded rows in and never let
# them go), and session state that SET changes
_MISLABELLED = ("current_localtimestamp", "current_localtime", "getvariable", "current_setting")


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

    def full(self, reason: str) -> Shape:
        """This shape, refreshing by full runs from now on, for ``reason``."""
        return Shape(self.reads, self.columns, None, reason, self.types)


def inspect(
    cursor: duckdb.DuckDBPyConnection,
    sql: str,
    *,
    params: Any = None,
    distinct_limit: int = DISTINCT_LIMIT,
) -> Shape:
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
        plan = planner.plan(distinct_limit)
    except NotIncremental as why:
        node = tree["statements"][0]["node"]
        windowed = _sliding(cursor, node, columns, types, schema, distinct_limit)
        if windowed is None:
            return Shape(read, columns, None, f"full: {why}", types)
        plan, window = windowed
        reason = f"incremental: sliding window over {window.column}"
        return Shape(read, columns, plan, reason, types, window=window)
    return Shape(read, columns, plan, f"incremental: {planner.describe()}", types)


def _sliding(
    cursor: duckdb.DuckDBPyConnection,
    node: dict[str, Any],
    columns: tuple[str, ...],
    types: tuple[str, ...],
    schema: pa.Schema | None,
    distinct_limit: int,
) -> tuple[Plan, Window] | None:
    """A sliding window over now() (duckflock.live.windows), planned with this planner."""

    def plan_node(select: dict[str, Any]) -> Plan:
        planner = _Planner(cursor, select, columns, types, schema)
        plan = planner.plan(distinct_limit)
        kinds = {partial.spec[0] for partial in planner._slots.partials}
        if not kinds <= _MANY_ROWS:  # the window's buckets of a group merge at once
            raise NotIncremental("a window over an aggregate kept as a winner or sketch")
        return plan

    planner = _Planner(cursor, node, columns, types)
    volatile = {name for name, (repeatable, _) in planner._functions.items() if not repeatable}
    try:
        return sliding(cursor, node, columns, types, plan_node, planner._sql, volatile)
    except (NotIncremental, duckdb.Error, QueryError):
        return None


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
        self._slots = Slots()
        self._finals: dict[str, str] = {}  # canonical aggregate -> final SQL over state
        self._kinds: list[str] = []  # the aggregates used, for the reason
        # for the pyarrow fast path: each aggregate's output in terms of partials
        self._outputs: dict[str, Output] = {}
        self._schema = schema
        self._joined: set[Identity] = set()
        # every function name DuckDB knows: (all overloads repeatable, any is aggregate)
        self._functions: dict[str, tuple[bool, bool]] = {
            str(name): (bool(repeatable), bool(aggregate))
            for name, repeatable, aggregate in cursor.execute(
                "SELECT lower(function_name), "
                "bool_and(coalesce(stability = 'CONSISTENT', false)), "
                "bool_or(function_type = 'aggregate') FROM duckdb_functions() GROUP BY 1"
            ).fetchall()
        }
        for name in _MISLABELLED:  # the catalogue calls them CONSISTENT; they are not
            self._functions[name] = (False, self._functions.get(name, (False, False))[1])

    def describe(self) -> str:
        """The incremental reason: what kind of shape it is."""
        what = "append-only aggregate"
        if self._joined:
            names = ", ".join(sorted(t.display() for t in self._joined))
            what += f" of {self._source.display()} joined with {names} (a write to those rebuilds)"
        plain = {"count(*)", "count()", "sum()", "min()", "max()", "avg()", "mean()"}
        kinds = sorted(set(self._kinds) - plain)
        if kinds:
            what += f" with {', '.join(kinds)}"
        return what

    # -- checks --------------------------------------------------------------------

    def plan(self, distinct_limit: int = DISTINCT_LIMIT) -> Plan:
        node = self._node
        if node.get("type") != "SELECT_NODE":
            raise NotIncremental("not a plain SELECT (set operation or VALUES)")
        if node.get("cte_map", {}).get("map"):
            raise NotIncremental("the query uses a WITH clause")
        found = sources(self._cursor, node.get("from_table") or {}, _NEW, self._render)
        # the new rows as the fact table's own types (ENUM, collations…), so that keys,
        # filters and orderings over them follow DuckDB's equality and order. Put in
        # after the FROM clause is rendered: DuckDB does not serialise a cast to ENUM
        whole = f"SELECT * FROM {found.fact.sql}"
        lost = lost_types(self._cursor, whole)
        names = [str(name) for name in self._cursor.sql(f"{whole} LIMIT 0").columns]
        new = typed(_DELTA_ROWS, names, lost, like=whole)
        found = dataclasses.replace(found, new=re.sub(rf'"?{_NEW}"?', lambda _: new, found.new))
        self._source, self._joined = found.fact, set(found.joined)
        fact = found.fact_node
        if fact.get("sample") or fact.get("at_clause") or node.get("sample"):
            raise NotIncremental("it samples or time-travels")
        if node.get("qualify") is not None:
            raise NotIncremental("it uses QUALIFY")
        if node.get("aggregate_handling") != "STANDARD_HANDLING":
            raise NotIncremental("it uses GROUP BY ALL or another special grouping")
        groups = node.get("group_expressions") or []
        sets = node.get("group_sets") or []
        if groups and sets != [list(range(len(groups)))]:
            raise NotIncremental("it uses GROUPING SETS, ROLLUP or CUBE")
        for modifier in node.get("modifiers") or []:
            if modifier["type"] not in ("ORDER_MODIFIER", "LIMIT_MODIFIER"):
                raise NotIncremental(f"it uses {modifier['type'].split('_')[0]}")
        self._from_build, self._from_delta = found.whole, found.new
        self._names = found.columns
        for condition in found.conditions:
            self._row_local(condition, "a join condition")
        where = node.get("where_clause")
        if where is not None:
            self._row_local(where, "the WHERE clause")
        select = node.get("select_list") or []
        groups = [self._group(group, select) for group in groups]
        for i, group in enumerate(groups):
            self._row_local(group, "a GROUP BY expression")
            self._keys.setdefault(_canonical(group), i)
        if any(item.get("class") == "STAR" for item in select):
            raise NotIncremental("it selects *")
        final_select = [self._final(item) for item in select]
        if not self._slots.partials:
            raise NotIncremental("it has no aggregate")
        having = node.get("having")
        final_having = self._final(having) if having is not None else None
        plan = self._assemble(where, groups, final_select, final_having)
        self._probe(plan)
        return dataclasses.replace(
            plan,
            sets=tuple(self._slots.sets),
            distinct_limit=distinct_limit,
            joined=frozenset(self._joined),
        )

    def _group(self, group: dict[str, Any], select: list[dict[str, Any]]) -> dict[str, Any]:
        """A GROUP BY term with positions (``GROUP BY 1``) and output names resolved to
        the select list's expressions, as DuckDB resolves them."""
        if group.get("class") == "CONSTANT":
            position = self._constant(group, "a GROUP BY position")
            if not 1 <= position <= len(select):
                raise NotIncremental(f"GROUP BY {position} is out of range")
            return dict(select[position - 1], alias="")
        if group.get("class") == "COLUMN_REF" and len(group.get("column_names", [])) == 1:
            name = group["column_names"][0].lower()
            if name not in self._names:
                for item in select:
                    if str(item.get("alias", "")).lower() == name:
                        return dict(item, alias="")
        return group

    def _row_local(self, expr: dict[str, Any], where: str) -> None:
        for sub in walk(expr):
            cls = sub.get("class")
            if cls is None:
                continue
            if cls not in _ROW_LOCAL_CLASSES:
                raise NotIncremental(f"{where} uses {cls.lower()}")
            if cls == "FUNCTION":
                name = sub.get("function_name", "").lower()
                repeatable, aggregate = self._functions.get(name, (True, False))
                if not repeatable:
                    raise NotIncremental(f"{where} calls {name}(), which is not repeatable")
                if aggregate:
                    raise NotIncremental(f"{where} contains an aggregate")
            if cls == "COLUMN_REF":
                parts = [str(part).lower() for part in sub.get("column_names", [""])]
                if parts[-1] == "rowid":
                    raise NotIncremental(f"{where} reads rowid")
                if not any(part in self._names for part in parts):
                    # current_timestamp, current_date… parse as column names
                    raise NotIncremental(
                        f"{where} reads {'.'.join(parts)}, which is not a column "
                        "(a special value such as current_timestamp is not repeatable)"
                    )

    def _is_aggregate(self, name: str) -> bool:
        return self._functions.get(name, (True, False))[1]

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
            raise NotIncremental(f"it uses a {cls.lower()} expression")
        if cls == "COLUMN_REF":
            same = self._same_column(expr)
            if same is not None:
                return self._column(f"__k{same}")
            raise NotIncremental(
                f"it selects {'.'.join(expr.get('column_names', []))}, which is not grouped"
            )
        if cls is None or cls not in _ROW_LOCAL_CLASSES:
            raise NotIncremental(f"it uses {str(cls).lower()} in its output")
        if cls == "FUNCTION":
            name = expr.get("function_name", "").lower()
            if not self._functions.get(name, (True, False))[0]:
                raise NotIncremental(f"it calls {name}(), which is not repeatable")
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

    def _same_column(self, expr: dict[str, Any]) -> int | None:
        """The key that names the same column as ``expr`` one qualified, one not
        (``site`` and ``sensors.site``): DuckDB binds both to one column or refuses."""
        parts = [str(p).lower() for p in expr.get("column_names", [])]
        found = []
        for canonical, index in self._keys.items():
            key = json.loads(canonical)
            if key.get("class") != "COLUMN_REF":
                continue
            other = [str(p).lower() for p in key.get("column_names", [])]
            if other[-1] == parts[-1] and (len(other) == 1 or len(parts) == 1):
                found.append(index)
        return found[0] if len(found) == 1 else None

    def _aggregate(self, expr: dict[str, Any], canonical: str) -> str:
        if canonical in self._finals:
            return self._finals[canonical]
        name = expr["function_name"].lower()
        shown = "count(*)" if name == "count_star" else f"{name}()"
        if expr.get("export_state"):
            raise NotIncremental(f"{name}() uses EXPORT_STATE")
        children = expr.get("children") or []
        for child in children:
            self._row_local(child, f"the argument of {shown}")
        args = [self._sql(child) for child in children]
        condition = expr.get("filter")
        if condition is not None:
            self._row_local(condition, f"the FILTER of {shown}")
        orders = (expr.get("order_bys") or {}).get("orders") or []
        order = None
        if len(orders) > 1:
            raise NotIncremental(f"{shown} orders by more than one expression")
        if orders:
            self._row_local(orders[0]["expression"], f"the ORDER BY of {shown}")
            order = (
                self._sql(orders[0]["expression"]),
                {"ASCENDING": "ASC", "DESCENDING": "DESC"}.get(orders[0]["type"], ""),
                {"NULLS FIRST": "NULLS FIRST", "NULLS LAST": "NULLS LAST"}.get(
                    orders[0].get("null_order", ""), ""
                ),
            )
        if name in ("sum", "avg", "mean") and args and self._wide(args[0]):
            raise NotIncremental(
                f"{name}() of a 128-bit or decimal value: a full run raises on overflow, "
                "merging partial sums would not"
            )
        aggregate = Aggregate(
            name=name,
            args=args,
            plain=[_plain_column(child) for child in children],
            filter=self._sql(condition) if condition is not None else None,
            order=order,
            distinct=bool(expr.get("distinct")),
            arg_type=lambda: self._type(args[0]),
        )
        final, partial = plan_aggregate(aggregate, self._slots)
        self._kinds.append(
            ("count(*)" if name == "count_star" else f"{name}()")
            + (" DISTINCT" if aggregate.distinct else "")
            + (" FILTER" if condition is not None else "")
        )
        if partial is not None:
            self._outputs[canonical] = Output(OutputKind.PARTIAL, partial)
        elif name in ("avg", "mean") and condition is None:
            last = len(self._slots.partials) - 1
            if "finalize(" not in final:  # a floating sum: pyarrow divides as DuckDB does
                self._outputs[canonical] = Output(OutputKind.AVG, last - 1, last)
            elif divided_in_long_double(self._type(args[0])):
                # an integer's: divided as DuckDB's avg divides, once DuckDB said how
                bits = long_double_bits(self._cursor)
                if bits is not None:
                    self._outputs[canonical] = Output(OutputKind.EXACT_AVG, last - 1, last, bits)
        self._finals[canonical] = final
        return final

    def _type(self, arg: str) -> str:
        """The DuckDB type of ``arg`` over the FROM clause."""
        probe = self._cursor.execute(f"SELECT ({arg}) FROM {self._from_build} LIMIT 0").description
        return str(probe[0][1]).upper() if probe else ""

    def _wide(self, arg: str) -> bool:
        """Whether ``arg`` (over the source table) is 128-bit: HUGEINT, UHUGEINT, or a
        DECIMAL wider than 18 digits (their sums overflow where DuckDB checks)."""
        kind = self._type(arg)
        return kind.startswith(("HUGEINT", "UHUGEINT", "VARINT", "BIGNUM")) or _wide_decimal(kind)

    def _arrow_plan(
        self,
        where: dict[str, Any] | None,
        groups: list[dict[str, Any]],
        having: dict[str, Any] | None,
        offset: int,
        limit: int | None,
    ) -> ArrowPlan | None:
        """The pyarrow fast path, when the shape is plain enough (None otherwise)."""
        if where is not None or having is not None or self._schema is None or self._joined:
            return None
        keys = [_plain_column(g) for g in groups]
        specs = [partial.spec for partial in self._slots.partials]
        if any(k is False for k in keys) or any(column is False for _, column in specs):
            return None
        if not self._arrow_agrees(specs, keys):
            return None
        outputs = []
        for item in self._node.get("select_list") or []:  # the query's own, not rewritten
            canonical = _canonical(item)
            if canonical in self._keys:
                outputs.append(Output(OutputKind.KEY, self._keys[canonical]))
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

    def _arrow_agrees(
        self, specs: list[tuple[str, str | bool | None]], keys: list[str | bool]
    ) -> bool:
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

        # exact sums: integers and DECIMAL(<=18) in decimal256, checked back (arrow.py);
        # 128-bit sums never fold incrementally (a full run raises on overflow)
        wide = ("HUGEINT", "UHUGEINT", "VARINT", "BIGNUM")
        if any(
            aggregate == "sum" and (kind(column).startswith(wide) or _wide_decimal(kind(column)))
            for aggregate, column in specs
        ):
            return False
        # keys and min/max: only types whose equality and order pyarrow shares with
        # DuckDB (not ENUM, nested, DECIMAL, INTERVAL, UUID…; not collated strings)
        compared = [k for k in keys] + [c for a, c in specs if a in ("min", "max")]
        for column in compared:
            if kind(column) not in _ARROW_COMPARES:
                return False
            if kind(column) == "VARCHAR" and self._collated(
                quote_ident(str(column)), self._source.sql
            ):
                return False
        return True

    def _collated(self, expr: str, relation: str) -> bool:
        """Whether DuckDB compares ``expr`` (a VARCHAR over ``relation``) other than
        byte by byte: a collation of its own, or the default_collation. DuckDB decides,
        over strings that every collation it has would merge (case, accents, composed
        forms); anything it will not compare with strings counts as collated."""
        probe = ["a", "A", "\u00e9", "e", "e\u0301"]
        try:
            row = self._cursor.execute(
                f"SELECT count(*) FROM (SELECT __x FROM (SELECT * FROM (SELECT ({expr}) "
                f"AS __x FROM {relation} LIMIT 0) UNION ALL SELECT unnest(?::VARCHAR[])) "
                "GROUP BY __x)",
                [probe],
            ).fetchone()
        except duckdb.Error:
            return True
        return row is None or row[0] != len(probe)

    def _assemble(
        self,
        where: dict[str, Any] | None,
        groups: list[dict[str, Any]],
        select: list[dict[str, Any]],
        having: dict[str, Any] | None,
    ) -> Plan:
        # retention deletes (duckflock.live.fold.retention): a hidden count(*) and a count(x)
        # beside each sum(x), when every partial can take deletes
        hidden = hidden_partials(self._slots.partials) if not self._joined else None
        for sql, merge, spec in hidden or []:
            self._slots.add(sql, _merged_by(merge), spec)
        partials = self._slots.partials
        keys_sql = [self._sql(g) for g in groups]
        keys = [f"{sql} AS __k{i}" for i, sql in enumerate(keys_sql)]
        columns = [f"{partial.sql} AS __p{i}" for i, partial in enumerate(partials)]
        where_sql = f" WHERE {self._sql(where)}" if where is not None else ""
        group_sql = " GROUP BY " + ", ".join(self._sql(g) for g in groups) if groups else ""

        def partial_over(relation: str) -> str:
            return f"SELECT {', '.join(keys + columns)} FROM {relation}{where_sql}{group_sql}"

        key_names = [f"__k{i}" for i in range(len(groups))]
        state_names = key_names + [f"__p{i}" for i in range(len(partials))]
        try:
            with self._empty_delta():
                # the state comes back from Arrow: its columns cast back to their own types
                state_types = self._cursor.sql(partial_over(self._from_delta)).types
                state_lost = lost_types(self._cursor, partial_over(self._from_delta))
        except duckdb.Error as exc:
            raise _not_running(exc) from exc
        state = typed(STATE, state_names, state_lost)
        floating = frozenset(
            i
            for i, kind in enumerate(state_types[len(key_names) :])
            if str(kind) in ("FLOAT", "DOUBLE")
        )
        merged = [
            (
                _tie_kept(i, partial.spec[0])
                if partial.spec[0] in ("min", "max") and _several_forms(str(kind))
                else partial.merge
            )
            + f" AS __p{i}"
            for (i, partial), kind in zip(
                enumerate(partials), state_types[len(key_names) :], strict=True
            )
        ]
        # a key whose equal values differ (-0.0 and 0.0, 'a' and 'A' under NOCASE): the
        # group keeps the value seen first, the state's, as a scan in order does (and a
        # delete recomputes the groups it touches: the next row's form shows)
        forms = frozenset(
            i
            for i, (kind, key) in enumerate(zip(state_types, keys_sql, strict=False))
            if _several_forms(str(kind))
            and (str(kind) != "VARCHAR" or self._collated(key, self._from_build))
        )
        shown = [
            f"arg_min({name}, __d) AS {name}" if i in forms else name
            for i, name in enumerate(key_names)
        ]
        # __d tells the kept state's row of a group (0) from the new rows' (1): merges
        # that keep a winner let the older rows win a tie, as a scan in order does
        merge_sql = (
            f"SELECT {', '.join(shown + merged)} FROM "
            f"(SELECT *, 0 AS __d FROM {state} UNION ALL "
            f"SELECT *, 1 AS __d FROM ({partial_over(self._from_delta)}))"
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

        self._delta_build = with_outputs(partial_over(self._from_delta))
        return Plan(
            table=self._source,
            pin=f"SELECT 1 FROM {self._source.sql} LIMIT 0",
            build=with_outputs(partial_over(self._from_build)),
            refresh=with_outputs(merge_sql),
            finish=with_outputs(f"SELECT {', '.join(state_names)} FROM {state}"),
            state_columns=tuple(key_names + [f"__p{i}" for i in range(len(partials))]),
            outputs=self._columns,
            filtered=having is not None,
            ordered=bool(order),
            offset=offset,
            limit=limit,
            arrow=self._arrow_plan(where, groups, having, offset, limit),
            retract=None
            if hidden is None
            else retraction(
                source_sql=self._from_build,
                keys=[self._sql(g) for g in groups],
                partials=partials,
                where_sql=where_sql,
                deleted_partials=partial_over(self._from_delta),
                state=state,
                keys_relation=typed(KEYS, key_names, state_lost),
                deltas=typed(DELTA, state_names, state_lost),
                floating=floating,
                forms=bool(forms),
                plain=self._plain_columns(where, groups, partials),
            ),
        )

    @staticmethod
    def _plain_columns(
        where: dict[str, Any] | None, groups: list[dict[str, Any]], partials: list[Partial]
    ) -> tuple[tuple[str, ...], tuple[str | None, ...]] | None:
        """The source columns of the keys and of the partials (None: count(*)), when
        each is a plain column and there is no WHERE: retention's pyarrow path."""
        keys = [_plain_column(g) for g in groups]
        sources = [partial.spec[1] for partial in partials]
        if where is not None or any(not isinstance(k, str) for k in keys):
            return None
        if any(s is not None and not isinstance(s, str) for s in sources):
            return None
        return tuple(str(k) for k in keys), tuple(
            s if isinstance(s, str) else None for s in sources
        )

    def _probe(self, plan: Plan) -> None:
        """Run the refresh once over no rows: SQL that binds over the table but not over
        the new rows (a column named ``schema.table.column``) or a merge DuckDB refuses
        would otherwise fail every refresh; here it makes the analysis run in full."""
        cursor = self._cursor
        try:
            with self._empty_delta():
                try:
                    state = cursor.execute(self._delta_build).to_arrow_table()
                    cursor.register(STATE, state.select(list(plan.state_columns)))
                    cursor.execute(plan.refresh).fetchall()
                finally:
                    with contextlib.suppress(duckdb.Error):
                        cursor.unregister(STATE)
        except duckdb.Error as exc:
            raise _not_running(exc) from exc

    @contextlib.contextmanager
    def _empty_delta(self) -> Iterator[None]:
        """The new rows registered as none of the fact table's (to bind and probe)."""
        cursor = self._cursor
        empty = cursor.execute(f"SELECT * FROM {self._source.sql} LIMIT 0").to_arrow_table()
        cursor.register(DELTA, empty)
        try:
            yield
        finally:
            with contextlib.suppress(duckdb.Error):
                cursor.unregister(DELTA)

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
                            raise NotIncremental(f"ORDER BY {position} is out of range")
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
            raise NotIncremental(f"{what} is not a constant whole number")
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
        template = parse(self._cursor, "SELECT 1")
        template["statements"][0]["node"]["select_list"] = [dict(expr, alias="")]
        return self._render(template, "SELECT ")

    def _render(self, tree: dict[str, Any], prefix: str) -> str:
        """SQL text of a syntax tree, less ``prefix`` (which it must start with)."""
        row = self._cursor.execute(
            "SELECT json_deserialize_sql(?::JSON)", [json.dumps(tree)]
        ).fetchone()
        if not row or not isinstance(row[0], str) or not row[0].startswith(prefix):
            raise BindError("cannot render an expression of the analysis")
        return row[0][len(prefix) :]


def _several_forms(kind: str) -> bool:
    """Whether equal values of DuckDB type ``kind`` can differ in form: floating
    (-0.0 = 0.0), strings (collations) and intervals ('1 day' = '24 hours'), alone or
    nested."""
    return any(word in kind for word in ("FLOAT", "DOUBLE", "VARCHAR", "INTERVAL"))


def _tie_kept(index: int, kind: str) -> str:
    """The merge of a min/max partial whose equal values differ in form (-0.0 and 0.0,
    'a' and 'A' under NOCASE): on a tie the kept state's value stays, as the first one
    a scan in order sees does (a plain min over the union picks either)."""
    name = f"__p{index}"
    old, new = (f"{kind}({name}) FILTER (WHERE __d = {d})" for d in (0, 1))
    beats = "<" if kind == "min" else ">"
    return f"CASE WHEN {new} {beats} {old} THEN {new} ELSE coalesce({old}, {new}) END"


def _not_running(exc: duckdb.Error) -> NotIncremental:
    message = str(exc).splitlines()[0]
    return NotIncremental(f"its refresh over new rows does not run ({message})")


def _merged_by(aggregate: str) -> Callable[[str], str]:
    return lambda partial: f"{aggregate}({partial})"


def _wide_decimal(kind: str) -> bool:
    found = re.match(r"DECIMAL\((\d+)", kind)
    return found is not None and int(found.group(1)) > 18


def _plain_column(expr: dict[str, Any]) -> str | bool:
    """The column an expression names, or False when it is anything more."""
    if expr.get("class") == "COLUMN_REF" and expr.get("column_names"):
        return str(expr["column_names"][-1])
    return False
