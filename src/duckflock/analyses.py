"""Live analyses: registered SQL that re-runs itself, cached results, watch/subscribe.

A scheduler thread (``duckflock-scheduler``) decides when each analysis is due — every
``every`` seconds, and/or after commits that touched a table it reads, debounced by
``min_interval`` — and hands it to a small pool of analysis threads
(``duckflock-analysis-N``, ``max_concurrent`` of them, 1 by default so the writer keeps
a core). Each analysis runs on a DuckDB cursor of its own; DuckDB's MVCC means it never
blocks the writer. Results are cached (reading one never runs a query) and pushed to
every mailbox of the analysis.

Append-only aggregates refresh incrementally (:mod:`duckflock.incremental`): the writer
hands over the rows it stored (``INSERT … RETURNING *``) for the tables such analyses
read, and a refresh folds only those into the kept state. Any other write to the
database through duckflock (UPDATE, DELETE, a raw INSERT, DDL) taints the state, and the
next refresh rebuilds it from the whole table — a full run, shown in ``analyses()``.
Writes that bypass the Database (another process, an explicit ``db.cursor()``) are not
seen: use ``db.execute`` for them.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from .errors import ClosedError, QueryError, ResultTimeoutError, UnknownAnalysisError, translate
from .incremental import DELTA, STATE, Plan, Shape, inspect, split
from .names import Identity
from .results import Mailbox, Result, Subscription, async_mailbox, log


@dataclass(eq=False)
class Analysis:
    """One registered analysis and its scheduling state (guarded by the scheduler)."""

    name: str
    sql: str
    params: Any
    every: float | None
    on_change: bool
    min_interval: float
    shape: Shape
    cursor: duckdb.DuckDBPyConnection
    version: int = 0
    result: Result | None = None
    last_started: float | None = None
    dirty_at: float | None = None
    running: bool = False
    forced: bool = False  # refresh() asked for a run now
    dropped: bool = False
    # incremental: the kept state, rows stored since it was taken, and why to rebuild
    state: pa.Table | None = None
    last_table: pa.Table | None = None  # the result the state gave: reused when nothing new
    collecting: bool = False
    deltas: list[pa.Table] = field(default_factory=list)
    delta_rows: int = 0
    delta_watermark: int = 0
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
        max_concurrent: int = 1,
        max_delta_rows: int = 2_000_000,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, not {max_concurrent}")
        self._new_cursor = new_cursor
        self._close_cursor = close_cursor
        self._commit_lock = commit_lock
        self._committed_seq = committed_seq
        self._on_capture_change = on_capture_change
        self._max_concurrent = max_concurrent
        self._max_delta_rows = max_delta_rows
        # guards every Analysis's mutable fields, _analyses, _busy and _stopping;
        # _wake wakes the scheduler thread, _published wakes result(min_version=…)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._published = threading.Condition(self._lock)
        self._analyses: dict[str, Analysis] = {}
        self._busy = 0
        self._stopping = False
        self._jobs: queue.SimpleQueue[Analysis | None] = queue.SimpleQueue()
        self._subscriptions: set[Subscription] = set()
        self._thread = threading.Thread(target=self._run, name="duckflock-scheduler", daemon=True)
        self._workers = [
            threading.Thread(target=self._work, name=f"duckflock-analysis-{i}", daemon=True)
            for i in range(max_concurrent)
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
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("an analysis needs a non-empty name")
        if not isinstance(sql, str):
            raise TypeError(f"sql must be a str, not {type(sql).__name__}")
        if every is not None and every <= 0:
            raise ValueError(f"every must be > 0 seconds, not {every}")
        if min_interval < 0:
            raise ValueError(f"min_interval must be >= 0, not {min_interval}")
        cursor = self._new_cursor()
        try:
            shape = inspect(cursor, sql, params=params)
        except BaseException:
            self._close_cursor(cursor)
            raise
        analysis = Analysis(name, sql, params, every, on_change, min_interval, shape, cursor)
        if shape.plan is not None:
            # the writer must capture before the first refresh pins its snapshot, or rows
            # committed in between would be in neither the snapshot nor the deltas
            self._on_capture_change(self.capture() | {shape.plan.table})
        with self._lock:
            self._check_open()
            old = self._analyses.get(name)
            if old is not None:
                old.dropped = True
                analysis.version = old.version
                analysis.mailboxes = old.mailboxes
                if not old.running:
                    self._close_cursor(old.cursor)
            self._analyses[name] = analysis
            self._wake.notify()
        self._on_capture_change(self.capture())

    def drop(self, name: str) -> None:
        with self._lock:
            analysis = self._get(name)
            del self._analyses[name]
            analysis.dropped = True
            mailboxes = list(analysis.mailboxes)
            self._published.notify_all()  # result(min_version=…) waiters: it is gone
            if not analysis.running:
                self._close_cursor(analysis.cursor)
        for mailbox in mailboxes:
            mailbox.close()
        self._on_capture_change(self.capture())

    def capture(self) -> frozenset[Identity]:
        """The tables whose stored rows incremental analyses need."""
        with self._lock:
            return frozenset(
                a.shape.plan.table for a in self._analyses.values() if a.shape.plan is not None
            )

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
        with self._lock:
            analysis = self._get(name)
            if min_version is None:
                return analysis.result

            def reached() -> bool:
                # follow the name: a replaced analysis carries its version numbers on
                current = self._analyses.get(name)
                return self._stopping or current is None or current.version >= min_version

            ok = self._published.wait_for(reached, timeout=timeout)
            self._check_open()
            analysis = self._get(name)  # dropped meanwhile: UnknownAnalysisError
            if analysis.version >= min_version:
                return analysis.result
            assert not ok
            raise ResultTimeoutError(
                f"analysis {name!r} did not reach version {min_version} within {timeout} s "
                f"(it is at {analysis.version})"
            )

    def refresh(self, name: str, timeout: float | None = None) -> Result:
        """Run ``name`` now (after any run in progress) and return its new result."""
        with self._lock:
            self._check_open()
            analysis = self._get(name)
            # a run in progress may have read the data before this call: wait for the next
            target = analysis.version + (2 if analysis.running else 1)
            if not analysis.running and self._busy < self._max_concurrent:
                self._dispatch(analysis, time.monotonic())  # straight to a worker
            else:
                analysis.forced = True
                self._wake.notify()
        result = self.result(name, target, timeout)
        assert result is not None
        return result

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
                for table, rows in stored:
                    if table == plan.table:
                        analysis.deltas.append(rows)
                        analysis.delta_rows += rows.num_rows
                analysis.delta_watermark = seq
                if analysis.delta_rows > self._max_delta_rows:
                    self._taint(analysis, f"over {self._max_delta_rows:,} rows between refreshes")
            self._wake.notify()

    def on_lost_notice(self) -> None:
        """A commit notice could not be handled: no incremental state can be trusted."""
        with self._lock:
            for analysis in self._analyses.values():
                if analysis.shape.plan is not None:
                    self._taint(analysis, "a commit notice was lost")
                if analysis.on_change and analysis.dirty_at is None:
                    analysis.dirty_at = time.monotonic()
            self._wake.notify()

    def on_raw_write(self) -> None:
        """A write that did not go through db.insert: incremental states are stale."""
        now = time.monotonic()
        with self._lock:
            for analysis in self._analyses.values():
                if analysis.on_change and analysis.dirty_at is None:
                    analysis.dirty_at = now
                if analysis.shape.plan is not None:
                    self._taint(analysis, "a write outside db.insert (UPDATE, DELETE, raw INSERT)")
            self._wake.notify()

    def _taint(self, analysis: Analysis, why: str) -> None:
        analysis.tainted = why
        analysis.collecting = False
        analysis.deltas = []
        analysis.delta_rows = 0

    # -- the scheduler thread and the analysis threads ---------------------------------

    def _run(self) -> None:
        with self._lock:
            while not self._stopping:
                now = time.monotonic()
                due = sorted(
                    (at, a.name) for a in self._analyses.values() if (at := a.due_at()) is not None
                )
                wait: float | None = None
                for at, name in due:
                    if at > now:
                        wait = at - now
                        break
                    if self._busy >= self._max_concurrent:
                        break  # a finishing worker wakes us
                    self._dispatch(self._analyses[name], now)
                self._wake.wait(wait)

    def _dispatch(self, analysis: Analysis, now: float) -> None:
        """Hand ``analysis`` to an analysis thread; the caller holds the lock."""
        analysis.running = True
        analysis.last_started = now
        analysis.dirty_at = None
        analysis.forced = False
        self._busy += 1
        self._jobs.put(analysis)

    def _work(self) -> None:
        while (analysis := self._jobs.get()) is not None:
            try:
                self._refresh(analysis)
            finally:
                with self._lock:
                    analysis.running = False
                    self._busy -= 1
                    if analysis.dropped:
                        self._close_cursor(analysis.cursor)
                    self._wake.notify()

    def _refresh(self, analysis: Analysis) -> None:
        started = time.perf_counter()
        error: QueryError | None = None
        table: pa.Table | None = None
        try:
            if analysis.shape.plan is not None:
                table, watermark = self._incremental(analysis)
            else:
                watermark = self._committed_seq()
                analysis.mode, analysis.reason = "full", analysis.shape.reason
                table = analysis.cursor.execute(analysis.sql, analysis.params).to_arrow_table()
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
        self._publish(analysis, table, error, duration, watermark)

    def _incremental(self, analysis: Analysis) -> tuple[pa.Table, int]:
        plan = analysis.shape.plan
        assert plan is not None
        cursor = analysis.cursor
        with self._lock:
            rebuild = analysis.state is None or analysis.tainted is not None
            why = analysis.tainted or "first refresh: the state is built from the whole table"
        if rebuild:
            cursor.execute("BEGIN TRANSACTION")
            try:
                with self._commit_lock():
                    # pin the snapshot while no commit can land: DuckDB takes it at the
                    # transaction's first access to the database (BEGIN and SELECT 1 do not)
                    cursor.execute(plan.pin).fetchall()
                    watermark = self._committed_seq()
                    with self._lock:
                        analysis.tainted = None
                        analysis.collecting = True
                        analysis.deltas, analysis.delta_rows = [], 0
                        analysis.delta_watermark = watermark
                state, table = split(plan, cursor.execute(plan.build).to_arrow_table())
                cursor.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    cursor.execute("ROLLBACK")
                with self._lock:
                    self._taint(analysis, "the last refresh failed: the state is rebuilt")
                raise
            analysis.mode, analysis.reason = "full", f"full: {why}"
        else:
            with self._lock:
                deltas, analysis.deltas, analysis.delta_rows = analysis.deltas, [], 0
                watermark = analysis.delta_watermark
            state, table = analysis.state, analysis.last_table
            if deltas:
                try:
                    delta = pa.concat_tables(deltas)
                except pa.ArrowInvalid:  # the table changed shape: start over
                    with self._lock:
                        self._taint(analysis, "the table's columns changed")
                    return self._incremental(analysis)
                try:
                    folded = self._fold(analysis, plan, state, delta)
                    if folded is None:
                        folded = split(plan, _over_arrow(cursor, plan.refresh, state, delta))
                    state, table = folded
                except BaseException:
                    # the taken rows are folded in nowhere now: rebuild from the table
                    with self._lock:
                        self._taint(analysis, "the last refresh failed: the state is rebuilt")
                    raise
            analysis.mode = "incremental"
            analysis.reason = f"incremental: folded in {sum(d.num_rows for d in deltas):,} rows"
        assert table is not None
        analysis.state, analysis.last_table = state, table
        return table, watermark

    @staticmethod
    def _fold(
        analysis: Analysis, plan: Plan, state: pa.Table | None, delta: pa.Table
    ) -> tuple[pa.Table, pa.Table] | None:
        """The pyarrow fast path for plain shapes; None where it does not apply.

        A column type pyarrow cannot group or aggregate turns it off for this analysis:
        DuckDB does the refresh instead, then and from then on.
        """
        if plan.arrow is None or not analysis.fast or state is None:
            return None
        try:
            return plan.arrow.fold(state, delta)
        except (pa.ArrowException, TypeError, ValueError):
            log.warning("analysis %r: pyarrow cannot fold it; DuckDB will", analysis.name)
            analysis.fast = False
            return None

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
            result = Result(
                name=analysis.name,
                table=table,
                version=analysis.version,
                refreshed_at=datetime.now(UTC),
                duration=duration,
                watermark=watermark,
                mode=analysis.mode or "full",
                error=error,
            )
            analysis.result = result
            mailboxes = list(analysis.mailboxes)
            self._published.notify_all()
        for mailbox in mailboxes:
            mailbox.put(result)

    # -- lifecycle ---------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Stop the threads, end every watcher and subscription cleanly."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            analyses = list(self._analyses.values())
            for analysis in analyses:
                analysis.dropped = True
                if analysis.running:
                    analysis.cursor.interrupt()
            self._wake.notify_all()
            self._published.notify_all()
            subscriptions = list(self._subscriptions)
        for _ in self._workers:
            self._jobs.put(None)
        self._thread.join(timeout)
        for worker in self._workers:
            worker.join(timeout)
        for analysis in analyses:
            for mailbox in list(analysis.mailboxes):
                mailbox.close()
            self._close_cursor(analysis.cursor)
        for subscription in subscriptions:
            subscription.cancel(timeout)


def _over_arrow(
    cursor: duckdb.DuckDBPyConnection,
    sql: str,
    __duckflock_state: pa.Table,
    __duckflock_delta: pa.Table | None = None,
) -> pa.Table:
    """Run ``sql`` over the state (and delta) Arrow tables.

    DuckDB finds them by their names among this frame's locals (its Python replacement
    scan): 0.6 ms cheaper per query than register + unregister, which matters when the
    whole refresh takes a few milliseconds. If replacement scans are switched off in the
    database's config, registering them is the fallback.
    """
    assert STATE == "__duckflock_state" and DELTA == "__duckflock_delta"
    try:
        return cursor.execute(sql).to_arrow_table()
    except duckdb.CatalogException:
        tables = {STATE: __duckflock_state}
        if __duckflock_delta is not None:
            tables[DELTA] = __duckflock_delta
        for name, table in tables.items():
            cursor.register(name, table)
        try:
            return cursor.execute(sql).to_arrow_table()
        finally:
            for name in tables:
                cursor.unregister(name)
