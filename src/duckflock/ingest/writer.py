"""The write path: a bounded inbox, one writer thread, group commit.

Producers put their call into an inbox (``queue.SimpleQueue``: a C-level put, no
Python lock, so producer threads never queue up behind one another) and, when they wait,
park on the call's own lock. The writer thread takes everything the inbox holds (up
to ``max_batch_rows``), appends it with one statement per table and column list (see
:mod:`duckflock.ingest.appends`), commits, and then wakes the batch's callers: the first
few itself, the rest one another (:class:`~duckflock.ingest.batches.Relay`).

One writer thread, on purpose: for small batches what limits throughput here is the GIL,
not the commit. Each DuckDB call releases it and winning it back from fifty busy producer
threads costs about 0.5 ms, so one autocommitted statement per batch on one writer beat
two to four overlapping writer connections (BENCHMARKS.md). With one writer, commits
happen in inbox order by construction: what one thread submits is committed in order.

Memory is bounded: single rows are admitted while the rows queued (in the inbox plus
held by the writer) are under ``max_queued_rows``; larger calls, and every call once the
bound is reached, go through a locked path that blocks until there is room (or raises
:class:`QueueFullError` after the caller's timeout). Concurrent single-row producers may
overshoot the bound by at most one row each.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from duckflock.core.faults import FaultHook
from duckflock.core.lifecycle import CLOSE_SECONDS
from duckflock.core.names import Identity
from duckflock.errors import (
    ClosedError,
    DuckflockError,
    IngestError,
    IngestTimeoutError,
    QueueFullError,
    WriterBrokenError,
)
from duckflock.ingest.batches import FORGET_SECONDS, Batches, Callbacks, Woken
from duckflock.ingest.bundles import RowBuffer
from duckflock.ingest.committer import Committer
from duckflock.ingest.keys import KeyBook
from duckflock.ingest.receipts import Call
from duckflock.ingest.stats import COMMIT_BUCKETS as COMMIT_BUCKETS  # for server/metrics.py
from duckflock.ingest.stats import Counters, IngestStats

if TYPE_CHECKING:
    from duckflock.lake.connection import Retry

# A batch nobody waits for (only wait=False calls) may gather for this long, until it
# reaches LINGER_ROWS, before it is committed: small commits while producers stream
# cost each of them a GIL round trip (measured: 150k rows/s without, 380k with).
LINGER_SECONDS = 0.01
LINGER_ROWS = 20_000
_CLOSE = None  # the inbox sentinel
# told, after each commit, its sequence number, the tables it changed and captured rows
CommitListener = Callable[[int, set[Identity], list[tuple[Identity, pa.Table]]], None]


class Writer:
    """The write path of one Database: the inbox and the writer thread."""

    def __init__(
        self,
        new_cursor: Callable[[], duckdb.DuckDBPyConnection],
        *,
        max_queued_rows: int = 500_000,
        max_batch_rows: int = 200_000,
        on_commit: Callable[[int, set[Identity], list[tuple[Identity, pa.Table]]], None]
        | None = None,
        on_schema_change: Callable[[], None] | None = None,
        commit_lock: threading.Lock | None = None,
        reopen: Callable[[], None] | None = None,
        retry: Retry | None = None,
        keys: KeyBook | None = None,
    ) -> None:
        if max_queued_rows < 1 or max_batch_rows < 1:
            raise ValueError("max_queued_rows and max_batch_rows must be >= 1")
        self.max_queued_rows = max_queued_rows
        self.max_batch_rows = max_batch_rows
        # stop gathering well before producers would block on a full queue
        self._linger_rows = min(LINGER_ROWS, max(1, max_queued_rows // 2))
        self._on_commit = on_commit
        self._committer = Committer(new_cursor, on_schema_change, retry, keys)
        # held around each commit and its notice: whoever holds it sees no commit happen
        # (analyses take it to pin a snapshot that lines up with the commit notices)
        self.commit_lock = commit_lock or threading.Lock()
        self.committed_seq = 0  # batches finished so far; written under commit_lock
        self._inbox: queue.SimpleQueue[Call | None] = queue.SimpleQueue()
        self.rows = RowBuffer(self.submit, self._queued, max_queued_rows)  # wait=False rows
        # guards _big_rows, _closing, _exited, _broken, every call's finish() against
        # a late wait(), and _held_rows decreases (with _has_room, which wakes producers
        # waiting for room)
        self._lock = threading.Lock()
        self._has_room = threading.Condition(self._lock)
        self._big_rows = 0  # rows of multi-row calls still in the inbox
        self._held_rows = 0  # rows the writer took from the inbox and has not finished
        self._peak = 0
        self._closing = False
        self._exited = False
        self._broken: BaseException | None = None
        self._current: list[Call] = []  # the batch being committed
        self._current_markers: list[Call] = []  # flush markers riding on it
        self._woken = Woken()  # the callers recent commits woke, until they run again
        self._callbacks = Callbacks()  # how many callback-acked calls recent batches held
        self._counters = Counters()  # the figures stats() reports
        self._batches = Batches(self._committer, self._counters, reopen)
        self._thread = threading.Thread(target=self._run, name="duckflock-writer", daemon=True)
        self._thread.start()

    # -- producers ---------------------------------------------------------------------

    def submit(self, call: Call, timeout: float | None, *, wait: bool) -> Call:
        """Queue one call. A full queue blocks (QueueFullError after ``timeout``)."""
        if self._closing or self._broken is not None:
            self._refuse()
        if call.nrows > 1 or self._queued() >= self.max_queued_rows:
            self._admit(call, timeout)
        call.guard = self._lock
        if wait:
            call.park()  # before the put, so the writer cannot finish it unseen
        self._inbox.put(call)
        self.rows.cut(call)  # rows buffered from now on go behind this call
        if self._closing or self._broken is not None:
            self._reclaim()  # the writer may have gone: fail what it will never take
        return call

    def _queued(self) -> int:
        return self._inbox.qsize() + self._big_rows + self._held_rows + self.rows.pending

    def _admit(self, call: Call, timeout: float | None) -> None:
        """The locked path: wait for room, and count a multi-row call's rows."""
        nrows = call.nrows
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while (queued := self._queued()) + nrows > self.max_queued_rows and queued > 0:
                if self._closing or self._broken is not None:
                    self._refuse()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise QueueFullError(
                        f"ingest queue full ({queued:,} of {self.max_queued_rows:,} rows) for "
                        f"{timeout} s; {nrows:,} rows for {call.table!r} not accepted"
                    )
                self._has_room.wait(remaining)
            if nrows > 1:
                self._big_rows += nrows

    def _refuse(self) -> None:
        if self._broken is not None:
            raise WriterBrokenError(f"the writer died: {self._broken!r}") from self._broken
        raise ClosedError("the database is closing; no more inserts are accepted")

    def _reclaim(self) -> None:
        with self._lock:
            if self._exited:
                self._fail_leftovers()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every call accepted so far is committed (or failed)."""
        marker = Call(None, nrows=0)
        marker.guard = self._lock
        marker.park()
        self._inbox.put(marker)  # finished only after everything queued before it
        if self._closing or self._broken is not None:
            self._reclaim()
        try:
            marker.wait(timeout)
        except IngestTimeoutError:
            raise IngestTimeoutError(f"flush did not finish within {timeout} s") from None
        if self._broken is not None:
            raise WriterBrokenError(f"the writer died: {self._broken!r}") from self._broken

    def close(self, timeout: float | None = CLOSE_SECONDS) -> None:
        """Commit everything accepted, then stop the writer thread."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._has_room.notify_all()  # producers waiting for room get ClosedError
        self._inbox.put(_CLOSE)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def fault_hook(self) -> FaultHook:
        """The write path's test seam (the committer's): called on the writer thread at
        "batch" (a batch was taken, before its commit), "commit" (before each commit
        attempt, inside it: what the hook raises is classified as DuckDB's error would
        be — a row fault, a conflict or a storage fault), "committed" (a commit is
        durable and its callers are not told yet) and "reopen" (before reopening an
        invalidated database). A test blocks there to hold the writer, or raises."""
        return self._committer.fault_hook

    @fault_hook.setter
    def fault_hook(self, hook: FaultHook) -> None:
        self._committer.fault_hook = hook

    @property
    def keys(self) -> KeyBook:
        """The idempotency keys (:mod:`duckflock.ingest.keys`): a documented internal
        interface, for tests that move its ``clock``."""
        return self._committer.keys

    @property
    def capture(self) -> frozenset[Identity]:
        """Tables whose stored rows are handed to ``on_commit`` (incremental analyses)."""
        return self._committer.capture

    @capture.setter
    def capture(self, tables: frozenset[Identity]) -> None:
        self._committer.capture = tables

    def stats(self) -> IngestStats:
        queued = self._queued()
        return self._counters.snapshot(queued, max(self._peak, queued), self.max_queued_rows)

    # -- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                calls, markers, rows, stop = self._gather()
                with self.commit_lock:
                    if calls:
                        self._commit_guarded(calls, rows)
                    self.committed_seq += 1
                    self._notify(calls)
                    self._finish(calls, markers, rows)
                if stop:
                    break
            with self._lock:
                self._exited = True
                self._fail_leftovers()
        except BaseException as exc:  # a bug in the loop itself: fail everyone waiting
            self._break(exc)

    def _commit_guarded(self, calls: list[Call], rows: int) -> None:
        """Commit one batch; whatever goes wrong fails this batch's calls, not the writer."""
        try:
            self._committer.fault_hook("batch")
            self._batches.commit(calls, rows)
        except Exception as exc:  # a bug: log it, fail the batch's open calls, go on
            logging.getLogger("duckflock").exception("the writer failed a batch")
            for call in calls:
                if call.open:
                    error = IngestError(f"the writer failed this batch (a bug): {exc!r}")
                    error.__cause__ = exc
                    call.failure = error

    def _gather(self) -> tuple[list[Call], list[Call], int, bool]:
        """The next batch: block for one call, then take what the inbox holds.

        Returns the calls, the flush markers among them, their row count, and whether
        close() was seen.
        """
        inbox = self._inbox
        calls: list[Call] = self._current
        markers: list[Call] = self._current_markers
        rows = called = 0
        urgent = False
        deadline = window = 0.0
        yielded = straggled = False
        item = self._first()
        while True:
            if item is _CLOSE:
                return calls, markers, rows, True
            if item.target is None:
                markers.append(item)
                urgent = True
            else:
                calls.append(item)
                n = item.seal()  # a bundle of buffered rows takes no more from here on
                rows += n
                self._held_rows += n
                if n > 1 and not item.bundled:
                    with self._lock:
                        self._big_rows -= n
                if item.urgent:
                    urgent = True  # somebody waits for this one: no lingering
                    called += item.on_done is not None
                if rows >= self.max_batch_rows:
                    break
            try:
                item = inbox.get_nowait()
            except queue.Empty:
                if urgent and not straggled and not self._closing and self._woken.pending:
                    # callers recent commits woke are on their way back: sleep until the
                    # last is back (Woken.deadline: 1-3 ms), then take what they handed in
                    straggled = yielded = True
                    self._woken.wait(self._woken.deadline())
                    try:
                        item = inbox.get_nowait()
                        continue
                    except queue.Empty:
                        pass
                if not yielded:
                    # let producers that are runnable right now hand in their calls
                    # before this batch is sealed: one GIL yield
                    yielded = True
                    time.sleep(0)
                    try:
                        item = inbox.get_nowait()
                        continue
                    except queue.Empty:
                        pass
                if self._callbacks.expects_more(called) and not markers and not self._closing:
                    # callers acked by callback (the server's clients) sent fewer rows
                    # than recent batches held: wait a hair for the rest (batches.py)
                    window = window or self._callbacks.deadline()
                    remaining = window - time.monotonic()
                    if remaining > 0:
                        try:
                            item = inbox.get(timeout=remaining)
                            continue
                        except queue.Empty:
                            pass
                if urgent or rows >= self._linger_rows or self._closing:
                    break
                if not deadline:
                    deadline = time.monotonic() + LINGER_SECONDS
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = inbox.get(timeout=remaining)
                except queue.Empty:
                    break
        self._callbacks.seen(called)
        queued = self._queued()
        if queued > self._peak:
            self._peak = queued
        return calls, markers, rows, False

    def _first(self) -> Call | None:
        """The next batch's first item; while woken callers are awaited, waited for in
        FORGET_SECONDS slices, so a relay nobody passed on is finished (Woken.wait)."""
        while self._woken.pending:
            try:
                return self._inbox.get(timeout=FORGET_SECONDS)
            except queue.Empty:
                self._woken.wait(time.monotonic())  # forgets the old tallies
        return self._inbox.get()

    def _finish(self, calls: list[Call], markers: list[Call], rows: int) -> None:
        with self._lock:
            self._woken.wake(calls)
            for marker in markers:
                marker.finish()
            self._held_rows -= rows
            self._has_room.notify_all()
        self._current = []
        self._current_markers = []

    def _notify(self, calls: list[Call]) -> None:
        """Tell the listener which tables changed, with the captured stored rows."""
        stored, self._committer.stored = self._committer.stored, []
        if self._on_commit is None or not calls:
            return
        tables = {r.target.key for r in calls if r.committed and r.target is not None}
        if tables:
            try:
                self._on_commit(self.committed_seq, tables, stored)
            except Exception:  # a listener's bug is not the writer's: log it, go on
                logging.getLogger("duckflock").exception("a commit listener failed")

    def _fail_leftovers(self) -> None:
        """Fail every call still in the inbox; the caller holds the lock."""
        error: DuckflockError
        if self._broken is not None:
            error = WriterBrokenError(f"the writer died: {self._broken!r}")
            error.__cause__ = self._broken
        else:
            error = ClosedError("the database closed before this insert was taken")
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if item is _CLOSE:
                continue
            if item.target is not None:
                item.failure = error
            item.finish()

    def _break(self, exc: BaseException) -> None:
        """The writer thread died: fail every waiting call, refuse new ones."""
        with self._lock:
            self._broken = exc
            self._exited = True
            for call in self._current:
                if call.open:
                    error = WriterBrokenError(f"the writer died before committing: {exc!r}")
                    error.__cause__ = exc
                    call.failure = error
                call.finish()
            for marker in self._current_markers:
                marker.finish()
            self._current = []
            self._current_markers = []
            self._fail_leftovers()
            self._has_room.notify_all()
