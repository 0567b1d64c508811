"""A join's fold off the database's transaction: the new fact rows joined with a copy of
the dimension rows, on the detached instance (:mod:`duckflock.live.fold.detached`).

The fold of a join (``plan.refresh``: the state merged with the new fact rows joined with
the dimension tables) must read the dimensions as they were when the state was taken.
A write to a dimension taints the analysis (the next run rebuilds); so while it is not
tainted, the dimension rows are those the state was folded with — and a copy of them,
taken in the pinned transaction of a fold, serves every later fold of that state: the
query runs on the detached instance over three Arrow tables, with no BEGIN, pin or
COMMIT and none of the database's worker threads.

Where DuckDB could answer otherwise, the fold stays in the pinned transaction
(:meth:`duckflock.live.pinned.Pinned.joined_fold`): a dimension that is not a base table
the query names by its bare name (a view, a qualified name: it does not bind detached), a
column declared with a collation (the copy would compare without it), a column type the
Arrow copy does not give back, a function of the database's own, or more than
:data:`~duckflock.live.fold.detached.BYTES` of rows.

Where the plan has a row-by-row merge (``plan.merge``: keys Arrow compares as DuckDB
does, partials that merge element-wise, no HAVING or ORDER BY) and its partials query
gives the same types detached, the fold reads only the new rows: their join with the
copies, grouped (DuckDB; or a pyarrow lookup and program where
:mod:`duckflock.live.plan.joining` admitted one and the copy's keys are unique:
:mod:`duckflock.live.fold.lookup`), merged into the state by key
(:mod:`duckflock.live.fold.merges`) — no scan of the whole state. A NaN, -0.0 or
overflow hands that fold (and the later ones of the copy) to the whole-state ``refresh``
query.

A copy's cursor is closed when the analysis is dropped, its database closes or a new
copy replaces it (:meth:`Dimensions.close`); its settings are among those the database
reports to the detached instances, so another database's close leaves it open.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from dataclasses import dataclass, replace

import duckdb
import pyarrow as pa

from duckflock.core.cursors import first_row
from duckflock.live.fold import detached, merges
from duckflock.live.fold.lookup import Join, looked_up
from duckflock.live.fold.merges import Merge
from duckflock.live.fold.query import over_arrow
from duckflock.live.plan import joining
from duckflock.live.plan.plans import DELTA, STATE, Plan, split

_TABLE = (
    "SELECT sql FROM duckdb_tables() WHERE database_name = ? AND schema_name = ? AND table_name = ?"
)


@dataclass(frozen=True, eq=False)
class Dimensions:
    """The joined tables' rows a state was folded with (see the module docstring)."""

    plan: Plan
    state: pa.Table  # the state these rows hold for (a fold keeps them for its result)
    tables: dict[str, pa.Table]  # by the bare name the query reads each by
    settings: detached.Settings
    # a cursor of the detached instance's own, the tables registered on it once
    cursor: duckdb.DuckDBPyConnection
    merge: Merge | None  # the row-by-row fold's plan, while it holds (module docstring)

    def close(self) -> None:
        """Close the copy's cursor (its tables' registrations go with it)."""
        with contextlib.suppress(duckdb.Error):
            self.cursor.close()


@dataclass(frozen=True, eq=False)
class Joined:
    """What an analysis's plan allows (:func:`allowed`, once per plan) and the copy its
    state was folded with (:func:`copied`, after each fold in the transaction)."""

    plan: Plan
    settings: detached.Settings | None  # None: the fold stays in the transaction
    dimensions: Dimensions | None = None
    merge: Merge | None = None  # plan.merge, where its partials run detached alike
    join: Join | None = None  # its partials as a pyarrow lookup (live/fold/lookup.py)


def allowed(
    cursor: duckdb.DuckDBPyConnection, plan: Plan, state: pa.Table, delta: pa.Table
) -> Joined:
    """Whether ``plan``'s fold may run on the detached instance over copies of its
    dimension tables (module docstring), asked in the caller's transaction: the
    instance's settings (None: it may not) and the row-by-row merge it may run there."""
    settings = _settings(cursor, plan, state, delta)
    merge, join = plan.merge, None
    if settings is not None and merge is not None:
        tables = {
            i.name: cursor.execute(f"SELECT * FROM {i.sql} LIMIT 0").to_arrow_table()
            for i in plan.joined
        }
        partials = [(merge.partials, {DELTA: delta.slice(0, 0), **tables})]
        if detached.settings_for(cursor, partials) != settings:
            merge = None
        elif len(plan.joined) == 1:
            (dimension,) = plan.joined
            empty = (state.slice(0, 0), delta.slice(0, 0), tables[dimension.name])
            join = joining.admitted(cursor, merge.partials, plan.table, dimension, empty, settings)
    return Joined(plan, settings, merge=merge, join=join)


def _settings(
    cursor: duckdb.DuckDBPyConnection, plan: Plan, state: pa.Table, delta: pa.Table
) -> detached.Settings | None:
    names = [identity.name for identity in plan.joined]
    if not names or len({name.lower() for name in names}) != len(names):
        return None
    tables: dict[str, pa.Table] = {}
    try:
        for identity in (plan.table, *plan.joined):
            row = first_row(cursor.execute(_TABLE, list(identity)))
            if row is None or "collate" in str(row[0]).lower():
                return None  # a view, or a collation the Arrow copy would not keep
        for identity in plan.joined:
            empty = f"SELECT * FROM {identity.sql} LIMIT 0"
            tables[identity.name] = cursor.execute(empty).to_arrow_table()
        query = {STATE: state.slice(0, 0), DELTA: delta.slice(0, 0), **tables}
        settings = detached.settings_for(cursor, [(plan.refresh, query)])
        copy = None if settings is None else detached.cursor(settings)
        if settings is None or copy is None:
            return None
        for identity in plan.joined:
            own = [str(kind) for kind in cursor.sql(f"SELECT * FROM {identity.sql}").types]
            if _types(copy, tables[identity.name]) != own:
                return None  # the Arrow copy's types are not the table's
    except duckdb.Error:
        return None
    return settings


def copied(cursor: duckdb.DuckDBPyConnection, joined: Joined, state: pa.Table) -> Dimensions | None:
    """The dimension rows as Arrow, read in the caller's pinned transaction (the snapshot
    ``state`` describes), registered on a detached cursor of their own; None past
    :data:`~duckflock.live.fold.detached.BYTES`."""
    plan, settings = joined.plan, joined.settings
    assert settings is not None
    shared = detached.cursor(settings)
    if shared is None:
        return None
    tables: dict[str, pa.Table] = {}
    for identity in plan.joined:
        tables[identity.name] = cursor.execute(f"SELECT * FROM {identity.sql}").to_arrow_table()
    if sum(table.nbytes for table in tables.values()) > detached.BYTES:
        return None
    mine = shared.cursor()
    for name, table in tables.items():
        mine.register(name, table)
    merge = joined.merge
    lookup = None if len(tables) != 1 else looked_up(joined.join, *tables.values())
    if merge is not None and lookup is not None:
        merge = replace(merge, computed=lookup)  # the partials in pyarrow (lookup.py)
    return Dimensions(plan, state, tables, settings, mine, merge)


def _types(cursor: duckdb.DuckDBPyConnection, table: pa.Table) -> list[str]:
    """The column types DuckDB reads ``table`` (an Arrow copy) with."""
    cursor.register("__duckflock_dim", table)
    try:
        return [str(kind) for kind in cursor.sql("SELECT * FROM __duckflock_dim").types]
    finally:
        with contextlib.suppress(duckdb.Error):
            cursor.unregister("__duckflock_dim")


def fold(
    dimensions: Dimensions, fallback: duckdb.DuckDBPyConnection, state: pa.Table, delta: pa.Table
) -> tuple[tuple[pa.Table, pa.Table], Dimensions] | None:
    """(state, result) with the new fact rows ``delta`` folded in, on the detached
    instance, and the copy that holds for that state; None past
    :data:`~duckflock.live.fold.detached.BYTES` of input (the analysis's cursor then,
    in the pinned transaction: the time limit interrupts it), or where the instance
    holding the copy was closed (the pinned fold copies again)."""
    if detached.fitting(dimensions.settings, fallback, state, delta) is fallback:
        return None
    plan, merge = dimensions.plan, dimensions.merge
    try:
        done = None if merge is None else merges.fold(dimensions.cursor, merge, state, delta)
        if done is None:  # no row-by-row merge, or one pyarrow would not merge as DuckDB
            done = split(plan, over_arrow(dimensions.cursor, plan.refresh, state, delta))
            merge = None
    except duckdb.ConnectionException:
        # the instance was closed (an interrupted close): copy again
        return None
    return done, replace(dimensions, state=done[0], merge=merge)


def joined_refresh(
    cursor: duckdb.DuckDBPyConnection,
    plan: Plan,
    state: pa.Table,
    delta: pa.Table,
    merge: Merge | None = None,
) -> tuple[pa.Table, pa.Table]:
    """The fold of a join's new fact rows, in the caller's pinned transaction: row by
    row where ``merge`` is given and merges them as DuckDB would, else the whole-state
    query. (A caller that gave ``merge`` tells which by the state's schema.)"""
    # registered, not found by a replacement scan: a failed lookup (scans off in the
    # config) would abort the transaction before the fallback
    cursor.register(STATE, state)
    cursor.register(DELTA, delta)
    try:
        done = None if merge is None else merges.fold(cursor, merge, state, delta)
        if done is not None:
            return done
        return split(plan, cursor.execute(plan.refresh).to_arrow_table())
    finally:
        for name in (STATE, DELTA):
            with contextlib.suppress(duckdb.Error):
                cursor.unregister(name)


class Copies:
    """Each analysis's :class:`Joined` (its plan's, with the copy its state was folded
    with), by analysis. Owner: the refresher's :class:`~duckflock.live.pinned.Pinned`;
    a run reads and replaces its own analysis's, the scheduler forgets an analysis
    dropped or closed (its copy's cursor closed then) and asks which settings the copies
    hold (:meth:`settings`, reported to :mod:`~duckflock.live.fold.detached`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _joined (runs write, the scheduler reads)
        self._joined: weakref.WeakKeyDictionary[object, Joined] = weakref.WeakKeyDictionary()

    def get(self, analysis: object, plan: Plan) -> Joined | None:
        with self._lock:
            found = self._joined.get(analysis)
        return found if found is not None and found.plan is plan else None

    def put(self, analysis: object, joined: Joined) -> None:
        """Keep ``joined`` for ``analysis``; a copy it replaces is closed."""
        with self._lock:
            old = self._joined.get(analysis)
            self._joined[analysis] = joined
        _close_unless(old, joined.dimensions)

    def forget(self, analysis: object) -> None:
        """``analysis`` is dropped or its database closes: close its copy."""
        with self._lock:
            old = self._joined.pop(analysis, None)
        _close_unless(old, None)

    def settings(self) -> set[detached.Settings]:
        """The settings of the detached instances holding copies."""
        with self._lock:
            kept = list(self._joined.values())
        return {j.dimensions.settings for j in kept if j.dimensions is not None}


def _close_unless(old: Joined | None, kept: Dimensions | None) -> None:
    if old is None or old.dimensions is None:
        return
    if kept is None or kept.cursor is not old.dimensions.cursor:
        old.dimensions.close()
