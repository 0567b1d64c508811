"""The committer: commits a batch of calls on the writer's cursor, and when the rows are
at fault bisects the batch, commits every half that goes in cleanly and gives each call
that fails on its own its :class:`RowRejectedError`
(:mod:`duckflock.ingest.rejections`). On a lake, a commit whose answer was lost is
asked after, and a failed one tried again (:class:`duckflock.lake.connection.Retry`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from duckflock.core.faults import FaultHook, no_fault
from duckflock.core.names import Identity, Resolver
from duckflock.errors import ConflictError, RowRejectedError, UnknownTableError
from duckflock.ingest.appends import attempt, plan
from duckflock.ingest.bundles import split
from duckflock.ingest.keys import KeyBook
from duckflock.ingest.receipts import Call
from duckflock.ingest.rejections import cause, rejection
from duckflock.ingest.storage import StorageFailure, invalidated

if TYPE_CHECKING:
    from duckflock.lake.connection import Retry


class Committer:
    """Commits batches on one cursor; what it stores for captured tables it collects."""

    def __init__(
        self,
        new_cursor: Callable[[], duckdb.DuckDBPyConnection],
        on_schema_change: Callable[[], None] | None = None,
        retry: Retry | None = None,
        keys: KeyBook | None = None,
    ) -> None:
        self._new_cursor = new_cursor
        self.cursor = self.lone = new_cursor()
        self._lone_apart = retry is None  # a lake's commits are transactions: never lone
        if self._lone_apart:
            self.lone = self._unoptimized()
        # the idempotency keys: screened before each commit, recorded in it
        self.keys = keys or KeyBook(lake=retry is not None)
        self.on_schema_change = on_schema_change
        self.capture: frozenset[Identity] = frozenset()
        self.stored: list[tuple[Identity, pa.Table]] = []
        # when a failed commit is tried again (a lake: catalog away, conflict retries
        # spent); None: never
        self.retry = retry
        # the test seam, called at "batch", "commit", "committed" and "reopen" (see
        # Writer.fault_hook)
        self.fault_hook: FaultHook = no_fault

    def _unoptimized(self) -> duckdb.DuckDBPyConnection:
        """The cursor of the batch that is one autocommitted statement (no keys, no
        lake): DuckDB's optimizer off. Its passes cost 0.1-0.17 ms of CPU per statement
        (a quarter to a third of the statement's, BENCHMARKS.md round 5: the commit's
        WAL write and fsync are the rest of a commit) and have nothing to do in
        an INSERT of bound lists, VALUES or an Arrow scan (no filter, join or aggregate
        to push down or reorder). Statements that read (the keys' lookups, rejections,
        a lake's catalog) stay on ``cursor``, where filters reach the indexes."""
        cursor = self._new_cursor()
        try:
            cursor.execute("PRAGMA disable_optimizer")
        except BaseException:
            cursor.close()
            raise
        return cursor

    def renew(self) -> None:
        """Close the cursors and take fresh ones (the database was reopened). The old
        ones are closed first: they hold the instance DuckDB gave up on, and one left
        open would keep it (and its file) alive until the committer is collected."""
        for cursor in {id(c): c for c in (self.cursor, self.lone)}.values():
            with contextlib.suppress(Exception):  # closed with the old instance already
                cursor.close()
        self.cursor = self.lone = self._new_cursor()
        if self._lone_apart:
            self.lone = self._unoptimized()

    def commit_batch(self, calls: list[Call]) -> bool:
        """Commit ``calls``; mark each committed, or give it its own error.

        Returns True when the whole batch went in at once. Raises
        :class:`StorageFailure` when the storage fails; calls committed before that
        (or by the failing commit itself, when DuckDB says it is durable) stay marked
        committed. Keyed calls are screened first (:meth:`KeyBook.screen`): a replay
        writes nothing, and the batch does not count as whole.
        """
        try:
            writing, repeats = self.keys.screen(self.cursor, calls)
        except Exception as exc:  # the lookup failed: nothing of the batch is written
            raise StorageFailure(
                f"looking up idempotency keys failed: {exc}", invalidated=invalidated(exc)
            ) from exc
        if writing is calls:  # no keys in the batch
            return self._commit(calls)
        whole = self._commit(writing) if writing else False
        self.keys.settle(repeats)
        self.keys.prune(self.cursor)
        return whole and len(writing) == len(calls)

    def _commit(self, calls: list[Call]) -> bool:
        failure = self._attempt(calls)
        if failure is None:
            return True
        if self.retry is not None and self.retry.conflict(failure):
            # a real conflict (the retries are spent), not the rows' fault: no bisecting
            for call in calls:
                call.failure = ConflictError(
                    f"rows for {call.table!r} not committed: the lake kept conflicting "
                    f"after retries: {failure}"
                )
            return False
        calls = split(calls)  # a bundle's buffered rows fail one by one (ingest/bundles.py)
        if len(calls) == 1:
            calls[0].failure = self._rejection(calls[0], failure)
        else:
            self._isolate(calls)
        return False

    def _attempt(self, calls: list[Call]) -> BaseException | None:
        """Commit ``calls`` together; mark them committed, or return the rows' fault.

        With ``retry`` (a lake), each commit carries a tag: after a storage failure the
        catalog is asked whether the tag landed (a commit whose answer was lost), and
        if not the batch is tried again until ``retry`` gives up."""
        retry = self.retry
        tag = retry.new_tag() if retry is not None else None
        started = time.monotonic()
        tries = 0
        while True:
            try:
                with retry.window(tag) if retry and tag else nullcontext(None) as begin:
                    failure = attempt(
                        self.cursor,
                        plan(calls, self.capture),
                        commit=True,
                        stored=self.stored,
                        begin=begin,
                        record=self.keys.recorder(calls),
                        fault=self.fault_hook,
                        lone=self.lone,
                    )
            except StorageFailure as exc:
                if exc.committed or retry is None or tag is None:
                    if exc.committed:
                        self._mark(calls)
                    raise
                landed = retry.landed(self.cursor, tag, started)
                if landed:
                    self._mark(calls)
                    return None
                pause = None if landed is None else retry.delay(exc, tries, started)
                if pause is None:
                    raise
            else:
                if failure is None:
                    self._mark(calls)
                    self.fault_hook("committed")  # durable, and nobody told yet
                    return None
                pause = None if retry is None else retry.delay(failure, tries, started)
                if pause is None:
                    return failure
            tries += 1
            time.sleep(pause)

    def _gone(self, call: Call) -> UnknownTableError | None:
        """The error of a call whose table no longer exists (dropped after the call was
        checked against it, before its commit); None while it does."""
        if call.target is None:
            return None
        try:
            Resolver(self.cursor).table(call.target.sql_name)
        except UnknownTableError:
            return UnknownTableError(
                call.table, f"table {call.table!r} does not exist (dropped after the insert)"
            )
        except Exception:  # only to name the error better: never fail the rejection
            return None
        return None

    @staticmethod
    def _mark(calls: list[Call]) -> None:
        for call in calls:
            call.committed = True

    def _isolate(self, calls: list[Call]) -> None:
        """Bisect calls whose joint commit failed: commit the halves that go in cleanly,
        and give each call that fails alone its own error. At most 2n-1 attempts."""
        middle = len(calls) // 2
        for half in (calls[:middle], calls[middle:]):
            fault = self._attempt(half)
            if fault is None:
                continue
            if len(half) == 1:
                half[0].failure = self._rejection(half[0], fault)
            else:
                self._isolate(half)

    def _rejection(
        self, call: Call, failure: BaseException
    ) -> RowRejectedError | UnknownTableError:
        if isinstance(failure, duckdb.CatalogException):
            gone = self._gone(call)
            if gone is not None:  # not a row's fault: the table went away meanwhile
                if self.on_schema_change is not None:
                    self.on_schema_change()
                return gone
        try:
            return rejection(
                self.cursor,
                call,
                failure,
                self.on_schema_change,
                lambda trial: attempt(self.cursor, plan([trial]), commit=False),
            )
        except StorageFailure:
            raise
        except Exception as exc:  # describing the row failed too: still the call's error
            logging.getLogger("duckflock").debug("could not narrow a rejection", exc_info=exc)
            return RowRejectedError(
                table=call.table, cause=cause(failure), row_index=None, row=None
            )
