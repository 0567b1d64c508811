"""One run of one analysis: a full run, or the incremental rebuild and fold.

The scheduler (:mod:`duckflock.live.scheduler`) decides when an analysis runs and on
which thread; this module is what the run does. Append-only aggregates keep a state
(Arrow) and the rows the writer stored since it was taken (the analysis's
:class:`~duckflock.live.record.Changes`); a refresh folds those into the state (pyarrow
for plain shapes, DuckDB otherwise). A taint — any write the deltas do not describe —
makes the next run rebuild the state from the whole table (:mod:`duckflock.live.pinned`).

A run can be cancelled (time limit, drop, replace, close): the scheduler sets the
schedule's ``stop`` and interrupts the analysis's own cursor. DuckDB forgets an
interrupt that arrives between two statements, so the run also checks ``stop`` between
its statements (:meth:`Analysis.check`), and the scheduler repeats the interrupt until
the run ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import duckdb
import pyarrow as pa

from duckflock.core.effects import Epoch, changed_settings, values
from duckflock.core.wide import description_types, named_types, repair
from duckflock.live.changes import Touched, difference, signed
from duckflock.live.clock import Clock
from duckflock.live.fold.arrow import OutputKind
from duckflock.live.fold.retention import retract
from duckflock.live.lakefeed import LakeFeed
from duckflock.live.pinned import FAILED, FIRST, Pinned
from duckflock.live.plan.functions import Catalogue
from duckflock.live.plan.incremental import inspect
from duckflock.live.plan.plans import DISTINCT_LIMIT, Plan
from duckflock.live.record import Analysis
from duckflock.live.results import Mode, Result, log
from duckflock.live.steps import arrow_fold, fold_in, merge_fold, outputs


def touched(plan: Plan, rows: list[pa.Table]) -> Touched | None:
    """The groups ``rows`` (appended or deleted) fall in, as values of the result's key
    columns; None where a row of the result is not one group's alone (no pyarrow plan,
    a key not in the result, LIMIT/OFFSET). Their table is built when first read: only
    a reader of changes needs it (the rows' key columns are kept until then)."""
    arrow = plan.arrow
    if not rows:
        return Touched((), pa.table({}))  # nothing new: nothing changed
    if arrow is None or arrow.offset or arrow.limit is not None or not arrow.keys:
        return None
    positions = []
    for i in range(len(arrow.keys)):
        at = [
            j
            for j, out in enumerate(arrow.outputs)
            if out.kind is OutputKind.KEY and out.index == i
        ]
        if not at:
            return None
        positions.append(at[0])
    try:
        sources = [[r[name] for name in arrow.keys] for r in rows]
    except KeyError:
        return None

    def keys() -> pa.Table | None:
        names = [f"k{i}" for i in range(len(positions))]
        try:
            tables = [pa.Table.from_arrays(arrow.bucketed(s), names=names) for s in sources]
            if len(tables) == 1:
                return tables[0]
            return pa.concat_tables(tables, promote_options="permissive")
        except pa.ArrowException:
            return None

    return Touched(tuple(positions), keys)


class Refresher:
    """Runs analyses. Stateless apart from its settings: called on the analysis threads,
    one run per analysis at a time; takes the registry's lock for an analysis's Changes
    and to replace its shape (the notices read it)."""

    def __init__(
        self,
        lock: threading.Lock,
        commit_lock: Callable[[], threading.Lock],
        committed_seq: Callable[[], int],
        clock: Clock,
        on_new_shape: Callable[[], None] = lambda: None,
        distinct_limit: int = DISTINCT_LIMIT,
        lake: LakeFeed | None = None,
        catalogue: Catalogue | None = None,
        settings: Epoch | None = None,
    ) -> None:
        self._lake = lake  # a lake's change feed: its analyses refresh from it
        self._catalogue = catalogue  # the function catalogue kept between plans
        self._distinct_limit = distinct_limit
        self._lock = lock  # the registry's
        self._committed_seq = committed_seq
        self._on_new_shape = on_new_shape  # publishes the capture set again
        if settings is None:  # nothing moves it: read the settings at every run
            settings = Epoch(unseen=lambda: True)
        self._settings = settings
        self._pinned = Pinned(lock, commit_lock, committed_seq, clock, settings)
        self.copies = self._pinned.copies  # joins' copies of their dimensions (joins.py)

    def run(self, analysis: Analysis) -> tuple[pa.Table, int]:
        """The new result table and the writer commits it reflects at least."""
        table, watermark = self._run(analysis)
        shape = analysis.state.shape
        if shape.plan is not None:  # UHUGEINT, BIGNUM: see wide.py
            table = repair(table, named_types(shape.types))
        return table, watermark

    def difference(
        self, analysis: Analysis, previous: Result | None, table: pa.Table
    ) -> tuple[pa.Table, bool]:
        """The rows of ``table`` that changed since ``previous`` (see
        :func:`duckflock.live.changes.difference`), on the analysis's cursor; the whole
        table as a snapshot when DuckDB cannot compare them."""
        old = None if previous is None else previous.table
        try:
            return difference(analysis.state.cursor, old, table, analysis.state.touched)
        except duckdb.Error as exc:
            log.warning("analysis %r: its changes are a snapshot: %s", analysis.name, exc)
            return signed(table, 1), True
        except Exception:  # a bug must not kill the analysis thread: the whole result
            log.exception("analysis %r: computing its changes failed", analysis.name)
            return signed(table, 1), True

    def _run(self, analysis: Analysis) -> tuple[pa.Table, int]:
        analysis.state.touched = None  # set by the runs that know which groups changed
        analysis.check()
        if analysis.state.shape.plan is not None:
            self._settled(analysis)
        if analysis.changes.reinspect:
            self._reinspect(analysis)
        run, spec = analysis.state, analysis.spec
        plan = run.shape.plan
        if self._lake is not None and plan is not None and self._lake.describes(run.shape):
            if run.shape.window is None:
                return self._fed(analysis, plan)
            self._lake.window(analysis)
        if plan is not None and run.shape.window is not None:
            return self._windowed(analysis, plan)
        if plan is not None:
            return self._incremental(analysis, plan)
        watermark = self._committed_seq()
        run.mode, run.reason = Mode.FULL, run.shape.reason
        cursor = run.cursor.execute(spec.sql, spec.params)
        return repair(cursor.to_arrow_table(), description_types(cursor)), watermark

    def _settled(self, analysis: Analysis) -> None:
        """Plan again and rebuild a state whose result settings (a time zone, a
        collation…) changed since it was built, where the settings epoch moved
        (:class:`~duckflock.core.effects.Epoch`): the notice of a global ``SET`` comes
        after it lands, and a fold in between would mix two zones. Once a raw cursor was
        handed out, a change may land unseen: the settings are read every time, as the
        window's bound reads them (:meth:`Epoch.current <duckflock.core.effects.Epoch.current>`)."""
        run = analysis.state
        epoch = self._settings.current()
        if epoch is not None and epoch == run.settings_epoch:
            return
        now = values(run.cursor)  # after the epoch: a change after it moves it again
        if run.settings is not None and now != run.settings:
            why = f"{', '.join(changed_settings(run.settings, now))} changed"
            with self._lock:
                analysis.changes.reinspect = True
                analysis.changes.taint(why)
        run.settings, run.settings_epoch = now, epoch

    def _reinspect(self, analysis: Analysis) -> None:
        """Plan the SQL again after a write outside db.insert: DDL may have changed a
        column's type (the plan casts to the types it found), what a view reads, or
        whether the shape is incremental at all. The state is rebuilt either way."""
        run, changes = analysis.state, analysis.changes
        with self._lock:
            # cleared before inspecting, not after: a write (CREATE OR REPLACE VIEW…) that
            # lands while this inspects sets it again, and the next run looks again
            changes.reinspect = False
        try:
            shape = inspect(
                run.cursor,
                analysis.spec.sql,
                params=analysis.spec.params,
                distinct_limit=self._distinct_limit,
                catalogue=self._catalogue,
            )
        except BaseException:
            with self._lock:
                changes.reinspect = True
            raise
        with self._lock:
            old = run.shape
            run.shape = shape
            run.state = None
            run.snapshot = None  # the lake snapshot that state described
            run.fast = True
            if shape.plan is not None:
                changes.taint(changes.tainted or "the table changed: the state is rebuilt")
        if (old.plan is None) != (shape.plan is None) or (
            old.plan is not None and shape.plan is not None and old.plan.table != shape.plan.table
        ):
            self._on_new_shape()

    def _rebuilding(self, analysis: Analysis) -> str | None:
        """Why the state must be built from the whole table, or None."""
        with self._lock:
            if analysis.state.state is None or analysis.changes.tainted is not None:
                return analysis.changes.tainted or FIRST
        return None

    def _incremental(self, analysis: Analysis, plan: Plan) -> tuple[pa.Table, int]:
        run, changes = analysis.state, analysis.changes
        why = self._rebuilding(analysis)
        if why is not None:
            state, table, watermark = self._pinned.rebuild(analysis, plan)
            run.mode, run.reason = Mode.FULL, f"full: {why}"
        else:
            with self._lock:
                # in one hold: rows appended after a DELETE are never folded without it
                deleting = bool(changes.removed)
                if not deleting:
                    deltas, _, watermark = changes.take()
            if deleting:
                return self._retract(analysis, plan)
            state, table = run.state, run.last_table
            if deltas:
                try:
                    delta = deltas[0] if len(deltas) == 1 else pa.concat_tables(deltas)
                except pa.ArrowInvalid:  # the table changed shape: start over
                    with self._lock:
                        changes.taint("the table's columns changed")
                    return self._incremental(analysis, plan)
                try:
                    folded = arrow_fold(analysis, plan, state, delta)
                    if folded is None:
                        analysis.check()
                        assert state is not None
                        if plan.joined:
                            folded = self._pinned.joined_fold(analysis, plan, state, delta)
                        else:
                            folded = merge_fold(analysis, plan, state, delta)
                    if folded is None:  # a joined table changed meanwhile: rebuild
                        return self._incremental(analysis, plan)
                    state, table = folded
                except BaseException:
                    # the taken rows are folded in nowhere now: rebuild from the table
                    with self._lock:
                        changes.taint(FAILED)
                    raise
            run.touched = touched(plan, deltas)
            run.mode = Mode.INCREMENTAL
            what = run.shape.reason.removeprefix("incremental: ")
            rows = sum(d.num_rows for d in deltas)
            run.reason = f"incremental: folded in {rows:,} rows; {what}"
        assert table is not None and state is not None
        return self._keep(analysis, plan, state, table, watermark)

    def _fed(self, analysis: Analysis, plan: Plan) -> tuple[pa.Table, int]:
        """An analysis of lake tables: refreshed from the lake's change feed."""
        assert self._lake is not None
        fed = self._lake.refresh(analysis, plan)
        if fed is None:  # the lake's catalog changed: plan again, then run
            return self._run(analysis)
        run = analysis.state
        run.mode = Mode.FULL if fed.full else Mode.INCREMENTAL
        run.reason = fed.reason
        run.touched = None if fed.full else touched(plan, [r for r in fed.rows if r.num_rows])
        return self._keep(analysis, plan, fed.state, fed.table, fed.watermark)

    def _keep(
        self, analysis: Analysis, plan: Plan, state: pa.Table, table: pa.Table, watermark: int
    ) -> tuple[pa.Table, int]:
        """Keep the new state, unless it grew too big to keep (then the next runs are full)."""
        run, changes = analysis.state, analysis.changes
        too_big = plan.oversized(state)
        if too_big is not None:  # this result is right; the next runs are full
            with self._lock:
                run.shape = run.shape.full(too_big)
                changes.taint(too_big)
            run.state, run.last_table = None, None
            run.mode, run.reason = Mode.FULL, too_big
            self._on_new_shape()
            return table, watermark
        run.state, run.last_table = state, table
        return table, watermark

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
                tainted = analysis.changes.tainted is not None
            if tainted:  # meanwhile: what was taken is no use, rebuild
                return self._incremental(analysis, plan)
            done = self._pinned.update(analysis, plan)
        table, watermark, appended, deleted = done
        run = analysis.state
        run.mode = Mode.INCREMENTAL
        run.reason = f"incremental: folded in {appended:,} rows, took out {deleted:,} deleted"
        return table, watermark

    def _subtract(self, analysis: Analysis, plan: Plan) -> tuple[pa.Table, int, int, int] | None:
        """The refresh by subtraction alone, as :meth:`Pinned.update` returns it; None
        when a group needs the table (the rows are put back, in order, unless the state
        was tainted meanwhile)."""
        assert plan.retract is not None
        run, changes = analysis.state, analysis.changes
        with self._lock:
            deltas, removed, watermark = changes.take()
        state = run.state
        assert state is not None
        empty = removed[0].slice(0, 0)  # the source table's columns, for outputs
        appended = sum(d.num_rows for d in deltas)
        try:
            if deltas:
                state, _ = fold_in(analysis, plan, state, pa.concat_tables(deltas))
            analysis.check()
            arrow = plan.arrow if run.fast else None
            settled = retract(run.cursor, plan.retract, state, removed, arrow, settle=False)
            if settled is not None:
                table = outputs(analysis, plan, settled, empty)
                run.state, run.last_table = settled, table
                run.touched = touched(plan, [*deltas, *removed])
                return table, watermark, appended, sum(r.num_rows for r in removed)
        except BaseException:
            with self._lock:
                changes.taint(FAILED)
            raise
        with self._lock:  # before whatever arrived since
            if changes.tainted is not None:
                return None
            changes.put_back(deltas, removed)
        return None

    def _windowed(self, analysis: Analysis, plan: Plan) -> tuple[pa.Table, int]:
        """A sliding window (windows.py): the bucketed state brought up to date, then
        combined at this run's instant."""
        run = analysis.state
        why = self._rebuilding(analysis)
        if why is not None:
            run.state, _, _ = self._pinned.rebuild(analysis, plan)
        table, watermark, appended, deleted = self._pinned.update(analysis, plan)
        run.mode = Mode.INCREMENTAL if why is None else Mode.FULL
        run.reason = (
            f"full: {why}"
            if why is not None
            else f"incremental: window at {run.window_now}, folded in {appended:,} rows"
            + (f", took out {deleted:,} deleted" if deleted else "")
        )
        return table, watermark
