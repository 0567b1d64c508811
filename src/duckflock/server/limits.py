"""The server's fairness limits: slots for work (the body budget is :mod:`.budget`).

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
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

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
