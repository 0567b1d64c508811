"""Live analyses: registered SQL that re-runs itself, cached results, watch/subscribe.

A scheduler thread (``duckflock-scheduler``) decides when each analysis is due — every
``every`` seconds, and/or after commits that touched a table it reads, debounced by
``min_interval`` — and hands it to a pool of analysis threads (``duckflock-analysis-N``,
``max_concurrent`` of them). Due analyses go out oldest-due first, so with N threads one
slow analysis cannot keep the others from refreshing. Each analysis runs on a DuckDB
cursor of its own; DuckDB's MVCC means it never blocks the writer. Results are cached
(reading one never runs a query) and pushed to every mailbox of the analysis.

Every run has a time limit (``timeout``). The scheduler thread is also the watchdog: at
a run's deadline it interrupts that analysis's cursor (and only that one), and repeats
the interrupt until the run ends; the run publishes a :class:`QueryTimeoutError` result
that keeps the last good table. Dropping or replacing a running analysis, and
``close()``, interrupt it the same way, and nothing it computed is published.

Append-only aggregates refresh incrementally (:mod:`duckflock.live.refresh`): the writer
hands over the rows it stored (``INSERT … RETURNING *``) for the tables such analyses
read — the capture set, which is published to the writer under this scheduler's lock
together with the definition change that alters it — and a refresh folds only those
into the kept state. A DELETE through ``db.execute`` hands over the rows it deleted
(:mod:`duckflock.live.fold.retention`), which a refresh takes out of the state. Any other write to
the database through duckflock (UPDATE, a raw INSERT, DDL, a DELETE that could not be
captured) taints the state, and the next refresh rebuilds it from the whole table — a
full run, shown in ``analyses()``. Writes that bypass the Database (another
process, an explicit ``db.cursor()``) are not seen: use ``db.execute`` for them.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from duckflock.core.checks import count, seconds
from duckflock.core.names import Identity
from duckflock.errors import (
    ClosedError,
    QueryError,
    QueryTimeoutError,
    ResultTimeoutError,
    UnknownAnalysisError,
    translate,
)
from duckflock.live.plan.incremental import inspect
from duckflock.live.plan.plans import DISTINCT_LIMIT
from duckflock.live.refresh import Analysis, Cancelled, Refresher, taint
from duckflock.live.results import Mailbox, Result, Subscription, async_mailbox, log

DEFAULT_TIMEOUT = 60.0  # seconds one run of an analysis may take, unless told otherwise
DEFAULT_WORKERS = 2  # analysis threads: one slow analysis leaves the others a thread
REINTERRUPT = 0.05  # seconds between interrupts of a run that has not stopped yet
MAX_WORKERS = 64  # analysis threads per Database
EVERY_FLOOR = 0.01  # seconds: a shorter interval is a busy loop, not a schedule
TIMEOUT_FLOOR = 0.01  # seconds: the shortest time limit a run may have


class Scheduler:
    """Keeps analyses fresh; one per Database, started by its first analysis."""

    def __init__(
        self,
        *,
        new_cursor: Callable[[], duckdb.DuckDBPyConnection],
        close_cursor: Callable[[duckdb.DuckDBPyConnection], None],
        commit_lock: Callable[[], threading.Lock],
        committed_seq: Callable[[], int],
        on_capture_change: Callable[[frozenset[Identity]], None],
        max_concurrent: int = DEFAULT_WORKERS,
        default_timeout: float = DEFAULT_TIMEOUT,
        max_delta_rows: int = 2_000_000,
        distinct_limit: int = DISTINCT_LIMIT,
    ) -> None:
        self._distinct_limit = distinct_limit
        self._max_concurrent = max_concurrent  # both checked by Database (connect)
        self._default_timeout = default_timeout
        self._new_cursor = new_cursor
        self._close_cursor = close_cursor
        self._committed_seq = committed_seq
        self._on_capture_change = on_capture_change
        self._max_delta_rows = max_delta_rows
        # guards every Analysis's mutable fields, _analyses, _running, _busy, _next_wake,
        # _stopping and the capture set published to the writer; _wake wakes the
        # scheduler thread (and close()), _published wakes result()/refresh() waiters
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._published = threading.Condition(self._lock)
        self._analyses: dict[str, Analysis] = {}
        self._running: set[Analysis] = set()  # dispatched and not finished, dropped or not
        self._busy = 0
        self._next_wake = math.inf  # when the waiting scheduler thread wakes by itself
        self._stopping = False
        self._refresher = Refresher(
            self._lock,
            commit_lock,
            committed_seq,
            on_new_shape=self.publish_capture,
            distinct_limit=distinct_limit,
        )
        self._jobs: queue.SimpleQueue[Analysis | None] = queue.SimpleQueue()
        self._subscriptions: set[Subscription] = set()
        self._thread = threading.Thread(target=self._run, name="duckflock-scheduler", daemon=True)
        self._workers = [
            threading.Thread(target=self._work, name=f"duckflock-analysis-{i}", daemon=True)
            for i in range(self._max_concurrent)
        ]
        self._thread.start()
        for worker in self._workers:
            worker.start()

    # -- definitions -------------------------------------------------------------------

    def define(
        self,
        name: str,
        sql: str,
        *,
        every: float | None,
        on_change: bool,
        min_interval: float,
        params: Any,
        timeout: float | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("an analysis needs a non-empty name")
        if not isinstance(sql, str):
            raise TypeError(f"sql must be a str, not {type(sql).__name__}")
        if not isinstance(on_change, bool):
            raise TypeError(f"on_change must be True or False, not {on_change!r}")
        # None means no interval / the default limit here, not "no limit": checked apart
        if every is not None:
            every = seconds(every, "every", minimum=EVERY_FLOOR, optional=False)
        interval = seconds(min_interval, "min_interval", optional=False)
        if timeout is not None:
            timeout = seconds(timeout, "timeout", minimum=TIMEOUT_FLOOR, optional=False)
        assert interval is not None
        cursor = self._new_cursor()
        try:
            shape = inspect(cursor, sql, params=params, distinct_limit=self._distinct_limit)
        except BaseException:
            self._close_cursor(cursor)
            raise
        analysis = Analysis(
            name,
            sql,
            params,
            every,
            on_change,
            interval,
            self._default_timeout if timeout is None else timeout,
            shape,
            cursor,
        )
        with self._lock:
            if self._stopping:
                self._close_cursor(cursor)
                raise ClosedError("the database is closed")
            old = self._analyses.get(name)
            if old is not None:
                analysis.version = old.version
                analysis.mailboxes = old.mailboxes
                self._retire(old, "replaced")
            self._analyses[name] = analysis
            # before the first run can be dispatched (which needs this lock): the writer
            # must capture before that run pins its snapshot, or rows committed in between
            # would be in neither the snapshot nor the deltas
            self._publish_capture()
            self._published.notify_all()  # result() waiters now follow the replacement
            self._wake.notify()

    def drop(self, name: str) -> None:
        with self._lock:
            analysis = self._get(name)
            del self._analyses[name]
            self._retire(analysis, "dropped")
            mailboxes = list(analysis.mailboxes)
            self._publish_capture()
            self._published.notify_all()  # result(min_version=…) waiters: it is gone
        for mailbox in mailboxes:
            mailbox.close()

    def _retire(self, analysis: Analysis, why: str) -> None:
        """No more runs of ``analysis``; a run in progress is interrupted. Holds the lock."""
        analysis.dropped = True
        if analysis.running:
            self._cancel(analysis, why)
        else:
            self._close_cursor(analysis.cursor)

    def _cancel(self, analysis: Analysis, why: str) -> None:
        """Stop the run of ``analysis`` now; the watchdog repeats it. Holds the lock."""
        if analysis.cancel is None:
            analysis.cancel = why
        self._interrupt(analysis)
        analysis.deadline = time.monotonic() + REINTERRUPT
        if analysis.deadline < self._next_wake:
            self._wake.notify()

    @staticmethod
    def _interrupt(analysis: Analysis) -> None:
        with contextlib.suppress(duckdb.Error):  # the run ended and closed it meanwhile
            analysis.cursor.interrupt()

    def _publish_capture(self) -> None:
        """Tell the writer which tables to capture; the caller holds the lock.

        Computed and handed over under the lock, so two definition changes cannot
        publish out of order and leave an analysis without its rows.
        """
        self._on_capture_change(self._capture())

    def publish_capture(self) -> None:
        """Publish the capture set again (a writer was just created)."""
        with self._lock:
            self._publish_capture()

    def _capture(self) -> frozenset[Identity]:
        return frozenset(
            a.shape.plan.table for a in self._analyses.values() if a.shape.plan is not None
        )

    def capture(self) -> frozenset[Identity]:
        """The tables whose stored rows incremental analyses need."""
        with self._lock:
            return self._capture()

    def statuses(self) -> list[dict[str, Any]]:
        with self._lock:
            return [a.status() for a in self._analyses.values()]

    def _get(self, name: str) -> Analysis:
        analysis = self._analyses.get(name)
        if analysis is None:
            raise UnknownAnalysisError(name)
        return analysis

    def _check_open(self) -> None:
        if self._stopping:
            raise ClosedError("the database is closed")

    # -- results -----------------------------------------------------------------------

    def result(
        self, name: str, min_version: int | None = None, timeout: float | None = None
    ) -> Result | None:
        """The latest result; with ``min_version``, wait for a result at least that new.

        Waiting follows the name: after a replacement only the replacement's results
        count (its versions continue the old numbers). Ends early on drop or close.
        """
        wanted = None if min_version is None else count(min_version, "min_version")
        limit = seconds(timeout, "timeout")
        with self._lock:
            analysis = self._get(name)
            if wanted is None:
                return analysis.result

            def reached(current: Analysis) -> bool:
                result = current.result
                return result is not None and result.version >= wanted

            return self._wait(name, reached, limit, f"version {wanted} or later")

    def refresh(self, name: str, timeout: float | None = None) -> Result:
        """Run ``name`` now (after any run in progress) and return its new result.

        Without a timeout the wait is still bounded: by the analysis's own time limit
        (its run is interrupted then) and those of the runs queued before it.
        """
        limit = seconds(timeout, "timeout")
        with self._lock:
            self._check_open()
            analysis = self._get(name)
            # a run in progress may have read the data before this call: wait for a run
            # dispatched after it (counted by runs, not versions: a run in progress may
            # already have published while its thread is still finishing)
            target = analysis.runs + 1
            if not analysis.running and self._busy < self._max_concurrent:
                self._dispatch(analysis, time.monotonic())  # straight to a worker
                if analysis.deadline < self._next_wake:
                    self._wake.notify()  # the watchdog must know the new deadline (rare)
            else:
                analysis.forced = True
                self._wake.notify()

            def fresh(current: Analysis) -> bool:
                result = current.result
                if result is None:
                    return False
                # a replacement defined after this call ran after it, whatever its version
                return current is not analysis or current.published_run >= target

            return self._wait(name, fresh, limit, "a run started after refresh()")

    def _wait(
        self, name: str, done: Callable[[Analysis], bool], timeout: float | None, wanted: str
    ) -> Result:
        """Wait (holding the lock) until the analysis now called ``name`` is ``done``."""

        def ready() -> bool:
            current = self._analyses.get(name)
            return self._stopping or current is None or done(current)

        self._published.wait_for(ready, timeout=timeout)
        self._check_open()
        current = self._get(name)  # dropped meanwhile: UnknownAnalysisError
        if done(current):
            assert current.result is not None
            return current.result
        raise ResultTimeoutError(
            f"analysis {name!r} had no result of {wanted} within {timeout} s "
            f"(it is at version {current.version})"
        )

    def _attach(self, name: str, mailbox: Mailbox) -> None:
        with self._lock:
            self._check_open()
            analysis = self._get(name)
            analysis.mailboxes.add(mailbox)
            if analysis.result is not None:
                mailbox.put(analysis.result)

    def _detach(self, mailbox: Mailbox) -> None:
        with self._lock:
            for analysis in self._analyses.values():
                analysis.mailboxes.discard(mailbox)

    def watch(self, name: str) -> Iterator[Result]:
        """The current result (if any), then each new version; ends on drop or close."""
        mailbox = Mailbox()
        self._attach(name, mailbox)
        return self._iterate(mailbox)

    def _iterate(self, mailbox: Mailbox) -> Iterator[Result]:
        try:
            seen = 0
            while (result := mailbox.get(seen)) is not None:
                seen = result.version
                yield result
        finally:
            self._detach(mailbox)

    async def watch_async(self, name: str) -> AsyncIterator[Result]:
        """``watch`` for asyncio: ``async for result in db.watch_async(name)``."""
        mailbox, event = async_mailbox()
        self._attach(name, mailbox)
        try:
            seen = 0
            while True:
                result = mailbox.newer(seen)
                if result is not None:
                    seen = result.version
                    yield result
                    continue
                if mailbox.closed:
                    return
                await event.wait()
                event.clear()
        finally:
            self._detach(mailbox)

    def subscribe(self, name: str, callback: Callable[[Result], Any]) -> Subscription:
        if not callable(callback):
            raise TypeError("callback must be callable")
        mailbox = Mailbox()
        self._attach(name, mailbox)
        subscription = Subscription(name, callback, mailbox, self._unsubscribe)
        with self._lock:
            self._subscriptions.add(subscription)
        return subscription

    def _unsubscribe(self, mailbox: Mailbox) -> None:
        self._detach(mailbox)
        with self._lock:
            self._subscriptions = {s for s in self._subscriptions if s._mailbox is not mailbox}

    # -- change notices ----------------------------------------------------------------

    def on_commit(
        self, seq: int, tables: set[Identity], stored: list[tuple[Identity, pa.Table]]
    ) -> None:
        """The writer committed rows into ``tables`` (called under its commit lock)."""
        now = time.monotonic()
        with self._lock:
            for analysis in self._analyses.values():
                if not analysis.shape.reads.touches(tables):
                    continue
                if analysis.on_change and analysis.dirty_at is None:
                    analysis.dirty_at = now
                plan = analysis.shape.plan
                if plan is None or not analysis.collecting or analysis.tainted:
                    continue
                if not plan.joined.isdisjoint(tables):
                    # new dimension rows would join the fact rows already folded in
                    changed = sorted(t.display() for t in plan.joined & tables)
                    taint(analysis, f"a write to the joined {', '.join(changed)}")
                    continue
                handed = False
                for table, rows in stored:
                    if table == plan.table:
                        analysis.deltas.append(rows)
                        analysis.delta_rows += rows.num_rows
                        handed = True
                if plan.table in tables and not handed:
                    # rows landed in its table but the writer did not capture them
                    taint(analysis, "a commit's rows were not handed over")
                    continue
                analysis.delta_watermark = seq
                if analysis.delta_rows > self._max_delta_rows:
                    taint(analysis, f"over {self._max_delta_rows:,} rows between refreshes")
            self._wake.notify()

    @property
    def max_delta_rows(self) -> int:
        """Rows an incremental analysis keeps between refreshes before it rebuilds."""
        return self._max_delta_rows

    def retains(self, table: Identity) -> bool:
        """Whether an incremental analysis reads ``table`` (its deletes are worth capturing)."""
        with self._lock:
            return any(
                a.shape.plan is not None and a.shape.plan.table == table
                for a in self._analyses.values()
            )

    def on_delete(self, table: Identity, rows: pa.Table | None) -> None:
        """A DELETE through the Database committed ``rows`` out of ``table`` (None: they
        were not captured). Called under the commit lock, like :meth:`on_commit`."""
        now = time.monotonic()
        with self._lock:
            for analysis in self._analyses.values():
                if not analysis.shape.reads.touches({table}):
                    continue
                if analysis.on_change and analysis.dirty_at is None:
                    analysis.dirty_at = now
                plan = analysis.shape.plan
                if plan is None or not analysis.collecting or analysis.tainted:
                    continue
                if rows is None or plan.retract is None or plan.table != table:
                    taint(analysis, "a DELETE whose rows could not be taken out one by one")
                    continue
                if rows.num_rows:
                    analysis.removed.append(rows)
                    analysis.removed_rows += rows.num_rows
                if analysis.delta_rows + analysis.removed_rows > self._max_delta_rows:
                    taint(analysis, f"over {self._max_delta_rows:,} rows between refreshes")
            self._wake.notify()

    def on_lost_notice(self) -> None:
        """A commit notice could not be handled: no incremental state can be trusted."""
        with self._lock:
            for analysis in self._analyses.values():
                if analysis.shape.plan is not None:
                    taint(analysis, "a commit notice was lost")
                if analysis.on_change and analysis.dirty_at is None:
                    analysis.dirty_at = time.monotonic()
            self._wake.notify()

    def on_reopen(self) -> None:
        """The database was reopened: every analysis's cursor belonged to the old
        instance, and rows captured for incremental states may be lost with it."""
        now = time.monotonic()
        with self._lock:
            for analysis in self._analyses.values():
                analysis.reinspect = True
                if analysis.running:
                    analysis.stale_cursor = True  # swapped when the run ends
                else:
                    analysis.cursor = self._new_cursor()
                if analysis.shape.plan is not None:
                    taint(analysis, "the database was reopened")
                if analysis.on_change and analysis.dirty_at is None:
                    analysis.dirty_at = now
            self._wake.notify()

    def on_catalog_change(self, changed: frozenset[Identity], why: str) -> None:
        """DDL created, dropped or redefined ``changed`` (by identity): the analyses
        that read one of them, or a name one of them has (a new object may shadow
        what they read), plan again and rebuild; the others keep their states."""
        names = {identity.name.lower() for identity in changed}

        def reads_it(analysis: Analysis) -> bool:
            reads = analysis.shape.reads
            objects = reads.tables | reads.views
            return (
                reads.any_table
                or not objects.isdisjoint(changed)
                or not names.isdisjoint(o.name.lower() for o in objects)
            )

        self._stale(why, replan=True, which=reads_it)

    def on_raw_write(
        self,
        why: str = "a write outside db.insert (UPDATE, DELETE, raw INSERT)",
        *,
        replan: bool = True,
    ) -> None:
        """A write that did not go through db.insert (or another process's commit into a
        lake): incremental states are stale. ``replan``: it may have changed the catalog
        (DDL may have changed types, views, shapes); rows alone need no new plan."""
        self._stale(why, replan=replan, which=lambda analysis: True)

    def _stale(self, why: str, *, replan: bool, which: Callable[[Analysis], bool]) -> None:
        """Mark ``which`` analyses to run again (``replan``: planned again first), their
        incremental states to rebuild, for ``why``."""
        now = time.monotonic()
        with self._lock:
            for analysis in self._analyses.values():
                if not which(analysis):
                    continue
                if replan:
                    analysis.reinspect = True
                if analysis.on_change and analysis.dirty_at is None:
                    analysis.dirty_at = now
                if analysis.shape.plan is not None:
                    taint(analysis, why)
            self._wake.notify()

    # -- the scheduler thread (dispatch and watchdog) and the analysis threads ---------

    def _run(self) -> None:
        with self._lock:
            while not self._stopping:
                now = time.monotonic()
                wake = self._watch(now)
                due = sorted(
                    (at, a.name) for a in self._analyses.values() if (at := a.due_at()) is not None
                )
                for at, name in due:
                    if at > now:
                        wake = min(wake, at)
                        break
                    if self._busy >= self._max_concurrent:
                        break  # a finishing worker wakes us
                    analysis = self._analyses[name]
                    self._dispatch(analysis, now)
                    wake = min(wake, analysis.deadline)
                # never sleep past the shortest time limit: a run that refresh() hands
                # straight to a worker then needs no wake-up of this thread to be watched
                # (its deadline is later than our next look), which keeps refresh() fast
                shortest = min((a.timeout for a in self._analyses.values()), default=math.inf)
                wake = min(wake, now + shortest)
                self._next_wake = wake
                self._wake.wait(None if wake == math.inf else max(0.0, wake - now))

    def _watch(self, now: float) -> float:
        """Interrupt each run past its deadline; when to look again. Holds the lock."""
        wake = math.inf
        for analysis in self._running:
            if now >= analysis.deadline:
                if analysis.cancel is None:
                    analysis.cancel = "timeout"
                self._interrupt(analysis)
                analysis.deadline = now + REINTERRUPT
            wake = min(wake, analysis.deadline)
        return wake

    def _dispatch(self, analysis: Analysis, now: float) -> None:
        """Hand ``analysis`` to an analysis thread; the caller holds the lock."""
        analysis.running = True
        analysis.last_started = now
        analysis.dirty_at = None
        analysis.forced = False
        analysis.runs += 1
        analysis.cancel = None
        analysis.deadline = now + analysis.timeout
        self._busy += 1
        self._running.add(analysis)
        self._jobs.put(analysis)

    def _work(self) -> None:
        while (analysis := self._jobs.get()) is not None:
            try:
                self._refresh(analysis)
            finally:
                with self._lock:
                    analysis.running = False
                    self._busy -= 1
                    self._running.discard(analysis)
                    if analysis.dropped:
                        self._close_cursor(analysis.cursor)
                    elif analysis.stale_cursor:
                        analysis.stale_cursor = False
                        analysis.cursor = self._new_cursor()
                    self._wake.notify_all()  # the scheduler thread, and close()

    def _refresh(self, analysis: Analysis) -> None:
        started = time.perf_counter()
        error: QueryError | None = None
        table: pa.Table | None = None
        try:
            table, watermark = self._refresher.run(analysis)
        except Cancelled:
            watermark = self._committed_seq()
        except duckdb.Error as exc:
            error = translate(exc, sql=analysis.sql)
            watermark = self._committed_seq()
        except QueryError as exc:
            error, watermark = exc, self._committed_seq()
        except Exception as exc:  # a bug must not kill the analysis thread: record it
            log.exception("refreshing analysis %r failed", analysis.name)
            error = QueryError(f"refresh failed: {type(exc).__name__}: {exc}", sql=analysis.sql)
            watermark = self._committed_seq()
        duration = time.perf_counter() - started
        with self._lock:
            cancel = analysis.cancel
        if cancel == "timeout":
            if table is None:  # a run that finished as its time ran out keeps its table
                error = QueryTimeoutError(
                    f"analysis {analysis.name!r} ran past its time limit of "
                    f"{analysis.timeout:g} s and was interrupted",
                    sql=analysis.sql,
                )
        elif cancel is not None:
            return  # dropped, replaced or closing: its result is nobody's
        self._publish(analysis, table, error, duration, watermark)

    def _publish(
        self,
        analysis: Analysis,
        table: pa.Table | None,
        error: QueryError | None,
        duration: float,
        watermark: int,
    ) -> None:
        with self._lock:
            if analysis.dropped and self._analyses.get(analysis.name) is not analysis:
                return  # replaced or dropped while it ran
            if table is None:
                previous = analysis.result
                table = previous.table if previous is not None else pa.table({})
            analysis.version += 1
            analysis.published_run = analysis.runs  # no other run starts while one runs
            result = Result(
                name=analysis.name,
                table=table,
                version=analysis.version,
                refreshed_at=datetime.now(UTC),
                duration=duration,
                watermark=watermark,
                mode=analysis.mode or "full",
                error=error,
                reason=analysis.reason or analysis.shape.reason,
                now=analysis.window_now if analysis.shape.window is not None else None,
            )
            analysis.result = result
            mailboxes = list(analysis.mailboxes)
            self._published.notify_all()
        for mailbox in mailboxes:
            mailbox.put(result)

    # -- lifecycle ---------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Interrupt running analyses, stop the threads, end watchers and subscriptions.

        Bounded by ``timeout`` in all (plus whatever a subscriber's callback is doing
        when it runs out: callbacks cannot be interrupted, their threads are daemons).
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            analyses = list(self._analyses.values())
            for analysis in analyses:
                analysis.dropped = True
            for analysis in self._running:
                analysis.cancel = analysis.cancel or "closing"
            self._wake.notify_all()
            self._published.notify_all()
            subscriptions = list(self._subscriptions)
            # the scheduler thread is leaving: interrupt here until every run has ended
            while self._busy and (left := deadline - time.monotonic()) > 0:
                for analysis in self._running:
                    self._interrupt(analysis)
                self._wake.wait(min(REINTERRUPT, left))
        for _ in self._workers:
            self._jobs.put(None)
        for thread in (self._thread, *self._workers):
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for analysis in analyses:
                if not analysis.running:  # a run that outlived the bound closes its own
                    self._close_cursor(analysis.cursor)
        for analysis in analyses:
            for mailbox in list(analysis.mailboxes):
                mailbox.close()
        for subscription in subscriptions:
            subscription.cancel(max(0.0, deadline - time.monotonic()))
