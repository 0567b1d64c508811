"""The writer's batches (:mod:`duckflock.ingest.writer`): when one is sealed
(:class:`Woken`: not while callers recent commits woke are still on their way back), and
its commit (:class:`Batches`): through the committer, counted for the writer's stats,
and, when DuckDB invalidated the database, the database reopened (before the next batch,
and again before each batch while reopening fails)."""

from __future__ import annotations

import contextlib
import logging
import queue
import time
from collections import deque
from collections.abc import Callable

import duckdb

from duckflock.errors import StorageError
from duckflock.ingest.bundles import each_row
from duckflock.ingest.committer import Committer
from duckflock.ingest.receipts import Call
from duckflock.ingest.stats import Counters
from duckflock.ingest.storage import StorageFailure

# A batch somebody waits for is sealed once the inbox is empty, except while callers that
# recent commits woke have not run again (they wait for the GIL behind each other, and
# most hand in their next row at once): then it waits for them, polling every
# STRAGGLER_POLL seconds, for at most STRAGGLER_SECONDS. Measured with 50 threads x one
# acknowledged row: without it a third of them missed each batch and waited a whole
# extra commit. A commit's callers still away after FORGET_SECONDS are not waited for
# any more (they timed out, or went on to other work).
STRAGGLER_SECONDS = 0.001
STRAGGLER_POLL = 0.0001
FORGET_SECONDS = 0.005
# commits whose woken callers are still awaited, at most (older ones are forgotten)
_TALLIES = 64


class Woken:
    """The callers recent commits woke, and how many of them have run again.

    Owner: the writer thread, which records each commit's woken callers (:meth:`wake`,
    under the writer's lock) and asks, while gathering a batch, whether any are still on
    their way (:meth:`straggler`). A woken caller appends to its commit's tally from its
    own thread once it runs again (``Call.back``; ``list.append`` is atomic). Callers
    are counted across commits, not only the last one: while the callers of a large
    commit are still coming back one by one, a small commit of the few that came back
    first must not be sealed alone, or the rows split into two groups that take turns.
    A tally older than FORGET_SECONDS is forgotten (its callers timed out or went
    elsewhere).
    """

    def __init__(self) -> None:
        # (the list woken callers append to, how many were woken, when)
        self._tallies: deque[tuple[list[None], int, float]] = deque(maxlen=_TALLIES)

    def wake(self, calls: list[Call]) -> None:
        """Finish ``calls`` (waking their callers), counting the callers woken."""
        back: list[None] = []
        woken = 0
        for call in calls:
            if call.waiter is not None:
                call.back = back
                woken += 1
            call.finish()
        if woken:
            self._tallies.append((back, woken, time.monotonic()))

    def away(self, now: float) -> int:
        """Woken callers that have not run again (woken within FORGET_SECONDS)."""
        tallies = self._tallies
        while tallies and (
            len(tallies[0][0]) >= tallies[0][1] or now - tallies[0][2] > FORGET_SECONDS
        ):
            tallies.popleft()
        return sum(woken - len(back) for back, woken, _ in tallies)

    @staticmethod
    def deadline() -> float:
        """Until when the batch being gathered may wait for stragglers."""
        return time.monotonic() + STRAGGLER_SECONDS

    def straggler(
        self, inbox: queue.SimpleQueue[Call | None], until: float
    ) -> tuple[bool, Call | None]:
        """While woken callers have not all run again (until ``until``): whether a
        call came, and the call (None: the inbox's close sentinel). Waiting on the
        inbox, not sleeping: measured with 50 threads, sleeping in 0.1 ms steps
        brought them back later (0.91-1.15 ms) than being woken by each call (0.82-0.91)."""
        inbox_get = inbox.get
        while (now := time.monotonic()) < until and self.away(now):
            try:
                return True, inbox_get(timeout=STRAGGLER_POLL)
            except queue.Empty:
                continue
        return False, None


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
