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

The planner is :mod:`duckflock.live.plan.planner` (the walk of the syntax tree), with
:mod:`~duckflock.live.plan.functions` (DuckDB's function catalogue),
:mod:`~duckflock.live.plan.aggregates` (aggregates into partials),
:mod:`~duckflock.live.plan.queries` (the generated queries),
:mod:`~duckflock.live.plan.arrowpath` (the pyarrow fast path) and
:mod:`~duckflock.live.plan.trees` (SQL text from syntax trees).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from duckflock.core.names import Identity
from duckflock.core.syntax import Reads, parse, reads
from duckflock.errors import QueryError, translate
from duckflock.live.fold.states import NotIncremental, PartialKind
from duckflock.live.plan.functions import Catalogue, Functions
from duckflock.live.plan.planner import Planner
from duckflock.live.plan.plans import DISTINCT_LIMIT, Plan
from duckflock.live.windows import Window, sliding

# partial kinds whose merge takes any number of a group's state rows (a window merges
# its buckets by the query's keys); pick/key/sketch merge one old row with one new
_MANY_ROWS = {
    PartialKind.COUNT_ALL,
    PartialKind.COUNT,
    PartialKind.SUM,
    PartialKind.MIN,
    PartialKind.MAX,
    PartialKind.BOOL_AND,
    PartialKind.BOOL_OR,
    PartialKind.SET,
    PartialKind.SEEN,
}


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
    catalogue: Catalogue | None = None,
) -> Shape:
    """Parse and bind ``sql``; raise for bad SQL or unknown tables; plan if possible.
    ``catalogue``: the database's function catalogue as kept between definitions."""
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
    # DuckDB's function catalogue, read once (after the bind: it may autoload an extension)
    functions = Functions(cursor) if catalogue is None else catalogue.functions(cursor)
    read = reads(cursor, tree, functions.macros)
    if catalogue is not None and not functions.lists(read.called):
        functions = catalogue.functions(cursor, read.called)  # a name made since: read again
        read = reads(cursor, tree, functions.macros)
    if params is not None:
        return Shape(read, columns, None, "full: the query takes parameters", types)
    node = tree["statements"][0]["node"]
    planner = Planner(cursor, node, columns, types, schema, functions)
    try:
        plan = planner.plan(distinct_limit)
    except NotIncremental as why:
        windowed = _sliding(cursor, node, columns, types, schema, distinct_limit, functions)
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
    functions: Functions,
) -> tuple[Plan, Window] | None:
    """A sliding window over now() (duckflock.live.windows), planned with this planner."""

    def plan_node(select: dict[str, Any]) -> Plan:
        planner = Planner(cursor, select, columns, types, schema, functions)
        plan = planner.plan(distinct_limit)
        kinds = {partial.spec[0] for partial in planner.slots.partials}
        if not kinds <= _MANY_ROWS:  # the window's buckets of a group merge at once
            raise NotIncremental("a window over an aggregate kept as a winner or sketch")
        return plan

    planner = Planner(cursor, node, columns, types, functions=functions)
    volatile = functions.volatile()
    try:
        return sliding(cursor, node, columns, types, plan_node, planner.sql, volatile)
    except (NotIncremental, duckdb.Error, QueryError):
        return None
