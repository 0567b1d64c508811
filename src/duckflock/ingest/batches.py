"""The writer's batches (:mod:`duckflock.ingest.writer`): when one is sealed
(:class:`Woken`: not while callers recent commits woke are still on their way back), and
its commit (:class:`Batches`): through the committer, counted for the writer's stats,
and, when DuckDB invalidated the database, the database reopened (before the next batch,
and again before each batch while reopening fails)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from _thread import allocate_lock
from collections import deque
from collections.abc import Callable

from duckflock.errors import StorageError
from duckflock.ingest.bundles import each_row
from duckflock.ingest.committer import Committer
from duckflock.ingest.receipts import Call, Settle, settle_all
from duckflock.ingest.stats import Counters
from duckflock.ingest.storage import StorageFailure

# A batch somebody waits for is sealed once the inbox is empty, except while callers that
# recent commits woke have not run again (they wait for the GIL behind each other, and
# most hand in their next row at once): then it waits for them, for at most
# STRAGGLER_SECONDS. Measured with 50 threads x one acknowledged row: without it a third
# of them missed each batch and waited a whole extra commit. A commit's callers still
# away after FORGET_SECONDS are not waited for any more (they timed out, or went on to
# other work).
STRAGGLER_SECONDS = 0.001
FORGET_SECONDS = 0.005
# The wait for stragglers follows the machine: twice the median of the last _WAITS waits
# (an expired one counts as its deadline), between STRAGGLER_SECONDS and
# STRAGGLER_MAX_SECONDS. Fifty callers take 0.7-1 ms to come back on an idle 2-core
# machine, so a fixed 1 ms expired in 10-15% of the batches: the callers still away
# missed the commit and waited two (BENCHMARKS.md, round 7: the p99 ack).
STRAGGLER_MAX_SECONDS = 0.003
_WAITS = 32
# How many callers of a commit are awake at once while they wake one another (Relay):
# each woken caller wakes the next, so a caller's wake-up (a thread the kernel has to
# schedule) overlaps with the work of the RELAY_AHEAD - 1 before it.
RELAY_AHEAD = 2
# commits whose woken callers are still awaited, at most (older ones are forgotten)
_TALLIES = 64
# A batch of calls acknowledged through a callback (``insert_async``: the server's
# requests) waits, for at most CALLBACK_WINDOW_SECONDS, until it holds as many such calls
# as the largest of the last _PEAK_BATCHES batches did: their callers cannot say they are
# on their way back (their next rows come over the network), and a commit costs the
# same for 1 row as for 4 (measured: 4 HTTP clients gave 2.4 rows per commit, and the
# writer's CPU per request was that commit's cost divided by them).
CALLBACK_WINDOW_SECONDS = 0.001
_PEAK_BATCHES = 32


class Tally:
    """The callers one commit woke, counted as they run again.

    Each woken caller calls :meth:`back` once from its own thread (``Call.back``); the
    last one releases ``all_back``, which the writer waits on: one wake-up of the writer
    per commit, not one per caller (waking it on every call that came in made fifty
    callers take turns with the writer for the GIL). ``next()`` on an
    :func:`itertools.count` is one C call, so exactly one caller sees the last number.
    """

    __slots__ = ("_count", "all_back", "at", "relay", "woken")

    def __init__(self, woken: int) -> None:
        self.woken = woken
        self.at = time.monotonic()
        self._count = itertools.count(1)
        self.all_back = allocate_lock()
        self.all_back.acquire()  # released by the last caller back
        self.relay: Relay | None = None  # how its callers wake one another

    def back(self) -> None:
        """One woken caller runs again (called once per caller, from its thread)."""
        if next(self._count) == self.woken:
            self.all_back.release()


class Relay:
    """The callers one commit finished, woken one after another.

    The writer wakes the first RELAY_AHEAD itself; each woken caller wakes the next as
    it runs again (``Call.wait``), so the writer goes back to gathering at once instead
    of releasing fifty locks under the GIL (each release woke a thread that only queued
    for the GIL the writer held, and took the writer's core from it). ``popleft`` is
    one C call, so each caller is woken exactly once, whoever pops it. The writer wakes
    the rest itself (:meth:`flush`) when they are not all back by the time it seals
    the next batch (a busy machine schedules each woken thread late, and a chain adds
    those delays up), or when the chain stalls (a caller interrupted before it waited:
    once the commit's tally is forgotten, after FORGET_SECONDS).
    """

    __slots__ = ("_rest",)

    def __init__(self, rest: list[Call]) -> None:
        self._rest = deque(rest)

    def next(self) -> None:
        """Wake the next caller of the chain, if one is left (any thread)."""
        try:
            call = self._rest.popleft()
        except IndexError:
            return
        call.waiter.release()

    def flush(self) -> None:
        """Wake every caller of the chain not woken yet."""
        while self._rest:
            self.next()


class Woken:
    """The callers recent commits woke, and whether they have all run again.

    Owner: the writer thread, which records each commit's woken callers (:meth:`wake`,
    under the writer's lock) and, while gathering a batch, waits until they are back
    (:meth:`wait`). Callers are counted across commits, not only the last one: while
    the callers of a large commit are still coming back one by one, a small commit of
    the few that came back first must not be sealed alone, or the rows split into two
    groups that take turns. A tally older than FORGET_SECONDS is forgotten (its callers
    timed out or went elsewhere).
    """

    def __init__(self) -> None:
        self._tallies: deque[Tally] = deque(maxlen=_TALLIES)
        self._waits: deque[float] = deque([0.0], maxlen=_WAITS)  # recent waits, seconds

    def wake(self, calls: list[Call]) -> None:
        """Finish ``calls`` (waking their callers), counting the callers woken."""
        # only callers still waiting are counted and relayed: one whose wait() timed
        # out or was interrupted (``left``) may never run again, and counting it held
        # every batch for the whole straggler wait until its commit was forgotten
        chain = [call for call in calls if call.waiter is not None and not call.left]
        settles: list[Settle] = []  # awaited on event loops (insert_async)
        if not chain:
            for call in calls:
                call.finish(settles=settles)
            if settles:
                settle_all(settles)  # one wake-up per loop, not one per call
            return
        tally = Tally(len(chain))
        for call in chain:
            call.back = tally  # before finish(): the caller reports back after it
        self._tallies.append(tally)
        # callers still waiting wake one another (Relay); the first, and those that
        # stopped waiting, are woken here
        if len(chain) > 1:
            relay = tally.relay = Relay(chain[1:])
            for call in chain:
                call.relay = relay
        first = chain[0]
        for call in calls:
            call.finish(wake=call.relay is None or call is first, settles=settles)
        if settles:
            settle_all(settles)
        if tally.relay is not None:
            for _ in range(RELAY_AHEAD - 1):
                tally.relay.next()

    @property
    def pending(self) -> bool:
        """Whether callers recent commits woke may still be on their way back."""
        return bool(self._tallies)

    def deadline(self) -> float:
        """Until when the batch being gathered may wait for stragglers: twice the
        median of the recent waits, within STRAGGLER_SECONDS..STRAGGLER_MAX_SECONDS."""
        waits = sorted(self._waits)
        usual = 2 * waits[len(waits) // 2]
        return time.monotonic() + max(STRAGGLER_SECONDS, min(STRAGGLER_MAX_SECONDS, usual))

    def waited(self, seconds: float) -> None:
        """One wait for stragglers took ``seconds`` (its deadline when it expired)."""
        self._waits.append(seconds)

    def wait(self, until: float) -> bool:
        """Wait, until ``until`` at most, for every caller recent commits woke to run
        again; whether they all did. A wait with time to spare is recorded."""
        started = time.monotonic()
        back = self._wait(until)
        if until > started:
            self.waited(min(time.monotonic(), until) - started)
        return back

    def _wait(self, until: float) -> bool:
        tallies = self._tallies
        while tallies:
            tally = tallies[0]
            now = time.monotonic()
            if now - tally.at > FORGET_SECONDS:
                tallies.popleft()  # its callers timed out or went elsewhere
                if tally.relay is not None:
                    tally.relay.flush()  # a stalled chain: wake the rest here
                continue
            if not tally.all_back.acquire(False) and (
                now >= until or not tally.all_back.acquire(timeout=until - now)
            ):
                for late in tallies:  # slow chains (a busy machine): wake the rest here
                    if late.relay is not None:
                        late.relay.flush()
                return False
            tallies.popleft()
        return True


class Callbacks:
    """How many callback-acknowledged calls recent batches carried (the server's
    clients that wait for their answer): a batch that holds fewer may wait a hair for
    the rest (:data:`CALLBACK_WINDOW_SECONDS`). Owner: the writer thread."""

    __slots__ = ("_age", "peak")

    def __init__(self) -> None:
        self.peak = 0  # the most such calls one of the recent batches carried
        self._age = 0  # batches since the peak was seen

    def expects_more(self, count: int) -> bool:
        """Whether a batch holding ``count`` such calls may wait for more."""
        return 0 < count < self.peak

    @staticmethod
    def deadline() -> float:
        """Until when a batch may wait for more of them."""
        return time.monotonic() + CALLBACK_WINDOW_SECONDS

    def seen(self, count: int) -> None:
        """A batch carried ``count`` such calls; a peak not seen again for
        _PEAK_BATCHES batches falls to what the batches carry now."""
        if count >= self.peak:
            self.peak, self._age = count, 0
        else:
            self._age += 1
            if self._age > _PEAK_BATCHES:
                self.peak, self._age = count, 0


class Batches:
    """Commits the writer's batches; used by the writer thread only.

    ``reopen`` closes every cursor and reopens the database after DuckDB invalidated it
    (None: it cannot be reopened, e.g. in memory); the committer then takes fresh
    cursors.
    """

    def __init__(
        self,
        committer: Committer,
        counters: Counters,
        reopen: Callable[[], None] | None,
    ) -> None:
        self._committer = committer
        self._counters = counters
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
            self._committer.renew()
        except Exception as exc:
            self._counters.reopen_failed(f"reopening the database failed: {exc}")
            logging.getLogger("duckflock").warning("reopening the database failed: %s", exc)
            raise StorageFailure(f"the database could not be reopened: {exc}") from exc
        self._needs_reopen = False
        self._counters.reopened()
        logging.getLogger("duckflock").warning("the database was reopened after a fault")
