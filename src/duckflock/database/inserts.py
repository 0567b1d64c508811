"""The insert verbs of a Database: ``insert``, ``insert_async``, ``flush``, ``stats``,
and the writer they start on first use.

A call's table is resolved once, by the :class:`~duckflock.ingest.intake.Intake`, into
a :class:`~duckflock.ingest.receipts.Call` the writer commits; the caller gets the
call's :class:`~duckflock.ingest.receipts.Receipt`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from duckflock.core.checks import flag, seconds
from duckflock.core.lifecycle import weakly
from duckflock.database.base import Base
from duckflock.errors import IngestError, IngestTimeoutError, QueryError, QueueFullError
from duckflock.ingest.keys import KeyBook, check_key, digest
from duckflock.ingest.receipts import Call, Receipt, Settle
from duckflock.ingest.stats import IngestStats
from duckflock.ingest.writer import Writer
from duckflock.lake.connection import Retry


class Inserts(Base):
    """Appending rows through the group-commit writer."""

    def insert(
        self,
        table: str,
        data: Any,
        *,
        columns: Sequence[str] | None = None,
        wait: bool = True,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> Receipt:
        """Append rows to ``table`` through the group-commit writer.

        ``data`` is one row (a dict, or a tuple in table or ``columns`` order), an
        iterable of rows, a pandas or polars DataFrame, or a pyarrow Table/RecordBatch.
        Columns left out take their DEFAULT. One call is all-or-nothing.

        With ``wait=True`` (the default) this returns once the rows are committed
        (durable); otherwise it returns at once and the :class:`Receipt` tells when. A
        full queue blocks the caller, or raises :class:`QueueFullError` after
        ``timeout`` seconds (which also bounds the wait for the commit). One row with
        ``wait=False`` and no key joins the writer's row buffer
        (:mod:`duckflock.ingest.bundles`): many such rows are one call to the writer,
        each with its own receipt and error.

        ``idempotency_key`` (a str of 1 to 200 characters) names the batch: it is
        recorded in the same commit as the rows, and a later call with the same key and
        the same rows writes nothing and returns the first call's facts
        (``Receipt.replayed``); with other rows it raises :class:`KeyReusedError`. Keys
        are kept ``idempotency_window`` seconds (``connect``; docs/delivery.md).
        """
        self._life.check()
        if timeout is not None or wait is not False:  # None and False need no check
            timeout = seconds(timeout, "timeout")
            wait = flag(wait, "wait")
        started = None if timeout is None else time.monotonic()
        single = None
        try:
            if not wait and idempotency_key is None:
                # one row nobody waits for joins the writer's row buffer (ingest/bundles.py)
                single = self._intake.single(table, data, columns)
            if single is not None:
                target, names, row = single
                receipt = (self._writer or self.writer()).rows.add(target, names, row)
                if receipt is not None:
                    return receipt
                call = Call.single(target, names, row)  # the queue is full: it waits alone
            else:
                call = self._keyed(self._intake.call(table, data, columns), idempotency_key)
        except QueryError:
            self._life.check()  # closed under this call: ClosedError, not its cursor's
            raise
        if call.finished:  # a call without rows
            return Receipt(call)
        writer = self._writer or self.writer()
        writer.submit(call, timeout, wait=wait)
        if wait:
            if started is not None and timeout is not None:
                timeout = max(0.0, timeout - (time.monotonic() - started))
            call.wait(timeout)
        return Receipt(call)

    async def insert_async(
        self,
        table: str,
        data: Any,
        *,
        columns: Sequence[str] | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> Receipt:
        """``insert`` for asyncio code: awaits the commit without holding a thread.

        Checking and queueing take microseconds on the event loop; only when the queue is
        full does the wait for room move to the loop's default executor. ``timeout``
        bounds both waits together: the wait for room, then the commit's.
        """
        self._life.check()
        timeout = seconds(timeout, "timeout")
        try:
            call = self._keyed(self._intake.call(table, data, columns), idempotency_key)
        except QueryError:
            self._life.check()  # closed under this call: ClosedError, not its cursor's
            raise
        if call.finished:  # a call without rows
            return Receipt(call)
        loop = asyncio.get_running_loop()
        # one deadline for the wait for room and the wait for the commit together, as
        # ``insert`` has: the commit's timer gets what the wait for room left of it
        deadline = None if timeout is None else loop.time() + timeout
        committed: asyncio.Future[None] = loop.create_future()
        # set before queueing: the writer treats a call someone awaits as urgent; it
        # wakes the loop once for all the calls of a commit awaited on it (Settle)
        call.on_done = Settle(loop, committed)
        writer = self._writer or self.writer()
        try:
            writer.submit(call, 0, wait=False)
        except QueueFullError:
            await loop.run_in_executor(None, lambda: writer.submit(call, timeout, wait=False))
        # a timer that fails the future, not asyncio.wait_for (a second future, a task
        # wrapper and callbacks per call): cancelling the caller cancels ``committed``
        expiry = None if deadline is None else loop.call_at(deadline, expire, committed)
        try:
            await committed
        except TimeoutError:
            if not call.finished:  # finished as the deadline fell: its own outcome below
                raise IngestTimeoutError(
                    f"{call.nrows} rows for {call.table!r} were accepted but not committed "
                    f"within {timeout} s; they may still commit"
                ) from None
        finally:
            if expiry is not None:
                expiry.cancel()
        call.wait(0)  # done: returns, or raises the call's own error
        return Receipt(call)

    @staticmethod
    def _keyed(call: Call, key: object) -> Call:
        """``call`` with its idempotency key and content digest (checked first)."""
        checked = check_key(key)
        if checked is not None and not call.finished:
            call.key = checked
            call.digest = digest(call)
        return call

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every insert accepted so far is committed (or has failed)."""
        timeout = seconds(timeout, "timeout")
        writer = self._writer
        if writer is not None:
            writer.flush(timeout)
        else:
            self._life.check()

    def stats(self) -> IngestStats:
        """Rows and batches committed, rows queued, batch size and commit percentiles,
        and the write path's health: ``state`` ("ok", "recovering" or "failed"),
        ``storage_failures``, ``reopens`` and ``last_storage_error``."""
        writer = self._writer
        if writer is None:
            return IngestStats(0, 0, 0, 0, 0, self._max_queued_rows, {}, {})
        return writer.stats()

    def writer(self) -> Writer:
        """The write path (started on first use): a documented internal interface, for
        tests that submit :class:`~duckflock.ingest.receipts.Call` objects or set the
        writer's fault hook (:attr:`Writer.fault_hook`). ClosedError once closed;
        IngestError on a read-only database."""
        writer = self._writer
        if writer is not None:
            return writer
        with self._life.guard:
            self._life.check()
            if self.read_only:
                raise IngestError(f"database {self._shown!r} is open read-only")
            if self._writer is None:
                # the writer's thread holds this Database weakly: one dropped unclosed
                # is collected, then its writer closed (Lifecycle.drop_with)
                self._writer = Writer(
                    self._cursors.new,
                    max_queued_rows=self._max_queued_rows,
                    max_batch_rows=self._max_batch_rows,
                    on_commit=weakly(self._on_commit),
                    on_schema_change=weakly(self._schema_changed),
                    commit_lock=self._commit_lock,
                    reopen=weakly(self._reopen),
                    retry=Retry.of(self._lake_options) if self.is_lake else None,
                    keys=KeyBook(
                        window=self._idempotency_window,
                        max_keys=self._max_idempotency_keys,
                        lake=self.is_lake,
                    ),
                )
                self._life.drop_with(self, self._writer.close)
                if self._scheduler is not None:
                    # under the scheduler's lock: a concurrent define or drop cannot
                    # publish in between and be overwritten by this older set
                    self._scheduler.publish_capture()
            return self._writer


def expire(committed: asyncio.Future[None]) -> None:
    """``insert_async``'s deadline: its wait for the commit ends in TimeoutError."""
    if not committed.done():
        committed.set_exception(TimeoutError())
