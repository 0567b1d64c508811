"""One batch's commit on the writer thread (:mod:`duckflock.ingest.writer`): through the
committer, counted for the writer's stats, and, when DuckDB invalidated the database,
the database reopened (before the next batch, and again before each batch while
reopening fails)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import duckdb

from duckflock.errors import StorageError
from duckflock.ingest.bundles import each_row
from duckflock.ingest.committer import Committer
from duckflock.ingest.receipts import Call
from duckflock.ingest.stats import Counters
from duckflock.ingest.storage import StorageFailure


class Batches:
    """Commits the writer's batches; used by the writer thread only.

    ``reopen`` closes every cursor and reopens the database after DuckDB invalidated it
    (None: it cannot be reopened, e.g. in memory); ``new_cursor`` then gives the
    committer its fresh cursor.
    """

    def __init__(
        self,
        committer: Committer,
        counters: Counters,
        new_cursor: Callable[[], duckdb.DuckDBPyConnection],
        reopen: Callable[[], None] | None,
    ) -> None:
        self._committer = committer
        self._counters = counters
        self._new_cursor = new_cursor
        self._reopen = reopen
        self._needs_reopen = False

    def commit(self, calls: list[Call], rows: int) -> None:
        """Commit one batch of ``rows`` rows; a storage failure fails its open calls
        (and, when DuckDB invalidated the database, reopens it)."""
        started = time.perf_counter()
        whole = False
        failure: StorageFailure | None = None
        try:
            if self._needs_reopen:
                self._recover()
            whole = self._committer.commit_batch(calls)
        except StorageFailure as exc:
            failure = exc
            for call in each_row(calls):  # a split bundle: its rows not yet committed
                if call.open:
                    error = StorageError(f"commit into {call.table!r} failed: {exc}")
                    error.__cause__ = exc.__cause__
                    call.failure = error
        committed, rejected = rows, 0
        if not whole:  # some calls failed: count them one by one
            calls = each_row(calls)  # a split bundle's rows each count as a call
            committed = sum(r.nrows for r in calls if r.committed and not r.replayed)
            rejected = sum(1 for r in calls if not r.committed)  # replays: neither
        self._counters.batch(
            rows,
            committed,
            rejected,
            time.perf_counter() - started,
            None if failure is None else str(failure),
        )
        if failure is not None and (failure.invalidated or failure.committed):
            # DuckDB gave up on the instance: reopen now, so the next batch finds it
            # ready (and again before each batch while reopening fails)
            self._needs_reopen = True
            with contextlib.suppress(StorageFailure):  # "failed": the next batch retries
                self._recover()

    def _recover(self) -> None:
        """Reopen the invalidated database and take a fresh cursor on it."""
        if self._reopen is None:
            raise StorageFailure("the database was invalidated and cannot be reopened")
        self._counters.recovering()
        try:
            self._committer.fault_hook("reopen")
            self._reopen()
            self._committer.cursor = self._new_cursor()
        except Exception as exc:
            self._counters.reopen_failed(f"reopening the database failed: {exc}")
            logging.getLogger("duckflock").warning("reopening the database failed: %s", exc)
            raise StorageFailure(f"the database could not be reopened: {exc}") from exc
        self._needs_reopen = False
        self._counters.reopened()
        logging.getLogger("duckflock").warning("the database was reopened after a fault")
