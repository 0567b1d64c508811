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
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from duckflock.core.cursors import first_row
from duckflock.live.fold import detached
from duckflock.live.fold.query import over_arrow
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


@dataclass(frozen=True, eq=False)
class Joined:
    """What an analysis's plan allows (:func:`allowed`, once per plan) and the copy its
    state was folded with (:func:`copied`, after each fold in the transaction)."""

    plan: Plan
    settings: detached.Settings | None  # None: the fold stays in the transaction
    dimensions: Dimensions | None = None


def allowed(
    cursor: duckdb.DuckDBPyConnection, plan: Plan, state: pa.Table, delta: pa.Table
) -> detached.Settings | None:
    """The detached instance's settings where ``plan``'s fold may run there over copies
    of its dimension tables (module docstring), in the caller's transaction; else None."""
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


def copied(
    cursor: duckdb.DuckDBPyConnection, plan: Plan, state: pa.Table, settings: detached.Settings
) -> Dimensions | None:
    """The dimension rows as Arrow, read in the caller's pinned transaction (the snapshot
    ``state`` describes), registered on a detached cursor of their own; None past
    :data:`~duckflock.live.fold.detached.BYTES`."""
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
    return Dimensions(plan, state, tables, settings, mine)


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
) -> tuple[pa.Table, pa.Table] | None:
    """(state, result) with the new fact rows ``delta`` folded in, on the detached
    instance; None past :data:`~duckflock.live.fold.detached.BYTES` of input (the
    analysis's cursor then, in the pinned transaction: the time limit interrupts it),
    or where the instance holding the copy was closed (the pinned fold copies again)."""
    if detached.fitting(dimensions.settings, fallback, state, delta) is fallback:
        return None
    plan = dimensions.plan
    try:
        return split(plan, over_arrow(dimensions.cursor, plan.refresh, state, delta))
    except duckdb.ConnectionException:
        # another Database closed, and detached.detach closed the instances no open
        # database's plans name (a copy's settings are not among them)
        return None


def joined_refresh(
    cursor: duckdb.DuckDBPyConnection, plan: Plan, state: pa.Table, delta: pa.Table
) -> tuple[pa.Table, pa.Table]:
    """The fold of a join's new fact rows, in the caller's pinned transaction."""
    # registered, not found by a replacement scan: a failed lookup (scans off in the
    # config) would abort the transaction before the fallback
    cursor.register(STATE, state)
    cursor.register(DELTA, delta)
    try:
        return split(plan, cursor.execute(plan.refresh).to_arrow_table())
    finally:
        for name in (STATE, DELTA):
            with contextlib.suppress(duckdb.Error):
                cursor.unregister(name)
