"""Sliding windows over now(): per-bucket states, combined at each run's instant.

``SELECT k, count(*) FROM t WHERE ts > now() - INTERVAL 5 MINUTE GROUP BY k`` cannot fold
appended rows into one state: the rows it counts change as time passes. It can keep one
state per (bucket of ``ts``, key) instead — the query without the window predicate,
grouped also by ``time_bucket(width, ts)`` — which is an ordinary append-only state
(:mod:`duckflock.live.plan.incremental`: appends fold in, retention deletes come out).

Each run takes an instant T (``Result.now``) and computes the result a full run with
``now()`` = T would give:

- buckets that start inside the window (the predicate holds at their first instant)
  are merged whole, by the query's own keys;
- buckets whose every instant is before the window are dropped from the state (expired);
- the one or two buckets the boundary cuts are recomputed from their rows in the table
  (with the window predicate at T), inside the same pinned snapshot as the state, so the
  boundary is exact.

A refresh after appends folds the new rows' partials per bucket in (:func:`folded`;
marks.py carries the buckets' flags and the cut bucket's rows, sliding.py the state as
dense arrays), then reads the cut bucket's rows (:func:`cut`).

The window predicate must be one conjunct of the WHERE clause: a plain TIMESTAMP or
TIMESTAMPTZ column compared (``>``/``>=``, or ``<``/``<=`` the other way round) with an
expression of ``now()`` (``current_timestamp``…) and constants. A clock that goes back
rebuilds the state (expired buckets would be needed again).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from duckflock.core.cursors import first_row
from duckflock.core.names import Identity, RelationKind, Resolver
from duckflock.core.syntax import table_parts
from duckflock.live import bucketmerge
from duckflock.live.fold import coded
from duckflock.live.fold.arrow import ArrowPlan
from duckflock.live.fold.query import over_arrow
from duckflock.live.instants import (
    NOW,
    Op,
    Stamp,
    bucket_micros,
    bucket_sql,
    conjunction,
    conjuncts,
    constant_of_now,
    epoch_literal,
    flags_sql,
    mentions_now,
    moved,
    placeholder,
    steady_sql,
)
from duckflock.live.marks import BUCKET, Marking, marking
from duckflock.live.plan.plans import Plan
from duckflock.sql import quote_ident

# The planner's interface to this module (duckflock.live.plan.incremental implements it):
# plan a SELECT node (raising NotIncremental, duckdb.Error or QueryError for a shape it
# cannot plan), and render an expression node as SQL.
PlanSelect = Callable[[dict[str, Any]], Plan]
Render = Callable[[dict[str, Any]], str]


# DuckDB's comparison node types, and the column types a window may be over
_OPS = {
    "COMPARE_GREATERTHAN": Op.AFTER,
    "COMPARE_GREATERTHANOREQUALTO": Op.FROM,
    "COMPARE_LESSTHAN": Op.BEFORE,
    "COMPARE_LESSTHANOREQUALTO": Op.UNTIL,
}
_SOURCE = "__duckflock_flagged"  # the state (or a fold's output) the flags are judged on
_TYPES = {"TIMESTAMP": Stamp.TIMESTAMP, "TIMESTAMP WITH TIME ZONE": Stamp.TIMESTAMPTZ}
Span = tuple[int, int] | None  # [low, high) µs of the one cut bucket (see split)
BUCKETS = 64  # buckets per window length: the boundary recomputes ~1/64 of the window


@dataclass(frozen=True)
class Window:
    """How a bucketed state becomes the windowed result at an instant."""

    combine: Plan  # the query without its window predicate
    keys: int  # the query's own keys; the bucket is state column __k{keys}
    inside: str  # over SOURCE: __in (bucket whole in the window), __live (not expired)
    boundary: str  # the rows of the buckets the boundary cuts, from the table
    edge: str  # the same rows when no whole bucket lies between the cut ones (cheaper)
    local: str  # edge with a TIMESTAMP compared in local time: one steady cut bucket
    parts: str  # the new rows' partials per bucket, and every bucket's flags (see folded)
    buckets: ArrowPlan | None  # how bucket partials merge in pyarrow (None: in DuckDB)
    column_type: Stamp  # the bucket's type, for literals
    width: int  # microseconds per bucket
    column: str  # the window column, in words
    marking: Marking | None = None  # a refresh without DuckDB's flags or a read (marks.py)


def sliding(
    cursor: duckdb.DuckDBPyConnection,
    node: dict[str, Any],
    columns: tuple[str, ...],
    types: tuple[str, ...],
    plan_node: PlanSelect,
    render: Render,
    volatile: set[str],
) -> tuple[Plan, Window] | None:
    """(the bucketed Plan, its Window) for a sliding-window query, or None.

    ``plan_node`` and ``render`` are the incremental planner's (:data:`PlanSelect`,
    :data:`Render`); ``volatile``: the lower-case names of the functions DuckDB does not
    call repeatable (a bound built from them is not a window).
    """
    if node.get("type") != "SELECT_NODE":
        return None
    parts = conjuncts(node.get("where_clause"))
    windows = [part for part in parts if mentions_now(part)]
    if len(windows) != 1:
        return None
    where = windows[0]
    op = _OPS.get(str(where.get("type")))
    if where.get("class") != "COMPARISON" or op is None:
        return None
    column, bound = where["left"], where["right"]
    if op in (Op.BEFORE, Op.UNTIL):  # B < ts is ts > B
        column, bound, op = bound, column, op.flipped()
    if column.get("class") != "COLUMN_REF" or mentions_now(column):
        return None
    if not constant_of_now(bound, volatile):
        return None
    if mentions_now({k: v for k, v in node.items() if k != "where_clause"}):
        return None  # now() in the output too: not a window
    source = node.get("from_table") or {}
    if source.get("type") != "BASE_TABLE":
        return None
    found = Resolver(cursor).lookup(table_parts(source))
    if found is None or found.kind is not RelationKind.TABLE:
        return None
    table: Identity = found.identity
    alias = quote_ident(source.get("alias") or source["table_name"])
    column_sql = render(column)
    bound_sql = render(placeholder(bound))
    try:
        kind = str(
            cursor.execute(f"SELECT {column_sql} FROM {table.sql} AS {alias} LIMIT 0").description[
                0
            ][1]
        )
        row = first_row(
            cursor.execute(
                f"SELECT epoch_us(now()) - epoch_us(CAST(({bound_sql.replace(NOW, 'now()')}) "
                "AS TIMESTAMPTZ))"
            )
        )
    except duckdb.Error:
        return None
    column_type = _TYPES.get(kind.upper())
    if column_type is None or row is None or not isinstance(row[0], int) or row[0] <= 0:
        return None
    width = max(1000, row[0] // BUCKETS)  # microseconds
    interval = f"INTERVAL '{width} microseconds'"

    rest = copy.deepcopy(node)
    rest["where_clause"] = conjunction([part for part in parts if part is not where])
    bucketed = copy.deepcopy(rest)
    groups = list(bucketed.get("group_expressions") or [])
    bucket = json.loads(json.dumps(_bucket_node(cursor, interval, column_sql)))
    bucketed["group_expressions"] = [*groups, bucket]
    bucketed["group_sets"] = [list(range(len(groups) + 1))]
    combine = plan_node(rest)
    plan = plan_node(bucketed)
    n = len(groups)
    key = f"__k{n}"
    whole, live = flags_sql(key, interval, width, op, bound_sql, column_type)
    local = steady_sql(key, interval, width) if column_type is Stamp.TIMESTAMP else "false"
    # flags per distinct bucket (~65), not per state row (buckets times groups): judging a
    # TIMESTAMP bucket casts it through the session's time zone, which costs per value
    inside = (
        f"WITH {_SOURCE} AS MATERIALIZED (SELECT * FROM __duckflock_state) "
        f"SELECT {_SOURCE}.*, __f.__in, __f.__live, __f.__local FROM {_SOURCE} LEFT JOIN "
        f"(SELECT {key}, {whole} AS __in, {live} AS __live, {local} AS __local FROM "
        f"(SELECT DISTINCT {key} FROM {_SOURCE})) AS __f ON {_SOURCE}.{key} = __f.{key}"
    )  # a NULL bucket matches nothing: its flags are NULL, as the expressions give it
    cut = render(placeholder(where))
    start, _ = flags_sql(
        bucket_sql(interval, column_sql), interval, width, op, bound_sql, column_type
    )
    rows = f"SELECT * FROM {table.sql} AS {alias} WHERE ({cut}) AND "
    # in the column's own type: the span prunes row groups (zone maps)
    span = f"{column_sql} >= __duckflock_low AND {column_sql} < __duckflock_high"
    edge = rows + span
    # within a steady bucket the session's offset is one: ts > B <=> ts > B in local
    # time, a constant DuckDB prunes with (no per-row cast through the time zone)
    local_rows = f"SELECT * FROM {table.sql} AS {alias} WHERE ({column_sql} {op} "
    local_edge = f"{local_rows}CAST(({bound_sql}) AS TIMESTAMP)) AND {span}"
    boundary = f"{rows}NOT coalesce({start}, false) AND {span}"
    window = Window(
        combine=combine,
        parts=_parts(plan, key, whole, live, local),
        buckets=_buckets(plan, combine, column_sql),
        keys=n,
        inside=inside,
        boundary=boundary,
        edge=edge,
        local=local_edge if column_type is Stamp.TIMESTAMP else edge,
        column_type=column_type,
        width=width,
        column=column_sql,
        marking=marking(
            cursor,
            column,
            source,
            (bound_sql, key, interval, width),
            op,
            column_type,
            plan,
            None if moved(bound) is None else render(placeholder(moved(bound))),
        ),
    )
    return plan, window


def _parts(plan: Plan, key: str, whole: str, live: str, local: str) -> str:
    """The new rows' partials per bucket (DELTA's), then the flags of each bucket they
    or the state's (KEYS) are in, marked __flags."""
    columns = ", ".join(plan.state_columns)
    return (
        f"WITH __duckflock_parts AS MATERIALIZED ({plan.partials}), __duckflock_buckets AS "
        f"(SELECT DISTINCT {key} FROM (SELECT {key} FROM __duckflock_parts "
        f"UNION ALL SELECT {key} FROM __duckflock_keys)) "
        f"SELECT {columns} FROM __duckflock_parts UNION ALL BY NAME "
        f"SELECT {key}, {whole} AS __in, {live} AS __live, {local} AS __local, "
        "true AS __flags "
        "FROM __duckflock_buckets"
    )


def _buckets(plan: Plan, combine: Plan, column_sql: str) -> ArrowPlan | None:
    """The combined query's pyarrow merges with the bucket as one key more (no outputs:
    the bucketed state is only merged), where the combined query has them."""
    arrow = combine.arrow
    if (
        arrow is None
        or arrow.sets  # distinct lists merge by position only (positions.py)
        or not plan.partials
        or len(plan.state_columns) != len(combine.state_columns) + 1
    ):
        return None
    return replace(
        arrow,
        keys=(*arrow.keys, BUCKET),  # the new rows' bucket, as marks.partials adds it
        outputs=(),
        names=(),
        schema=pa.schema([]),
        order=(),
        offset=0,
        limit=None,
    )


def _bucket_node(cursor: duckdb.DuckDBPyConnection, interval: str, column_sql: str) -> Any:
    raw = first_row(
        cursor.execute(
            "SELECT json_serialize_sql(?)", [f"SELECT {bucket_sql(interval, column_sql)}"]
        )
    )
    assert raw is not None
    return json.loads(raw[0])["statements"][0]["node"]["select_list"][0]


def literal(instant: datetime) -> str:
    """``instant`` (aware) as a TIMESTAMPTZ literal, exact to the microsecond."""
    return f"CAST('{instant.astimezone(UTC).isoformat()}' AS TIMESTAMPTZ)"


def at(sql: str, instant: datetime) -> str:
    return sql.replace(NOW, literal(instant))


@dataclass(frozen=True)
class Split:
    """A flagged state split at an instant (:func:`split`)."""

    kept: pa.Table  # the state without expired buckets
    inside: pa.Table  # the buckets whole inside the window, without their bucket column
    read: str  # the read of the cut buckets' rows, at the instant
    span: Span  # one cut bucket read by ``local`` (or none: (0, 0))


def split(window: Window, flagged: pa.Table, instant: datetime) -> Split:
    """Split the state with its flags (:func:`flagging`, :func:`folded`) at ``instant``:
    the window's result is ``window.combine`` folding the cut buckets' rows (``read``)
    into the buckets inside it."""

    def true(name: str) -> np.ndarray:  # (a NULL flag is false)
        column = flagged[name]
        return np.asarray(
            (column.fill_null(False) if column.null_count else column).to_numpy(), bool
        )

    # the flags and the buckets in numpy: one pass each, no filter of the whole table
    # but for the two tables kept
    live, whole, local = true("__live"), true("__in"), true("__local")
    state = flagged.drop_columns(["__in", "__live", "__local"])
    kept = state if live.all() else coded.rows(state, live)
    bucket = f"__k{window.keys}"
    inside = coded.rows(state.drop_columns([bucket]), whole)
    # epoch microseconds, not datetimes: a bucket past the year 9999 has none
    values = coded.instants(state[bucket])  # (no NULL: all valid)
    valid = np.ones(state.num_rows, bool)
    if values is None:
        micros = bucket_micros(state[bucket])
        valid = np.asarray(micros.is_valid().to_numpy(), bool)
        values = micros.fill_null(0).to_numpy()
    sql, cut, span = cutting(window, values[valid], live[valid], whole[valid], local[valid])
    low_sql = high_sql = "NULL"  # no bucket is cut: no rows
    if cut is not None:
        low_sql, high_sql = (epoch_literal(us, window.column_type) for us in cut)
    read = at(sql, instant).replace("__duckflock_low", low_sql)
    return Split(kept, inside, read.replace("__duckflock_high", high_sql), span)


def cutting(window: Window, values: np.ndarray, *flags: np.ndarray) -> tuple[str, Span, Span]:
    """The read of the cut buckets' rows (NOW, the span's bounds in it), the span [low,
    high) µs (None: no bucket is cut) and the one steady bucket it reads by ``local``
    (None: another read; (0, 0): none), from the state's buckets (``values``, epoch µs;
    per row or per bucket alike) and their flags (live, whole, local)."""
    live, whole, local = flags
    edge = live & ~whole
    cut = values[edge]
    if not len(cut):
        return window.boundary, None, (0, 0)
    sql, span = window.boundary, None
    low, high = int(cut.min()), int(cut.max()) + window.width
    wholes = values[whole]
    if not np.any((wholes >= low) & (wholes < high)):
        # no whole bucket between the cut ones: every row in the span that the
        # predicate keeps is a cut bucket's (an expired bucket's rows fail it)
        sql = window.edge
        if low + window.width == high and (
            window.column_type is Stamp.TIMESTAMPTZ or local[edge].all()
        ):
            sql, span = window.local, (low, high)  # one steady bucket (the usual case)
    return sql, (low, high), span


def cut(
    cursor: duckdb.DuckDBPyConnection,
    window: Window,
    state: pa.Table,
    instant: datetime,
    over: Callable[[str, pa.Table, pa.Table | None], pa.Table],
    flagged: pa.Table | None = None,
) -> tuple[Split, pa.Table]:
    """The state split at ``instant`` (:func:`split`) and the cut buckets' rows, read
    from the table. ``over(sql, state, delta)`` runs SQL over Arrow tables named STATE
    and DELTA. Runs inside the transaction the state's snapshot is pinned in.
    ``flagged``: the state with its flags already (see :func:`flagging`)."""
    if flagged is None:
        flagged = over(at(window.inside, instant), state, None)
    parts = split(window, flagged, instant)
    return parts, cursor.execute(parts.read).to_arrow_table()


def folded(
    cursor: duckdb.DuckDBPyConnection,
    window: Window,
    state: pa.Table,
    delta: pa.Table,
    instant: datetime,
) -> pa.Table | None:
    """The state with the new rows ``delta`` folded in and flagged at ``instant``, as
    :func:`flagging`'s query gives it, with one DuckDB query over the new rows alone (their
    partials per bucket, and the flags of each bucket) and the merge in pyarrow: the
    state's buckets are not scanned by DuckDB. None where pyarrow could differ (no
    pyarrow merges for the shape, NaN or -0.0, types it refuses): fold in DuckDB."""
    if window.buckets is None:
        return None
    key = f"__k{window.keys}"
    keys = pa.table({key: pc.unique(state[key])})
    try:
        out = over_arrow(cursor, at(window.parts, instant), state.slice(0, 0), delta, keys)
    except (pa.ArrowException, TypeError, ValueError):
        return None
    marked = pc.is_valid(out["__flags"])
    flags = out.filter(marked)
    new = bucketmerge.merged(window.buckets, state, delta, out.filter(pc.invert(marked)))
    if new is None:
        return None
    where = pc.index_in(new[key], value_set=flags[key].combine_chunks())
    for name in ("__in", "__live", "__local"):
        new = new.append_column(name, pc.take(flags[name], where))
    return new


def flagging(window: Window, source: str) -> str:
    """The flags query over the output of ``source`` (a fold's SQL) instead of the state:
    one DuckDB query for both (each over Arrow input costs ~1 ms of fixed overhead)."""
    return window.inside.replace("(SELECT * FROM __duckflock_state)", f"({source})", 1)
