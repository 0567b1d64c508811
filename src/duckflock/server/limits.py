"""The server's fairness and memory limits: slots for work, a budget for bodies.

Work that runs SQL (or waits for a result) takes a slot of one :class:`Slots` pool: at
most ``total`` at once, of which at most ``per_client`` for one client (the service
names a client by its address and token, the same for every protocol). Waiters are
served first come, first served, except that one whose client already holds its share
is passed over: a client's flood waits behind its own share and never makes another
client's trivial query wait behind it. A request that cannot get a slot within the
queue timeout — or before its own deadline — is refused with :class:`ServerBusyError`
(HTTP 503 with ``Retry-After``, Postgres 53300).

One pool serves both protocols, so it is thread-safe and waits both ways: the HTTP app
awaits :meth:`Slots.hold` (a queued request holds no thread), a Postgres connection's
thread blocks in :meth:`Slots.take`. Both take from the same counts under one lock.

Request bodies take bytes from one budget, weighted by what parsing them costs (a JSON
body becomes Python objects many times its size) — before they are read when their
size is declared, as they arrive when not (chunked) — so many big bodies at once wait
(or get 503) instead of exhausting memory. A body being read has a deadline that grows
with the bytes received (:class:`BodyClock`): one dribbled gives back what it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from duckflock.errors import ServerBusyError

Release = Callable[[], None]


class _Waiter:
    """One request queued for a slot; ``wake`` is called (under the pool's lock) once it
    is granted one, or when the pool stops."""

    __slots__ = ("client", "granted", "wake")

    def __init__(self, client: str, wake: Callable[[], None]) -> None:
        self.client = client
        self.granted = False
        self.wake = wake


class Slots:
    """Per-client and total concurrency for one kind of work, from asyncio and threads.

    Owner: the serving service; :meth:`hold` is called on the event loop, :meth:`take`
    on Postgres connection threads, :meth:`stop` from any thread at shutdown.
    """

    def __init__(self, *, total: int, per_client: int, queue_timeout: float, what: str) -> None:
        if total < 1 or per_client < 1 or not (0 < queue_timeout < math.inf):
            raise ValueError("slots need total >= 1, per_client >= 1 and a finite queue_timeout")
        self.total = total
        self.per_client = per_client
        self.queue_timeout = queue_timeout
        self.what = what
        self._lock = threading.Lock()  # guards _held, _queue, busy, peak and stopping
        self._held: dict[str, int] = {}  # client -> slots it holds now (absent: none)
        self._queue: deque[_Waiter] = deque()  # in arrival order
        self.busy = 0  # slots held now (for /metrics)
        self.peak = 0  # the most slots ever held at once (for /metrics)
        self.stopping = False  # set by stop(): queued and new requests are refused

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot now (for /metrics)."""
        return len(self._queue)

    def held_by(self, client: str) -> int:
        """Slots ``client`` holds now."""
        with self._lock:
            return self._held.get(client, 0)

    # -- under the lock ------------------------------------------------------------------------

    def _grant_nolock(self) -> None:
        """Hand free slots to queued waiters, first come first served, passing over those
        whose client holds its share already."""
        if self.busy >= self.total or not self._queue:
            return
        for waiter in list(self._queue):
            if self.busy >= self.total:
                return
            if self._held.get(waiter.client, 0) >= self.per_client:
                continue
            self._queue.remove(waiter)
            self._take_nolock(waiter.client)
            waiter.granted = True
            try:
                waiter.wake()
            except RuntimeError:  # its event loop closed: nobody will use the slot
                waiter.granted = False
                self._give_nolock(waiter.client)

    def _take_nolock(self, client: str) -> None:
        self._held[client] = self._held.get(client, 0) + 1
        self.busy += 1
        self.peak = max(self.peak, self.busy)

    def _give_nolock(self, client: str) -> None:
        left = self._held[client] - 1
        if left:
            self._held[client] = left
        else:
            del self._held[client]
        self.busy -= 1

    def _releaser(self, client: str) -> Release:
        """A release for one held slot; calling it again does nothing."""
        held = [True]  # under the pool's lock: the first call releases

        def release() -> None:
            with self._lock:
                if held[0]:
                    held[0] = False
                    self._give_nolock(client)
                    self._grant_nolock()

        return release

    def _at_once(self, client: str) -> Release | None:
        """A slot taken now when nobody is queued and there is room (the usual case: no
        waiter, no wake-up); None when the caller must queue."""
        with self._lock:
            if self.stopping:
                raise self._shutting_down()
            if self._queue or self.busy >= self.total:
                return None
            if self._held.get(client, 0) >= self.per_client:
                return None
            self._take_nolock(client)
        return self._releaser(client)

    def _enqueue(self, waiter: _Waiter) -> None:
        with self._lock:
            if self.stopping:
                raise self._shutting_down()
            self._queue.append(waiter)
            self._grant_nolock()

    def _settle(self, waiter: _Waiter, wait: float) -> Release:
        """After a wait ended (granted, timed out, stopped or cancelled): the slot's
        release, or ServerBusyError. Never leaves a slot granted to nobody."""
        with self._lock:
            if not waiter.granted:
                with contextlib.suppress(ValueError):  # woken by stop(): no longer queued
                    self._queue.remove(waiter)
                if self.stopping:
                    raise self._shutting_down()
                raise ServerBusyError(
                    f"the server is busy: no {self.what} slot freed up within {wait:.1f} s "
                    f"({self.per_client} per client, {self.total} in all); retry later",
                    retry_after=self._retry_after(),
                )
            if self.stopping:  # queued before shutdown began: nothing more starts
                self._give_nolock(waiter.client)
                self._grant_nolock()
                raise self._shutting_down()
        return self._releaser(waiter.client)

    def _wait_for(self, deadline: float | None) -> float:
        wait = self.queue_timeout
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
        return max(wait, 0.0)

    def _retry_after(self) -> int:
        return max(1, math.ceil(self.queue_timeout / 4))

    def _shutting_down(self) -> ServerBusyError:
        return ServerBusyError(
            "the server is shutting down; retry once it is back", retry_after=self._retry_after()
        )

    # -- the two ways to wait ------------------------------------------------------------------

    def take(self, client: str, deadline: float | None = None) -> Release:
        """Block this thread until ``client`` holds a slot; its release (idempotent).
        ServerBusyError if none frees up within the queue timeout (or before
        ``deadline``, a ``time.monotonic()``)."""
        release = self._at_once(client)
        if release is not None:
            return release
        wait = self._wait_for(deadline)
        granted = threading.Event()
        waiter = _Waiter(client, granted.set)
        self._enqueue(waiter)
        granted.wait(wait)
        return self._settle(waiter, wait)

    async def acquire(self, client: str, deadline: float | None = None) -> Release:
        """:meth:`take` for the event loop: the wait holds no thread."""
        release = self._at_once(client)
        if release is not None:
            return release
        wait = self._wait_for(deadline)
        loop = asyncio.get_running_loop()
        woken = loop.create_future()

        def wake() -> None:  # from any thread, under the pool's lock
            loop.call_soon_threadsafe(_resolve, woken)

        waiter = _Waiter(client, wake)
        self._enqueue(waiter)
        try:
            async with asyncio.timeout(wait):
                await woken
        except TimeoutError:
            pass  # _settle says busy, or takes the slot granted at the last moment
        except BaseException:  # cancelled: a slot granted meanwhile goes back
            with contextlib.suppress(ServerBusyError):
                self._settle(waiter, wait)()
            raise
        return self._settle(waiter, wait)

    @contextlib.asynccontextmanager
    async def hold(self, client: str, deadline: float | None = None) -> AsyncIterator[None]:
        """Hold a slot for ``client`` until the block ends (see :meth:`acquire`)."""
        release = await self.acquire(client, deadline)
        try:
            yield
        finally:
            release()

    def stop(self) -> None:
        """Refuse every queued request now, and every new one (shutdown; any thread)."""
        with self._lock:
            self.stopping = True
            for waiter in list(self._queue):
                with contextlib.suppress(RuntimeError):
                    waiter.wake()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


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
        bookkeeping: the one-row ingest path comes every request)."""
        size = min(size, self.total)
        return 0 if size <= self.free_below else size

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
