"""Refresh steps that read the table at exactly the data the state describes.

Each runs in a transaction whose snapshot is pinned while no commit can land: under the
writer's commit lock, the transaction's first access to the table (``plan.pin``: DuckDB
takes a snapshot there, not at BEGIN) and the hand-over of the deltas happen together.
:func:`pinned` is that pattern, once; :class:`Pinned` holds the three steps using it —
a rebuild from the whole table, bringing a state up to date where subtraction cannot
(min/max, NaN, a window's boundary buckets), and the fold of a join.

An interrupt (time limit, drop, close) lands in a query inside the transaction: DuckDB
aborts it, and ROLLBACK leaves the cursor ready for the next run. The commit lock is
held only while the snapshot is pinned (one LIMIT 0 scan).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from typing import NamedTuple, TypeVar

import duckdb
import pyarrow as pa

from duckflock.core.effects import Epoch
from duckflock.live import bucketflags, bucketmerge, joins, marks, sliding, windows
from duckflock.live.clock import Clock
from duckflock.live.fold.query import over_arrow
from duckflock.live.fold.retention import retract
from duckflock.live.joins import joined_refresh as joined_refresh  # (lakefeed's)
from duckflock.live.marks import Carried
from duckflock.live.plan.plans import Plan, split
from duckflock.live.record import Analysis
from duckflock.live.steps import combined, fold_in, outputs
from duckflock.live.windows import Window

T = TypeVar("T")

FAILED = "the last refresh failed: the state is rebuilt"
FIRST = "first refresh: the state is built from the whole table"


@contextlib.contextmanager
def pinned(
    cursor: duckdb.DuckDBPyConnection,
    pin: str,
    commit_lock: threading.Lock,
    take: Callable[[], T],
) -> Iterator[T]:
    """A transaction on ``cursor`` whose snapshot is pinned (``pin``) under
    ``commit_lock``, together with ``take()`` (the deltas, a flag…), whose value it
    gives. COMMIT when the block ends, ROLLBACK when it raises."""
    cursor.execute("BEGIN TRANSACTION")
    try:
        with commit_lock:
            cursor.execute(pin).fetchall()
            taken = take()
        yield taken
        cursor.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            cursor.execute("ROLLBACK")
        raise


class _Flagging(NamedTuple):
    """A window's state flagged from its buckets' marks (:meth:`Pinned._flag`)."""

    table: pa.Table  # the state, new rows folded in, with the flags windows.split reads
    marks: pa.Table  # the marks of its buckets
    bound: marks.Bound  # the bound it was flagged at
    state: pa.Table  # the state, new rows folded in (without the flags)


class _Partway(NamedTuple):
    """A carried refresh that found the instant in another bucket (:meth:`Pinned._carry`):
    the rows it took are folded into ``flagging.state``; the pinned path reads from there."""

    flagging: _Flagging
    instant: datetime  # the instant it was flagged at
    rows: int  # the rows it folded in


class _Changed(Exception):
    """A joined table was written since the state was taken: roll back, rebuild."""


class Pinned:
    """The pinned steps of the refresher. Stateless; called on analysis threads."""

    def __init__(
        self,
        lock: threading.Lock,
        commit_lock: Callable[[], threading.Lock],
        committed_seq: Callable[[], int],
        clock: Clock,
        settings: Epoch,  # the Database's settings epoch (a window's time zone)
    ) -> None:
        self._lock = lock  # the registry's: guards each analysis's Changes
        self._settings = settings
        self._commit_lock = commit_lock
        self._committed_seq = committed_seq
        self._clock = clock
        self.copies = joins.Copies()  # per analysis: whether its join folds detached, on which copy

    def _taint(self, analysis: Analysis, why: str = FAILED) -> None:
        with self._lock:
            analysis.changes.taint(why)

    def rebuild(self, analysis: Analysis, plan: Plan) -> tuple[pa.Table, pa.Table, int]:
        """State, result and watermark from the whole table; from here on the deltas
        are collected for this state."""

        def start() -> int:
            watermark = self._committed_seq()
            with self._lock:
                changes = analysis.changes
                changes.collecting = changes.tainted is None
                changes.clear()
                changes.delta_watermark = watermark
            return watermark

        cursor = analysis.state.cursor
        with self._lock:
            # cleared before the snapshot is pinned, not after: a write outside db.insert
            # takes no commit lock, and its taint landing between the two would be lost
            # with its rows missing from the state
            analysis.changes.tainted = None
        try:
            with pinned(cursor, plan.pin, self._commit_lock(), start) as watermark:
                analysis.check()
                state, table = split(plan, cursor.execute(plan.build).to_arrow_table())
        except BaseException:
            self._taint(analysis)
            raise
        return state, table, watermark

    def update(self, analysis: Analysis, plan: Plan) -> tuple[pa.Table, int, int, int]:
        """Bring the state up to date with the deltas taken at the pin: groups that
        subtraction cannot settle (min/max, NaN) and a window's boundary buckets are
        computed from the table at exactly the data the state then describes.
        (result, watermark, rows folded in, rows taken out)."""

        def take() -> tuple[list[pa.Table], list[pa.Table], int]:
            with self._lock:
                return analysis.changes.take()

        run = analysis.state
        window = run.shape.window
        cursor = run.cursor
        partway = None
        if window is not None and window.marking is not None:
            done = self._carry(analysis, window, window.marking)
            if isinstance(done, _Partway):
                partway = done  # its rows are folded in: the read below starts there
            elif done is not None:
                return done
        try:
            with pinned(cursor, plan.pin, self._commit_lock(), take) as taken:
                deltas, removed, watermark = taken
                analysis.check()
                state = run.state if partway is None else partway.flagging.state
                assert state is not None
                appended = sum(d.num_rows for d in deltas) + (partway.rows if partway else 0)
                # instants never go back: expired buckets would be needed again
                now = self._clock.now()
                instant = max(now, run.window_now or now)
                flagged = flagging = None
                delta = pa.concat_tables(deltas) if deltas else None
                if partway is not None and not removed:
                    instant = partway.instant  # flagged there: the same bound, marks
                    flagging = partway.flagging
                    if delta is not None:
                        assert window is not None and window.marking is not None
                        flagging = self._flag(
                            analysis, window, window.marking, state, delta, instant, flagging
                        )
                    flagged = None if flagging is None else flagging.table
                elif window is not None and not removed and window.marking is not None:
                    flagging = self._flag(analysis, window, window.marking, state, delta, instant)
                    flagged = None if flagging is None else flagging.table
                if window is not None and delta is not None and not removed and flagged is None:
                    flagged = windows.folded(cursor, window, state, delta, instant)
                    if flagged is None:  # fold and flag the buckets in one query
                        sql = windows.at(windows.flagging(window, plan.refresh), instant)
                        flagged = over_arrow(cursor, sql, state, delta).select(
                            [*plan.state_columns, "__in", "__live", "__local"]
                        )
                elif delta is not None and (window is None or removed):
                    state, _ = fold_in(analysis, plan, state, delta)
                gone = pa.concat_tables(removed) if removed else None
                if gone is not None:
                    assert plan.retract is not None
                    analysis.check()
                    arrow = plan.arrow if run.fast else None
                    state = retract(cursor, plan.retract, state, removed, arrow, run.segments)
                analysis.check()
                if window is None:
                    assert gone is not None
                    # the outputs (HAVING, ORDER BY, LIMIT) of the new state: no rows folded
                    table = outputs(analysis, plan, state, gone.slice(0, 0))
                else:
                    parts, rows = windows.cut(
                        cursor,
                        window,
                        state,
                        instant,
                        lambda q, s, d: over_arrow(cursor, q, s, d),
                        flagged,
                    )
                    state = parts.kept
                    table = combined(cursor, window.combine, parts.inside, rows)
                    run.window_now = instant
                    found = None if flagging is None else (flagging.marks, flagging.bound)
                    run.carried = sliding.leave(window, parts, rows, found, run.carried)
        except BaseException:
            self._taint(analysis)
            raise
        run.state, run.last_table = state, table
        return table, watermark, appended, 0 if gone is None else gone.num_rows

    def _flag(
        self,
        analysis: Analysis,
        window: Window,
        marking: marks.Marking,
        state: pa.Table,
        delta: pa.Table | None,
        instant: datetime,
        again: _Flagging | None = None,
    ) -> _Flagging | None:
        """``state`` with ``delta`` folded in and flagged at ``instant`` from its buckets'
        marks (marks.py): the new rows' partials in pyarrow, the bound (from the instant
        where DuckDB proved it ``now()`` minus a constant, else one constant query), a
        DuckDB query only for buckets without marks yet. ``again``: ``state``'s own
        flagging at ``instant`` (its bound and marks hold). None where that is not proven
        equal to the SQL flags (then DuckDB folds and flags)."""
        run = analysis.state
        cursor = run.cursor
        if window.buckets is None:
            return None
        carried = run.carried
        if again is not None:
            bound, prior, covered = again.bound, again.marks, True
        else:
            # the shift holds under the settings the carried state's marks were taken in
            ours = carried is not None and carried.marking is marking and carried.state is state
            epoch = self._settings.current()  # before the settings are read
            shifted = None
            if ours and carried is not None:
                shifted = marks.shifted(cursor, marking, instant, carried, epoch)
            found = shifted or marks.bounds(cursor, windows.at(marking.bound, instant), epoch)
            if found is None:
                return None
            bound = found
            prior = marks.prior(carried, marking, bound.settings)
            # where the marks cover the state, only the new rows' buckets may lack theirs
            covered = prior is not None and ours
        fresh = state[marking.key].slice(0, 0) if covered else None
        if delta is not None:
            analysis.check()
            out = marks.partials(cursor, marking, window.buckets, window.width, state, delta)
            fresh = out[marking.key] if covered else None
            merged = bucketmerge.merged(window.buckets, state, delta, out)
            if merged is None:
                return None
            state = merged
        analysis.check()
        known = marks.marked(cursor, marking, state, prior, fresh)
        if known is None:
            return None
        return _Flagging(
            bucketflags.flagged(marking, state, known, bound.compared), known, bound, state
        )

    def _carry(
        self, analysis: Analysis, window: Window, marking: marks.Marking
    ) -> tuple[pa.Table, int, int, int] | _Partway | None:
        """The refresh after appends alone without a transaction, where the last one left
        the cut bucket's rows and the instant has not moved past it (marks.py): the new
        rows' partials, one constant from DuckDB (or none), the rest in pyarrow. None:
        the pinned path (the deltas are put back); a :class:`_Partway`: the pinned path
        from the state with the taken rows folded in and flagged (the instant crossed
        into another bucket: its rows are read)."""
        run, changes = analysis.state, analysis.changes
        carried = run.carried
        if carried is None or carried.state is not run.state or carried.rows is None:
            return None
        with self._lock:
            if changes.tainted is not None or changes.removed:
                return None
            deltas, _, watermark = changes.take()
        try:
            done = self._carried(analysis, window, marking, carried, deltas)
        except BaseException:
            self._taint(analysis)
            raise
        if done is None:
            with self._lock:  # before whatever arrived since
                if changes.tainted is None:
                    changes.put_back(deltas, [])
            return None
        if isinstance(done, _Partway):
            return done
        return done, watermark, sum(d.num_rows for d in deltas), 0

    def _carried(
        self,
        analysis: Analysis,
        window: Window,
        marking: marks.Marking,
        carried: Carried,
        deltas: list[pa.Table],
    ) -> pa.Table | _Partway | None:
        run = analysis.state
        now = self._clock.now()
        instant = max(now, run.window_now or now)
        delta = None
        if deltas:
            delta = deltas[0] if len(deltas) == 1 else pa.concat_tables(deltas)
        assert run.state is not None
        analysis.check()
        epoch = self._settings.current()  # (before the settings are read)
        fast = sliding.refreshed(run.cursor, window, carried, run.state, delta, instant, epoch)
        if fast is not None:  # over the state's arrays
            run.state, run.last_table, run.carried = fast
            run.window_now = instant
            return fast[1]
        flagging = self._flag(analysis, window, marking, run.state, delta, instant)
        if flagging is None or flagging.bound.settings != carried.settings:
            return None
        partway = _Partway(flagging, instant, sum(d.num_rows for d in deltas))
        parts = windows.split(window, flagging.table, instant)
        if parts.span is None or carried.rows is None:
            return partway
        rows = None
        if parts.span == (0, 0):
            rows = carried.rows.slice(0, 0)
        else:
            local = marks.local_of(marking, flagging.marks, parts.span, flagging.bound)
            if local is not None:
                rows = marks.carried(marking, carried, delta, parts.span, local)
        if rows is None:
            return partway
        table = combined(run.cursor, window.combine, parts.inside, rows)
        run.state, run.last_table, run.window_now = parts.kept, table, instant
        bound = flagging.bound
        run.carried = Carried(
            parts.kept, flagging.marks, parts.span, rows, bound.settings, marking, bound.epoch
        )
        return table

    def joined_fold(
        self, analysis: Analysis, plan: Plan, state: pa.Table, delta: pa.Table
    ) -> tuple[pa.Table, pa.Table] | None:
        """The fold of a join, reading the joined tables as they were when the state
        was taken, after checking that none of them was written since (None if one
        was: the state is tainted, the caller rebuilds). Detached over the copy of their
        rows the last fold of this state took, where it has one (joins.py)."""

        def changed() -> bool:
            # every commit so far has been announced (the notices run under this lock)
            with self._lock:
                return analysis.changes.tainted is not None

        cursor = analysis.state.cursor
        kept = self.copies.get(analysis, plan)
        copy = None if kept is None else kept.dimensions
        if kept is not None and copy is not None and copy.state is state:
            if changed():  # a joined table was written: its copy is stale
                return None
            analysis.check()
            done = joins.fold(copy, cursor, state, delta)
            if done is not None:
                self.copies.put(analysis, replace(kept, dimensions=done[1]))
                return done[0]
        try:
            with pinned(cursor, plan.pin, self._commit_lock(), changed) as stale:
                if stale:
                    raise _Changed
                analysis.check()
                if kept is None:  # once per plan
                    kept = joins.allowed(cursor, plan, state, delta)
                folded = joined_refresh(cursor, plan, state, delta, kept.merge)
                if folded[0].schema != state.schema:  # the whole-state query's types
                    kept = replace(kept, merge=None)
                if kept.settings is not None:
                    kept = replace(kept, dimensions=joins.copied(cursor, kept, folded[0]))
                self.copies.put(analysis, kept)
                return folded
        except _Changed:
            return None
