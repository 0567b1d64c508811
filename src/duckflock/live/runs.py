"""The analysis threads and the runs in progress: dispatch, watchdog, publish.

The scheduler thread (:mod:`duckflock.live.scheduler`) decides which analysis runs when
and calls :meth:`Runs.dispatch`; one of the ``duckflock-analysis-N`` threads runs it
through the :class:`~duckflock.live.refresh.Refresher` and publishes the result to the
analysis's readers. :meth:`Runs.watch` is the watchdog: the scheduler thread calls it
on each look, and it interrupts every run past its deadline, again and again until the
run ends.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable

import duckdb
import pyarrow as pa

from duckflock.errors import QueryError, QueryTimeoutError, translate
from duckflock.live.changes import Change, Touched, signed
from duckflock.live.clock import Clock
from duckflock.live.record import Analysis, Cancelled, Stop
from duckflock.live.refresh import Refresher
from duckflock.live.registry import Registry
from duckflock.live.results import Mode, Result, log

REINTERRUPT = 0.05  # seconds between interrupts of a run that has not stopped yet


def interrupt(analysis: Analysis) -> None:
    """Interrupt the query ``analysis``'s cursor is running, if any (any thread)."""
    with contextlib.suppress(duckdb.Error):  # the run ended and closed it meanwhile
        analysis.state.cursor.interrupt()


class Runs:
    """The pool of analysis threads. ``running`` and ``busy`` are guarded by the
    registry's lock; the threads are started here and stopped by :meth:`stop`."""

    def __init__(
        self,
        registry: Registry,
        refresher: Refresher,
        clock: Clock,
        *,
        committed_seq: Callable[[], int],
        new_cursor: Callable[[], duckdb.DuckDBPyConnection],
        close_cursor: Callable[[duckdb.DuckDBPyConnection], None],
        max_concurrent: int,
    ) -> None:
        self._registry = registry
        self._refresher = refresher
        self._clock = clock
        self._committed_seq = committed_seq
        self._new_cursor = new_cursor
        self._close_cursor = close_cursor
        self.max_concurrent = max_concurrent
        self.running: set[Analysis] = set()  # dispatched and not finished, dropped or not
        self.busy = 0
        self._jobs: queue.SimpleQueue[Analysis | None] = queue.SimpleQueue()
        self._workers = [
            threading.Thread(target=self._work, name=f"duckflock-analysis-{i}", daemon=True)
            for i in range(max_concurrent)
        ]
        for worker in self._workers:
            worker.start()

    @property
    def full(self) -> bool:
        """Every analysis thread has a run (caller holds the lock)."""
        return self.busy >= self.max_concurrent

    def dispatch(self, analysis: Analysis, now: float, *, here: bool = False) -> None:
        """Hand ``analysis`` to an analysis thread; the caller holds the lock. ``here``:
        the calling thread runs it instead, by :meth:`run_here` right after releasing
        the lock (it counts as one of the ``max_concurrent`` runs all the same)."""
        schedule = analysis.schedule
        schedule.running = True
        schedule.last_started = now
        schedule.dirty_at = None
        schedule.forced = False
        schedule.runs += 1
        schedule.stop = None
        schedule.deadline = now + analysis.spec.timeout
        self.busy += 1
        self.running.add(analysis)
        if not here:
            self._jobs.put(analysis)

    def watch(self, now: float) -> float:
        """Interrupt each run past its deadline; when to look again. Holds the lock."""
        wake = float("inf")
        for analysis in self.running:
            schedule = analysis.schedule
            if now >= schedule.deadline:
                if schedule.stop is None:
                    schedule.stop = Stop.TIMEOUT
                interrupt(analysis)
                schedule.deadline = now + REINTERRUPT
            wake = min(wake, schedule.deadline)
        return wake

    def run_here(self, analysis: Analysis) -> None:
        """Run ``analysis``, dispatched ``here``, on the calling thread (not holding the
        lock): what an analysis thread would do with it. ``refresh()`` does this when its
        caller would only wait for the run: the rows are folded and the result published
        without waking a thread and being woken back (two hand-offs, 0.1 to 0.2 ms each).
        The watchdog, drop and close() interrupt it as they do any run."""
        try:
            self._refresh(analysis)
        finally:
            self._done(analysis)

    def _work(self) -> None:
        while (analysis := self._jobs.get()) is not None:
            try:
                self._refresh(analysis)
            finally:
                self._done(analysis)

    def _done(self, analysis: Analysis) -> None:
        """A run of ``analysis`` ended (published, failed or cancelled)."""
        registry = self._registry
        with registry.lock:
            schedule = analysis.schedule
            schedule.running = False
            was_full = self.full
            self.busy -= 1
            self.running.discard(analysis)
            if schedule.dropped:
                self._close_cursor(analysis.state.cursor)
                self._refresher.copies.forget(analysis)
            elif schedule.stale_cursor:
                schedule.stale_cursor = False
                analysis.state.cursor = self._new_cursor()
            # the scheduler thread (and close()) looks again only where it may have work:
            # a run it could not hand out while every thread was busy, this analysis due
            # again (an interval, a commit or refresh() while it ran), or close() waiting.
            # Waking it after every run cost a refresh a thread switch and a GIL hand-off.
            if was_full or registry.stopping or schedule.due_at(analysis.spec) is not None:
                registry.wake.notify_all()

    def _refresh(self, analysis: Analysis) -> None:
        spec = analysis.spec
        started = time.perf_counter()
        error: QueryError | None = None
        table: pa.Table | None = None
        try:
            table, watermark = self._refresher.run(analysis)
        except Cancelled:
            watermark = self._committed_seq()
        except duckdb.Error as exc:
            error = translate(exc, sql=spec.sql)
            watermark = self._committed_seq()
        except QueryError as exc:
            error, watermark = exc, self._committed_seq()
        except Exception as exc:  # a bug must not kill the analysis thread: record it
            log.exception("refreshing analysis %r failed", spec.name)
            error = QueryError(f"refresh failed: {type(exc).__name__}: {exc}", sql=spec.sql)
            watermark = self._committed_seq()
        duration = time.perf_counter() - started
        with self._registry.lock:
            stop = analysis.schedule.stop
            previous = analysis.schedule.result
            followed = analysis.schedule.history.followed(
                analysis.schedule.version,
                any(box.follows_changes for box in analysis.schedule.mailboxes),
            )
        if stop is Stop.TIMEOUT:
            if table is None:  # a run that finished as its time ran out keeps its table
                error = QueryTimeoutError(
                    f"analysis {spec.name!r} ran past its time limit of "
                    f"{spec.timeout:g} s and was interrupted",
                    sql=spec.sql,
                )
        elif stop is not None:
            return  # dropped, replaced or closing: its result is nobody's
        # a change is computed here only for a reader of changes (db.changes,
        # subscribe(changes=True), the SSE change stream): else Result.changes() computes
        # it when asked, and a refresh nobody follows pays nothing for it
        diff = (
            self._refresher.difference(analysis, previous, table)
            if table is not None and (followed or previous is None)
            else None
        )
        self._publish(analysis, table, error, duration, watermark, diff)

    def _publish(
        self,
        analysis: Analysis,
        table: pa.Table | None,
        error: QueryError | None,
        duration: float,
        watermark: int,
        diff: tuple[pa.Table, bool] | None,
    ) -> None:
        """Make the new version, keep its change, hand it to the readers. ``diff``: the
        rows that changed since the published result (None with a ``table``: not
        computed — nobody follows the changes; the history has a gap there and the
        result computes its change when asked)."""
        registry, schedule, run = self._registry, analysis.schedule, analysis.state
        with registry.lock:
            if schedule.dropped and registry.analyses.get(analysis.name) is not analysis:
                return  # replaced or dropped while it ran
            previous = schedule.result
            later: pa.Table | None = None  # the table a lazily computed change starts from
            touched: Touched | None = None  # and the groups the run changed (if known)
            if table is None:
                table = previous.table if previous is not None else pa.table({})
                diff = (signed(table.slice(0, 0), 1), previous is None)
            since = schedule.version
            schedule.version += 1
            change: Change | None = None
            if diff is not None:
                change = Change(
                    analysis.name, since, schedule.version, *diff, schedule.history.lineage
                )
                schedule.history.add(change)
            else:
                assert previous is not None
                later = previous.table
                touched = run.touched
                schedule.history.gap(schedule.version)
            schedule.published_run = schedule.runs  # no other run starts while one runs
            result = Result(
                name=analysis.name,
                table=table,
                version=schedule.version,
                refreshed_at=self._clock.now(),
                duration=duration,
                watermark=watermark,
                mode=run.mode or Mode.FULL,
                error=error,
                reason=run.reason or run.shape.reason,
                now=run.window_now if run.shape.window is not None else None,
                change=change,
                previous=later,
                touched=touched,
            )
            schedule.result = result
            mailboxes = list(schedule.mailboxes)
            registry.published.notify_all()
        for mailbox in mailboxes:
            mailbox.put(result)

    def stop(self, deadline: float) -> None:
        """End the analysis threads (after their runs), waiting until ``deadline``
        (``time.monotonic()`` seconds: waits are in real time) at most."""
        for _ in self._workers:
            self._jobs.put(None)
        for thread in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))
