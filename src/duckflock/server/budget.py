"""The budget for request bodies (HTTP only: the event loop's) and their deadlines.

Request bodies take bytes from one budget, weighted by what parsing them costs (a JSON
body becomes Python objects many times its size) — before they are read when their
size is declared (:meth:`ByteBudget.hold`), as they arrive when not (chunked:
:meth:`ByteBudget.share`) — so many big bodies at once wait (or get 503) instead of
exhausting memory. A body being read has a deadline that grows with the bytes received
(:class:`BodyClock`): one dribbled gives back what it holds. The slots for work are
:mod:`duckflock.server.limits`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

from duckflock.errors import ServerBusyError

_UNCOUNTED: contextlib.nullcontext[None] = contextlib.nullcontext()  # reusable, async too


class ByteBudget:
    """Bytes of request bodies (weighted by parse cost) the server holds at once (HTTP
    only: the event loop's): a body's declared size before it is read (:meth:`hold`), or
    the bytes of one of unknown size (chunked) as they arrive (:meth:`share`)."""

    def __init__(self, total: int, queue_timeout: float, free_below: int = 0) -> None:
        self.total = total
        self.free_below = free_below
        self.queue_timeout = queue_timeout
        self.used = 0
        self.stalled = 0  # of ``used``: what shares waiting for room hold (Share.grow)
        self._freed: asyncio.Condition | None = None

    def counted(self, size: int) -> int:
        """What a body of ``size`` weighted bytes holds: at most the whole budget (one
        body alone may always use it), nothing at most ``free_below`` (not worth the
        bookkeeping: the one-row ingest path comes every request). Free below by its own
        size, not by the clamped one: a budget under ``free_below`` still counts bodies."""
        return 0 if size <= self.free_below else min(size, self.total)

    def hold(self, size: int) -> contextlib.AbstractAsyncContextManager[None]:
        """:meth:`counted` of ``size`` bytes held while in the block (waiting for room
        within the queue timeout); when that is nothing, no bookkeeping at all."""
        size = self.counted(size)
        return self._counted(size) if size else _UNCOUNTED

    @contextlib.asynccontextmanager
    async def share(self, weight: int) -> AsyncIterator[Share]:
        """A :class:`Share`, empty, to grow with a body of unknown size (``weight``: the
        times its bytes count); what it holds is given back however the block ends."""
        share = Share(self, weight)
        try:
            yield share
        finally:
            if share.held:
                await self._give(share.held)

    @contextlib.asynccontextmanager
    async def _counted(self, size: int) -> AsyncIterator[None]:
        await self._take(size)
        try:
            yield
        finally:
            await self._give(size)

    async def _take(self, size: int, share: Share | None = None) -> None:
        """Wait until ``size`` more bytes fit (within the queue timeout; else 503). A
        ``share`` waiting while all the rest of what is held is held by shares waiting
        too gets the 503 at once, and gives back its room: none of them could give room
        back before one ends (bodies of unknown size, each alone within the budget,
        together past it), so they all waited out the queue timeout."""
        if self._freed is None:
            self._freed = asyncio.Condition()
        stalled = share.held if share is not None else 0
        busy = ServerBusyError(
            "the server is busy parsing other large bodies; retry later",
            retry_after=max(1, math.ceil(self.queue_timeout / 4)),
        )
        async with self._freed:
            self.stalled += stalled
            try:
                async with asyncio.timeout(self.queue_timeout):
                    await self._freed.wait_for(lambda: self._fits(size) or self._stuck(share))
            except TimeoutError:
                raise busy from None
            finally:
                self.stalled -= stalled
            if not self._fits(size):  # stuck: this one ends so the others can go on
                raise busy
            self.used += size

    def _fits(self, size: int) -> bool:
        return self.used + size <= self.total

    def _stuck(self, share: Share | None) -> bool:
        """Whether everything held is held by shares waiting for room (``share`` one)."""
        return share is not None and self.used <= self.stalled

    async def _give(self, size: int) -> None:
        assert self._freed is not None, "given back what was never taken"
        async with self._freed:
            self.used -= size
            self._freed.notify_all()


class Share:
    """What one body of unknown size holds of a :class:`ByteBudget`: what ``weight`` times
    the bytes received so far count (:meth:`ByteBudget.counted`), taken as they arrive.

    Owner: the task reading the body; :meth:`ByteBudget.share` gives it back."""

    __slots__ = ("budget", "held", "weight")

    def __init__(self, budget: ByteBudget, weight: int) -> None:
        self.budget = budget
        self.weight = weight
        self.held = 0  # weighted bytes taken from the budget

    def short(self, got: int) -> bool:
        """Whether ``got`` bytes received need more of the budget than is held."""
        return self.budget.counted(got * self.weight) > self.held

    async def grow(self, got: int) -> None:
        """Hold what ``got`` bytes received need (room within the queue timeout, or 503)."""
        need = self.budget.counted(got * self.weight)
        if need > self.held:
            await self.budget._take(need - self.held, self)
            self.held = need


class Reading:
    """One body being read: its task, when it began, the bytes received so far, and
    whether the clock found it late (then it cancelled the task)."""

    __slots__ = ("got", "late", "loop", "paused", "started", "task")

    def __init__(self, task: asyncio.Task[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.task = task
        self.loop = loop
        self.started = loop.time()
        self.got = 0
        self.late = False
        self.paused = False  # waiting for room in the budget: the clock stops


class BodyClock:
    """Deadlines of the bodies being read: ``grace`` seconds from the first read, one
    more per ``rate`` bytes received (as Apache's mod_reqtimeout). One timer per event
    loop checks them every ``tick`` while any is being read, and cancels the task of
    each that is late (a timer per request cost more than the rest of reading a one-row
    body); the reader turns that into its error (:meth:`Reading.late`).

    Owner: the HTTP app's bodies; :meth:`start` and :meth:`end` on the event loop."""

    def __init__(self, grace: float, rate: int) -> None:
        self.grace = grace
        self.rate = rate
        self.tick = min(0.5, grace / 4)  # how late past its deadline a body may be cut
        self._reading: set[Reading] = set()
        self._ticking: set[asyncio.AbstractEventLoop] = set()  # loops with a timer armed

    def start(self) -> Reading:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "a body is read in a task"
        reading = Reading(task, loop)
        self._reading.add(reading)
        if loop not in self._ticking:  # the first read since this loop's reads all ended
            self._ticking.add(loop)
            loop.call_later(self.tick, self._check, loop)
        return reading

    def end(self, reading: Reading) -> None:
        self._reading.discard(reading)

    @contextlib.contextmanager
    def paused(self, reading: Reading) -> Iterator[None]:
        """The clock stops for ``reading`` in the block: it waits for the server, not the
        client (room in the budget)."""
        reading.paused = True
        since = reading.loop.time()
        try:
            yield
        finally:
            reading.paused = False
            reading.started += reading.loop.time() - since

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        mine = [r for r in self._reading if r.loop is loop]
        for reading in mine:
            if reading.paused or reading.late:
                continue
            if now > reading.started + self.grace + reading.got / self.rate:
                reading.late = True
                reading.task.cancel()
        if mine:
            loop.call_later(self.tick, self._check, loop)
        else:
            self._ticking.discard(loop)
