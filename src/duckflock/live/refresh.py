"""One run of one analysis: a full run, or the incremental rebuild and fold.

The scheduler (:mod:`duckflock.live.analyses`) decides when an analysis runs and on which
thread; this module is what the run does. Append-only aggregates keep a state (Arrow)
and the rows the writer stored since it was taken (``deltas``); a refresh folds those
into the state (pyarrow for plain shapes, DuckDB otherwise). A taint — any write the
deltas do not describe — makes the next run rebuild the state from the whole table.

A run can be cancelled (time limit, drop, replace, close): the scheduler sets
``analysis.cancel`` and interrupts the analysis's own cursor. DuckDB forgets an
interrupt that arrives between two statements, so the run also checks ``cancel``
between its statements, and the scheduler repeats the interrupt until the run ends.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from duckflock.core.wide import description_types, named_types, repair
from duckflock.live import windows
from duckflock.live.fold.query import over_arrow
from duckflock.live.fold.retention import retract
from duckflock.live.plan.incremental import Shape, inspect
from duckflock.live.plan.plans import DELTA, DISTINCT_LIMIT, STATE, Plan, split
from duckflock.live.results import Mailbox, Result, log


class Cancelled(Exception):
    """The run was cancelled between two statements (its ``cancel`` says why)."""


@dataclass(eq=False)
class Analysis:
    """One registered analysis and its scheduling state (guarded by the scheduler's lock)."""

    name: str
    sql: str
    params: Any
    every: float | None
    on_change: bool
    min_interval: float
    timeout: float  # seconds one run may take before it is interrupted
    shape: Shape
    cursor: duckdb.DuckDBPyConnection
    version: int = 0
    result: Result | None = None
    runs: int = 0  # runs dispatched so far
    published_run: int = 0  # the run the current result came from
    last_started: float | None = None
    dirty_at: float | None = None
    running: bool = False
    stale_cursor: bool = False  # the database was reopened while it ran: new cursor after
    reinspect: bool = False  # a write outside db.insert (DDL too): plan the SQL again
    forced: bool = False  # refresh() asked for a run now
    dropped: bool = False
    # the run in progress: when the scheduler interrupts it next, and why it was stopped
    deadline: float = 0.0
    cancel: str | None = None  # "timeout", "dropped", "replaced" or "closing"
    # incremental: the kept state, rows stored since it was taken, and why to rebuild
    state: pa.Table | None = None
    last_table: pa.Table | None = None  # the result the state gave: reused when nothing new
    collecting: bool = False
    deltas: list[pa.Table] = field(default_factory=list)
    delta_rows: int = 0
    delta_watermark: int = 0
    removed: list[pa.Table] = field(default_factory=list)  # rows deleted since (retention)
    removed_rows: int = 0
    window_now: datetime | None = None  # the instant the last window result is at
    tainted: str | None = None
    fast: bool = True  # the pyarrow fold may be used (see Plan.arrow)
    mode: str = ""
    reason: str = ""
    mailboxes: set[Mailbox] = field(default_factory=set)

    def due_at(self) -> float | None:
        """When this analysis should next run (monotonic seconds), or None."""
        if self.running or self.dropped:
            return None
        if self.last_started is None or self.forced:
            return 0.0
        times = []
        if self.every is not None:
            times.append(self.last_started + self.every)
        if self.on_change and self.dirty_at is not None:
            times.append(max(self.dirty_at, self.last_started + self.min_interval))
        return min(times) if times else None

    def status(self) -> dict[str, Any]:
        result = self.result
        return {
            "name": self.name,
            "sql": self.sql,
            "every": self.every,
            "on_change": self.on_change,
            "min_interval": self.min_interval,
            "timeout": self.timeout,
            "tables": sorted(t.display() for t in self.shape.tables),
            "version": self.version,
            "last_refresh": result.refreshed_at if result else None,
            "duration": result.duration if result else None,
            "rows": result.table.num_rows if result else None,
            "error": result.error.message if result and result.error else None,
            "mode": self.mode or ("incremental" if self.shape.plan else "full"),
            "reason": self.reason or self.shape.reason,
            "incremental": self.shape.plan is not None,
            "running": self.running,
        }


def taint(analysis: Analysis, why: str) -> None:
    """Drop the incremental state's deltas: the next run rebuilds. Caller holds the lock.
    The first reason since the last rebuild is the one shown."""
    analysis.tainted = analysis.tainted or why
    analysis.collecting = False
    analysis.deltas = []
    analysis.delta_rows = 0
    analysis.removed = []
    analysis.removed_rows = 0


def check(analysis: Analysis) -> None:
    """Raise :class:`Cancelled` when the run was cancelled (between two statements)."""
    if analysis.cancel is not None:
        raise Cancelled(analysis.cancel)


class Refresher:
    """Runs analyses; shares the scheduler's lock for the fields the writer also touches."""

    def __init__(
        self,
        lock: threading.Lock,
        commit_lock: Callable[[], threading.Lock],
        committed_seq: Callable[[], int],
        on_new_shape: Callable[[], None] = lambda: None,
        distinct_limit: int = DISTINCT_LIMIT,
    ) -> None:
        self._distinct_limit = distinct_limit
        self._lock = lock  # the scheduler's: guards deltas, taint and collecting
        self._commit_lock = commit_lock
        self._committed_seq = committed_seq
        self._on_new_shape = on_new_shape  # publishes the capture set again

    def run(self, analysis: Analysis) -> tuple[pa.Table, int]:
        """The new result table and the writer commits it reflects at least."""
        table, watermark = self._run(analysis)
        if analysis.shape.plan is not None:  # UHUGEINT, BIGNUM: see wide.py
            table = repair(table, named_types(analysis.shape.types))
        return table, watermark

    def _run(self, analysis: Analysis) -> tuple[pa.Table, int]:
        check(analysis)
        if analysis.reinspect:
            self._reinspect(analysis)
        if analysis.shape.plan is not None and analysis.shape.window is not None:
            return self._windowed(analysis, analysis.shape.plan)
        if analysis.shape.plan is not None:
            return self._incremental(analysis, analysis.shape.plan)
        watermark = self._committed_seq()
        analysis.mode, analysis.reason = "full", analysis.shape.reason
        cursor = analysis.cursor.execute(analysis.sql, analysis.params)
        return repair(cursor.to_arrow_table(), description_types(cursor)), watermark

    def _reinspect(self, analysis: Analysis) -> None:
        """Plan the SQL again after a write outside db.insert: DDL may have changed a
        column's type (the plan casts to the types it found), what a view reads, or
        whether the shape is incremental at all. The state is rebuilt either way."""
        with self._lock:
            # cleared before inspecting, not after: a write (CREATE OR REPLACE VIEW…) that
            # lands while this inspects sets it again, and the next run looks again
            analysis.reinspect = False
        try:
            shape = inspect(
                analysis.cursor,
                analysis.sql,
                params=analysis.params,
                distinct_limit=self._distinct_limit,
            )
        except BaseException:
            with self._lock:
                analysis.reinspect = True
            raise
        with self._lock:
            old = analysis.shape
            analysis.shape = shape
            analysis.state = None
            analysis.fast = True
            if shape.plan is not None:
                taint(analysis, analysis.tainted or "the table changed: the state is rebuilt")
        if (old.plan is None) != (shape.plan is None) or (
            old.plan is not None and shape.plan is not None and old.plan.table != shape.plan.table
        ):
            self._on_new_shape()

    def _incremental(self, analysis: Analysis, plan: Plan) -> tuple[pa.Table, int]:
        with self._lock:
            rebuild = analysis.state is None or analysis.tainted is not None
            why = analysis.tainted or "first refresh: the state is built from the whole table"
        if rebuild:
            state, table, watermark = self._rebuild(analysis, plan)
            analysis.mode, analysis.reason = "full", f"full: {why}"
        else:
            with self._lock:
                # in one hold: rows appended after a DELETE are never folded without it
                deleting = bool(analysis.removed)
                if not deleting:
                    deltas, analysis.deltas, analysis.delta_rows = analysis.deltas, [], 0
                    watermark = analysis.delta_watermark
            if deleting:
                return self._retract(analysis, plan)
            state, table = analysis.state, analysis.last_table
            if deltas:
                try:
                    delta = pa.concat_tables(deltas)
                except pa.ArrowInvalid:  # the table changed shape: start over
                    with self._lock:
                        taint(analysis, "the table's columns changed")
                    return self._incremental(analysis, plan)
                try:
                    folded = _fold(analysis, plan, state, delta)
                    if folded is None:
                        check(analysis)
                        if plan.joined:
                            folded = self._joined_fold(analysis, plan, state, delta)
                        else:
                            folded = split(
                                plan, over_arrow(analysis.cursor, plan.refresh, state, delta)
                            )
                    if folded is None:  # a joined table changed meanwhile: rebuild
                        return self._incremental(analysis, plan)
                    state, table = folded
                except BaseException:
                    # the taken rows are folded in nowhere now: rebuild from the table
                    with self._lock:
                        taint(analysis, "the last refresh failed: the state is rebuilt")
                    raise
            analysis.mode = "incremental"
            what = analysis.shape.reason.removeprefix("incremental: ")
            rows = sum(d.num_rows for d in deltas)
            analysis.reason = f"incremental: folded in {rows:,} rows; {what}"
        assert table is not None and state is not None
        too_big = plan.oversized(state)
        if too_big is not None:  # this result is right; the next runs are full
            with self._lock:
                analysis.shape = analysis.shape.full(too_big)
                taint(analysis, too_big)
            analysis.state, analysis.last_table = None, None
            analysis.mode, analysis.reason = "full", too_big
            self._on_new_shape()
            return table, watermark
        analysis.state, analysis.last_table = state, table
        return table, watermark

    @staticmethod
    def _fold_in(
        analysis: Analysis, plan: Plan, state: pa.Table | None, delta: pa.Table
    ) -> tuple[pa.Table, pa.Table]:
        """(state, result) with the appended rows ``delta`` folded in (not a join: its
        deletes rebuild, and a window reads one table)."""
        assert not plan.joined
        folded = _fold(analysis, plan, state, delta)
        if folded is None:
            check(analysis)
            assert state is not None
            folded = split(plan, over_arrow(analysis.cursor, plan.refresh, state, delta))
        return folded

    def _retract(self, analysis: Analysis, plan: Plan) -> tuple[pa.Table, int]:
        """Fold in the appended rows and take out the deleted ones (retention.py).

        Subtraction needs nothing but the state and the rows: it runs first, with no
        transaction. Only when a group needs the table (min/max, infinity) is the whole
        refresh done in a pinned transaction — at once for a min or max (they usually
        do), else with the rows put back first.
        """
        assert plan.retract is not None
        done = None
        if plan.retract.exact:
            done = self._subtract(analysis, plan)
        if done is None:
            with self._lock:
                tainted = analysis.tainted is not None
            if tainted:  # meanwhile: what was taken is no use, rebuild
                return self._incremental(analysis, plan)
            done = self._pinned(analysis, plan)
        table, watermark, appended, deleted = done
        analysis.mode = "incremental"
        analysis.reason = f"incremental: folded in {appended:,} rows, took out {deleted:,} deleted"
        return table, watermark

    def _subtract(self, analysis: Analysis, plan: Plan) -> tuple[pa.Table, int, int, int] | None:
        """The refresh by subtraction alone, as :meth:`_pinned` returns it; None when a
        group needs the table (the rows are put back, in order, unless the state was
        tainted meanwhile)."""
        assert plan.retract is not None
        with self._lock:
            deltas, analysis.deltas, analysis.delta_rows = analysis.deltas, [], 0
            removed, analysis.removed, analysis.removed_rows = analysis.removed, [], 0
            watermark = analysis.delta_watermark
        state = analysis.state
        assert state is not None
        gone = pa.concat_tables(removed)
        appended = sum(d.num_rows for d in deltas)
        try:
            if deltas:
                state, _ = self._fold_in(analysis, plan, state, pa.concat_tables(deltas))
            check(analysis)
            arrow = plan.arrow if analysis.fast else None
            settled = retract(analysis.cursor, plan.retract, state, gone, arrow, settle=False)
            if settled is not None:
                table = self._outputs(analysis, plan, settled, gone.slice(0, 0))
                analysis.state, analysis.last_table = settled, table
                return table, watermark, appended, gone.num_rows
        except BaseException:
            with self._lock:
                taint(analysis, "the last refresh failed: the state is rebuilt")
            raise
        with self._lock:  # before whatever arrived since
            if analysis.tainted is not None:
                return None
            analysis.deltas[:0] = deltas
            analysis.delta_rows += appended
            analysis.removed[:0] = removed
            analysis.removed_rows += gone.num_rows
        return None

    @staticmethod
    def _outputs(analysis: Analysis, plan: Plan, state: pa.Table, empty: pa.Table) -> pa.Table:
        """The result (HAVING, ORDER BY, LIMIT) of ``state``: pyarrow for plain shapes,
        else a DuckDB fold of no rows (``empty``: the source table's columns)."""
        if plan.arrow is not None and analysis.fast and not plan.arrow.has_nan(state, empty):
            with contextlib.suppress(pa.ArrowException, TypeError, ValueError):
                return plan.arrow.result(state)  # (not a large state's exact averages)
        if plan.finish:  # the state is merged already: its outputs alone
            return split(plan, over_arrow(analysis.cursor, plan.finish, state))[1]
        return split(plan, over_arrow(analysis.cursor, plan.refresh, state, empty))[1]

    def _windowed(self, analysis: Analysis, plan: Plan) -> tuple[pa.Table, int]:
        """A sliding window (windows.py): the bucketed state brought up to date, then
        combined at this run's instant."""
        with self._lock:
            rebuild = analysis.state is None or analysis.tainted is not None
            why = analysis.tainted or "first refresh: the state is built from the whole table"
        if rebuild:
            analysis.state, _, _ = self._rebuild(analysis, plan)
        table, watermark, appended, deleted = self._pinned(analysis, plan)
        analysis.mode = "full" if rebuild else "incremental"
        analysis.reason = (
            f"full: {why}"
            if rebuild
            else f"incremental: window at {analysis.window_now}, folded in {appended:,} rows"
            + (f", took out {deleted:,} deleted" if deleted else "")
        )
        return table, watermark

    def _pinned(self, analysis: Analysis, plan: Plan) -> tuple[pa.Table, int, int, int]:
        """Bring the state up to date in a transaction whose snapshot is pinned, under
        the commit lock, together with taking the deltas: groups that subtraction cannot
        settle (min/max, NaN) and a window's boundary buckets are computed from the table
        at exactly the data the state then describes. (result, watermark, rows folded in,
        rows taken out)."""
        window = analysis.shape.window
        cursor = analysis.cursor
        cursor.execute("BEGIN TRANSACTION")
        try:
            with self._commit_lock():
                cursor.execute(plan.pin).fetchall()
                with self._lock:
                    deltas, analysis.deltas, analysis.delta_rows = analysis.deltas, [], 0
                    removed, analysis.removed, analysis.removed_rows = analysis.removed, [], 0
                    watermark = analysis.delta_watermark
            check(analysis)
            state = analysis.state
            assert state is not None
            appended = sum(d.num_rows for d in deltas)
            # instants never go back: expired buckets would be needed again
            instant = max(windows.now(), analysis.window_now or windows.now())
            flagged = None
            if window is not None and deltas and not removed:
                # fold and flag the buckets in one query
                sql = windows.at(windows.flagging(window, plan.refresh), instant)
                flagged = over_arrow(cursor, sql, state, pa.concat_tables(deltas)).select(
                    [*plan.state_columns, "__in", "__live"]
                )
            elif deltas:
                state, _ = self._fold_in(analysis, plan, state, pa.concat_tables(deltas))
            gone = pa.concat_tables(removed) if removed else None
            if gone is not None:
                assert plan.retract is not None
                check(analysis)
                state = retract(
                    cursor, plan.retract, state, gone, plan.arrow if analysis.fast else None
                )
            check(analysis)
            if window is None:
                assert gone is not None
                # the outputs (HAVING, ORDER BY, LIMIT) from the new state: a fold of no rows
                table = self._outputs(analysis, plan, state, gone.slice(0, 0))
            else:
                state, inside, rows = windows.cut(
                    cursor,
                    window,
                    state,
                    instant,
                    lambda q, s, d: over_arrow(cursor, q, s, d),
                    flagged,
                )
                table = _combined(cursor, window.combine, inside, rows)
                analysis.window_now = instant
            cursor.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                cursor.execute("ROLLBACK")
            with self._lock:
                taint(analysis, "the last refresh failed: the state is rebuilt")
            raise
        analysis.state, analysis.last_table = state, table
        return table, watermark, appended, 0 if gone is None else gone.num_rows

    def _joined_fold(
        self, analysis: Analysis, plan: Plan, state: pa.Table, delta: pa.Table
    ) -> tuple[pa.Table, pa.Table] | None:
        """The fold of a join, reading the joined tables as they were when the state
        was taken: in a transaction pinned while no commit lands, after checking that
        none of them was written since (None if one was: the state is tainted)."""
        cursor = analysis.cursor
        cursor.execute("BEGIN TRANSACTION")
        try:
            with self._commit_lock():
                # every commit so far has been announced (on_commit runs under this lock)
                cursor.execute(plan.pin).fetchall()
                with self._lock:
                    changed = analysis.tainted is not None
            if changed:
                cursor.execute("ROLLBACK")
                return None
            check(analysis)
            # registered, not found by a replacement scan: a failed lookup (scans off in
            # the config) would abort the transaction before the fallback could run
            cursor.register(STATE, state)
            cursor.register(DELTA, delta)
            try:
                folded = split(plan, cursor.execute(plan.refresh).to_arrow_table())
            finally:
                for name in (STATE, DELTA):
                    with contextlib.suppress(duckdb.Error):
                        cursor.unregister(name)
            cursor.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                cursor.execute("ROLLBACK")
            raise
        return folded

    def _rebuild(self, analysis: Analysis, plan: Plan) -> tuple[pa.Table, pa.Table, int]:
        """State and result from the whole table, in a transaction pinned between commits.

        An interrupt (time limit, drop, close) lands in the build query, inside the
        transaction: DuckDB aborts it, and ROLLBACK leaves the cursor ready for the next
        run. The commit lock is held only while the snapshot is pinned (one LIMIT 0 scan).
        """
        cursor = analysis.cursor
        cursor.execute("BEGIN TRANSACTION")
        try:
            with self._lock:
                # cleared before the snapshot is pinned, not after: a write outside
                # db.insert takes no commit lock, and its taint landing between the two
                # would be lost with its rows missing from the state
                analysis.tainted = None
            with self._commit_lock():
                # pin the snapshot while no commit can land: DuckDB takes it at the
                # transaction's first access to the database (BEGIN and SELECT 1 do not)
                cursor.execute(plan.pin).fetchall()
                watermark = self._committed_seq()
                with self._lock:
                    analysis.collecting = analysis.tainted is None
                    analysis.deltas, analysis.delta_rows = [], 0
                    analysis.removed, analysis.removed_rows = [], 0
                    analysis.delta_watermark = watermark
            check(analysis)
            state, table = split(plan, cursor.execute(plan.build).to_arrow_table())
            cursor.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                cursor.execute("ROLLBACK")
            with self._lock:
                taint(analysis, "the last refresh failed: the state is rebuilt")
            raise
        return state, table, watermark


def _fold(
    analysis: Analysis, plan: Plan, state: pa.Table | None, delta: pa.Table
) -> tuple[pa.Table, pa.Table] | None:
    """The pyarrow fast path for plain shapes; None where it does not apply.

    A column type pyarrow cannot group or aggregate turns it off for this analysis:
    DuckDB does the refresh instead, then and from then on.
    """
    if plan.arrow is None or not analysis.fast or state is None:
        return None
    if plan.arrow.has_nan(state, delta):
        # pyarrow skips NaN in min/max and sorts it apart; DuckDB ranks it above every
        # number and groups it: from the first NaN on, DuckDB folds this analysis
        analysis.fast = False
        return None
    try:
        return plan.arrow.fold(state, delta)
    except (pa.ArrowException, TypeError, ValueError):
        log.warning("analysis %r: pyarrow cannot fold it; DuckDB will", analysis.name)
        analysis.fast = False
        return None


def _combined(
    cursor: duckdb.DuckDBPyConnection, plan: Plan, inside: pa.Table, rows: pa.Table
) -> pa.Table:
    """A window's result: its buckets inside the window merged by the query's own keys,
    with the rows of the cut buckets folded in (pyarrow for plain shapes)."""
    if plan.arrow is not None and not plan.arrow.has_nan(inside, rows):
        with contextlib.suppress(pa.ArrowException, TypeError, ValueError):
            return plan.arrow.fold(inside, rows)[1]
    return split(plan, over_arrow(cursor, plan.refresh, inside, rows))[1]
