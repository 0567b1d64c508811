"""Live analyses: registered SQL that re-runs itself, cached results, watch/subscribe.

A scheduler thread (``duckflock-scheduler``) decides when each analysis is due — every
``every`` seconds, and/or after commits that touched a table it reads, debounced by
``min_interval`` — and hands it to a pool of analysis threads (``duckflock-analysis-N``,
``max_concurrent`` of them). Due analyses go out oldest-due first, so with N threads one
slow analysis cannot keep the others from refreshing. Each analysis runs on a DuckDB
cursor of its own; DuckDB's MVCC means it never blocks the writer. Results are cached
(reading one never runs a query) and pushed to every mailbox of the analysis
(:mod:`duckflock.live.subscriptions`).

Every run has a time limit (``timeout``). The scheduler thread is also the watchdog: at
a run's deadline it interrupts that analysis's cursor (and only that one), and repeats
the interrupt until the run ends; the run publishes a :class:`QueryTimeoutError` result
that keeps the last good table. Dropping or replacing a running analysis, and
``close()``, interrupt it the same way, and nothing it computed is published.

Append-only aggregates refresh incrementally (:mod:`duckflock.live.refresh`): the writer
hands over the rows it stored (``INSERT … RETURNING *``) for the tables such analyses
read — the capture set, which is published to the writer under the registry's lock
together with the definition change that alters it — and a refresh folds only those
into the kept state. A DELETE through ``db.execute`` hands over the rows it deleted
(:mod:`duckflock.live.fold.retention`), which a refresh takes out of the state. Any other
write through duckflock taints the state, and the next refresh rebuilds it from the whole
table (:mod:`duckflock.live.notices`). Writes that bypass the Database (another
process, an explicit ``db.cursor()``) are not seen: use ``db.execute`` for them. On a
DuckLake (``lake``) every write is a snapshot, and analyses of lake tables read their
rows from its change feed instead (:mod:`duckflock.live.lakefeed`).

Threads: the scheduler thread runs the dispatch and watchdog loop here; the analysis
threads run :class:`~duckflock.live.runs.Runs`; API callers run the rest. All of them
take the registry's lock (:class:`~duckflock.live.registry.Registry`) for every
:class:`~duckflock.live.record.Schedule`; a run's :class:`~duckflock.live.record.State`
belongs to its analysis thread.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import duckdb

from duckflock.core.checks import seconds
from duckflock.core.effects import Epoch
from duckflock.core.names import Identity
from duckflock.errors import ClosedError
from duckflock.live import clock as clocks
from duckflock.live.changes import KEEP_CHANGES, ChangeLog
from duckflock.live.fold import detached
from duckflock.live.lakefeed import LakeFeed
from duckflock.live.notices import Notices
from duckflock.live.plan.incremental import inspect
from duckflock.live.plan.plans import DISTINCT_LIMIT
from duckflock.live.record import Analysis, Changes, Schedule, Spec, State, Stop
from duckflock.live.refresh import Refresher
from duckflock.live.registry import Registry
from duckflock.live.results import Result
from duckflock.live.runs import REINTERRUPT, Runs, interrupt
from duckflock.live.subscriptions import Readers

DEFAULT_TIMEOUT = 60.0  # seconds one run of an analysis may take, unless told otherwise
DEFAULT_WORKERS = 2  # analysis threads: one slow analysis leaves the others a thread
MAX_WORKERS = 64  # analysis threads per Database
EVERY_FLOOR = 0.01  # seconds: a shorter interval is a busy loop, not a schedule
TIMEOUT_FLOOR = 0.01  # seconds: the shortest time limit a run may have

# the scheduler of each owner (a Database), for duckflock.live.internals; weak both ways
# (a scheduler's callbacks refer to its owner: a strong value would keep both alive)
_by_owner: weakref.WeakKeyDictionary[object, weakref.ref[Scheduler]] = weakref.WeakKeyDictionary()


def of(owner: object) -> Scheduler | None:
    """The scheduler created for ``owner`` (a Database), if it has one."""
    found = _by_owner.get(owner)
    return None if found is None else found()


class Scheduler:
    """Keeps analyses fresh; one per Database, started by its first analysis.

    ``owner``: the Database, for :mod:`duckflock.live.internals` (and the clock
    assigned to it there); the scheduler itself never uses it.
    """

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
        keep_changes: int = KEEP_CHANGES,
        owner: object = None,
        clock: clocks.Clock | None = None,
        lake: str | None = None,
        settings: Epoch | None = None,  # the Database's (None: read settings every run)
        raw_handed_out: Callable[[], bool] = lambda: False,
    ) -> None:
        self._distinct_limit = distinct_limit
        self._keep_changes = keep_changes
        self._default_timeout = default_timeout  # both checked by Database (connect)
        self._new_cursor = new_cursor
        self._close_cursor = close_cursor
        self._on_capture_change = on_capture_change
        self._clock = clocks.of(owner) if clock is None else clock
        self._registry = registry = Registry()
        self._next_wake = math.inf  # when the waiting scheduler thread wakes by itself
        self._notices = notices = Notices(
            registry, self._clock, new_cursor, max_delta_rows, lake, raw_handed_out
        )
        # on a lake (its catalog's name), incremental analyses refresh from its feed
        feed = None
        if lake is not None:
            feed = LakeFeed(lake, registry.lock, committed_seq, lambda: notices.max_delta_rows)
        self._readers = Readers(registry)
        refresher = Refresher(
            registry.lock,
            commit_lock,
            committed_seq,
            self._clock,
            on_new_shape=self.publish_capture,
            distinct_limit=distinct_limit,
            lake=feed,
            catalogue=self._notices.catalogue,
            settings=settings,
        )
        self._copies = refresher.copies  # closed with their analysis (joins.py)
        self._runs = Runs(
            registry,
            refresher,
            self._clock,
            committed_seq=committed_seq,
            new_cursor=new_cursor,
            close_cursor=close_cursor,
            max_concurrent=max_concurrent,
        )
        self._thread = threading.Thread(target=self._run, name="duckflock-scheduler", daemon=True)
        detached.attach(self)  # the fold queries' instances: closed after their last user
        self._thread.start()
        if owner is not None:
            _by_owner[owner] = weakref.ref(self)

    def detached_settings(self) -> set[detached.Settings]:
        """The settings its analyses' fold queries run under off the database
        (:mod:`duckflock.live.fold.detached`, which closes the instances no one uses)."""
        found: set[detached.Settings] = set()
        with self._registry.lock:
            for analysis in self._registry:
                plan = analysis.state.shape.plan
                if plan is not None and plan.detached is not None:
                    found.add(plan.detached)
                if plan is not None and plan.merge is not None and plan.merge.detached is not None:
                    found.add(plan.merge.detached)
        return found | self._copies.settings()

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
            shape = inspect(
                cursor,
                sql,
                params=params,
                distinct_limit=self._distinct_limit,
                catalogue=self._notices.catalogue,
            )
        except BaseException:
            self._close_cursor(cursor)
            raise
        limit = self._default_timeout if timeout is None else timeout
        spec = Spec(name, sql, params, every, on_change, interval, limit)
        analysis = Analysis(
            spec, Schedule(history=ChangeLog(self._keep_changes)), Changes(), State(shape, cursor)
        )
        registry = self._registry
        with registry.lock:
            if registry.stopping:
                self._close_cursor(cursor)
                raise ClosedError("the database is closed")
            old = registry.analyses.get(name)
            if old is not None:
                analysis.schedule.version = old.schedule.version
                analysis.schedule.mailboxes = old.schedule.mailboxes
                self._retire(old, Stop.REPLACED)
            registry.analyses[name] = analysis
            # before the first run can be dispatched (which needs this lock): the writer
            # must capture before that run pins its snapshot, or rows committed in between
            # would be in neither the snapshot nor the deltas
            self._publish_capture()
            registry.published.notify_all()  # result() waiters now follow the replacement
            registry.wake.notify()

    def drop(self, name: str) -> None:
        registry = self._registry
        with registry.lock:
            analysis = registry.get(name)
            del registry.analyses[name]
            self._retire(analysis, Stop.DROPPED)
            mailboxes = list(analysis.schedule.mailboxes)
            self._publish_capture()
            registry.published.notify_all()  # result(min_version=…) waiters: it is gone
        for mailbox in mailboxes:
            mailbox.close()

    def _retire(self, analysis: Analysis, why: Stop) -> None:
        """No more runs of ``analysis``; a run in progress is interrupted. Holds the lock."""
        analysis.schedule.dropped = True
        if analysis.schedule.running:
            self._cancel(analysis, why)
        else:
            self._close_cursor(analysis.state.cursor)
            self._copies.forget(analysis)

    def _cancel(self, analysis: Analysis, why: Stop) -> None:
        """Stop the run of ``analysis`` now; the watchdog repeats it. Holds the lock."""
        schedule = analysis.schedule
        if schedule.stop is None:
            schedule.stop = why
        interrupt(analysis)
        schedule.deadline = self._clock.monotonic() + REINTERRUPT
        if schedule.deadline < self._next_wake:
            self._registry.wake.notify()

    def _publish_capture(self) -> None:
        """Tell the writer which tables to capture; the caller holds the lock.

        Computed and handed over under the lock, so two definition changes cannot
        publish out of order and leave an analysis without its rows.
        """
        self._on_capture_change(self._capture())

    def publish_capture(self) -> None:
        """Publish the capture set again (a writer was just created)."""
        with self._registry.lock:
            self._publish_capture()

    def _capture(self) -> frozenset[Identity]:
        plans = (a.state.shape.plan for a in self._registry)
        return frozenset(plan.table for plan in plans if plan is not None)

    def capture(self) -> frozenset[Identity]:
        """The tables whose stored rows incremental analyses need."""
        with self._registry.lock:
            return self._capture()

    def statuses(self) -> list[dict[str, Any]]:
        with self._registry.lock:
            return [a.status() for a in self._registry]

    def analysis(self, name: str) -> Analysis:
        """The record of ``name`` (UnknownAnalysisError): for :mod:`~duckflock.live.internals`."""
        with self._registry.lock:
            return self._registry.get(name)

    # -- results -----------------------------------------------------------------------

    def refresh(self, name: str, timeout: float | None = None) -> Result:
        """Run ``name`` now (after any run in progress) and return its new result: on
        this thread when there is no ``timeout`` and a run may start at once
        (:meth:`Runs.run_here`), else on an analysis thread.

        Without a timeout the wait is still bounded: by the analysis's own time limit
        (its run is interrupted then) and those of the runs queued before it.
        """
        limit = seconds(timeout, "timeout")
        registry, runs = self._registry, self._runs
        here = False  # whether this thread runs it (Runs.run_here)
        with registry.lock:
            registry.check_open()
            analysis = registry.get(name)
            schedule = analysis.schedule
            # a run in progress may have read the data before this call: wait for a run
            # dispatched after it (counted by runs, not versions: a run in progress may
            # already have published while its thread is still finishing)
            target = schedule.runs + 1
            if not schedule.running and not runs.full:
                # straight to a worker; or, with no limit of the caller's own to keep, to
                # this thread, which would only wait for the run
                here = limit is None
                runs.dispatch(analysis, self._clock.monotonic(), here=here)
                if schedule.deadline < self._next_wake:
                    registry.wake.notify()  # the watchdog must know the new deadline (rare)
            else:
                schedule.forced = True
                registry.wake.notify()
        if here:
            runs.run_here(analysis)

        def fresh(current: Analysis) -> bool:
            if current.schedule.result is None:
                return False
            # a replacement defined after this call ran after it, whatever its version
            return current is not analysis or current.schedule.published_run >= target

        with registry.lock:
            return registry.wait(name, fresh, limit, "a run started after refresh()")

    @property
    def readers(self) -> Readers:
        """Who reads the results (``attach`` a mailbox of one's own)."""
        return self._readers

    @property
    def notices(self) -> Notices:
        """Where the Database reports writes: commits and deletes through it (called
        under its commit lock), raw writes, catalog changes, lost notices, reopening."""
        return self._notices

    # -- the scheduler thread: dispatch and watchdog -----------------------------------

    def _run(self) -> None:
        registry, runs = self._registry, self._runs
        with registry.lock:
            while not registry.stopping:
                now = self._clock.monotonic()
                wake = runs.watch(now)
                due = sorted(
                    (at, a.name) for a in registry if (at := a.schedule.due_at(a.spec)) is not None
                )
                for at, name in due:
                    if at > now:
                        wake = min(wake, at)
                        break
                    if runs.full:
                        break  # a finishing worker wakes us
                    analysis = registry.analyses[name]
                    runs.dispatch(analysis, now)
                    wake = min(wake, analysis.schedule.deadline)
                # never sleep past the shortest time limit: a run that refresh() hands
                # straight to a worker then needs no wake-up of this thread to be watched
                # (its deadline is later than our next look), which keeps refresh() fast
                shortest = min((a.spec.timeout for a in registry), default=math.inf)
                wake = min(wake, now + shortest)
                self._next_wake = wake
                registry.wake.wait(None if wake == math.inf else max(0.0, wake - now))

    # -- lifecycle ---------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Interrupt running analyses, stop the threads, end watchers and subscriptions.

        Bounded by ``timeout`` in all (plus whatever a subscriber's callback is doing
        when it runs out: callbacks cannot be interrupted, their threads are daemons).
        """
        deadline = time.monotonic() + timeout
        registry, runs = self._registry, self._runs
        with registry.lock:
            if registry.stopping:
                return
            registry.stopping = True
            analyses = list(registry)
            for analysis in analyses:
                analysis.schedule.dropped = True
            for analysis in runs.running:
                analysis.schedule.stop = analysis.schedule.stop or Stop.CLOSING
            registry.wake.notify_all()
            registry.published.notify_all()
            subscriptions = self._readers.subscriptions()
            # the scheduler thread is leaving: interrupt here until every run has ended
            while runs.busy and (left := deadline - time.monotonic()) > 0:
                for analysis in runs.running:
                    interrupt(analysis)
                registry.wake.wait(min(REINTERRUPT, left))
        runs.stop(deadline)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        with registry.lock:
            for analysis in analyses:
                if not analysis.schedule.running:  # a run that outlived the bound closes its own
                    self._close_cursor(analysis.state.cursor)
                    self._copies.forget(analysis)
        for analysis in analyses:
            for mailbox in list(analysis.schedule.mailboxes):
                mailbox.close()
        for subscription in subscriptions:
            subscription.cancel(max(0.0, deadline - time.monotonic()))
        detached.detach(self)
