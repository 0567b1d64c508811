"""The server's fairness and memory limits: slots for work, a budget for bodies.

Work that runs SQL (or waits for a result) takes a slot: first one of its client's own
(``per_client``), then one of the server's (``total``). A request that cannot get both
within the queue timeout — or before its own deadline, counted from arrival — is
refused with 503 and ``Retry-After``, so one client's flood waits in its own queue and
never makes another client's trivial query wait behind it. Slots are asyncio
semaphores: a queued request holds no thread.

Request bodies take bytes from one budget before they are read, weighted by what
parsing them costs (a JSON body becomes Python objects many times its size), so many
big bodies at once wait (or get 503) instead of exhausting memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..errors import ServerBusyError


@dataclass
class _Queue:
    semaphore: asyncio.Semaphore
    users: int = 0  # requests holding or waiting for this client's semaphore


class Slots:
    """Per-client and total concurrency for one kind of work."""

    def __init__(self, *, total: int, per_client: int, queue_timeout: float, what: str) -> None:
        if total < 1 or per_client < 1 or not (0 < queue_timeout < math.inf):
            raise ValueError("slots need total >= 1, per_client >= 1 and a finite queue_timeout")
        self.total = total
        self.per_client = per_client
        self.queue_timeout = queue_timeout
        self.what = what
        self._all: asyncio.Semaphore | None = None  # made on the event loop, at first use
        self._clients: dict[str, _Queue] = {}
        self.busy = 0  # slots held now (for /metrics)
        self.waiting = 0  # requests waiting for a slot now (for /metrics)
        self.stopping = False  # set at shutdown: queued requests are refused

    @contextlib.asynccontextmanager
    async def hold(self, client: str, deadline: float | None = None) -> AsyncIterator[None]:
        """Hold a slot for ``client`` until the block ends; ServerBusyError if none frees
        up within the queue timeout (or before ``deadline``, a ``time.monotonic()``)."""
        if self._all is None:
            self._all = asyncio.Semaphore(self.total)
        queue = self._clients.get(client)
        if queue is None:
            queue = self._clients[client] = _Queue(asyncio.Semaphore(self.per_client))
        queue.users += 1
        wait = self.queue_timeout
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
        got_client = got_all = False
        try:
            try:
                self.waiting += 1
                try:
                    async with asyncio.timeout(max(wait, 0.0)):
                        await queue.semaphore.acquire()
                        got_client = True
                        await self._all.acquire()
                        got_all = True
                finally:
                    self.waiting -= 1
            except TimeoutError:
                raise ServerBusyError(
                    f"the server is busy: no {self.what} slot freed up within {wait:.1f} s "
                    f"({self.per_client} per client, {self.total} in all); retry later",
                    retry_after=max(1, math.ceil(self.queue_timeout / 4)),
                ) from None
            if self.stopping:  # queued before shutdown began: nothing more starts
                raise ServerBusyError(
                    "the server is shutting down; retry once it is back",
                    retry_after=max(1, math.ceil(self.queue_timeout / 4)),
                )
            self.busy += 1
            try:
                yield
            finally:
                self.busy -= 1
        finally:
            if got_all:
                self._all.release()
            if got_client:
                queue.semaphore.release()
            queue.users -= 1
            if queue.users == 0:
                self._clients.pop(client, None)


class ByteBudget:
    """Bytes of request bodies (weighted by parse cost) the server holds at once."""

    def __init__(self, total: int, queue_timeout: float, free_below: int = 0) -> None:
        self.total = total
        self.free_below = free_below
        self.queue_timeout = queue_timeout
        self.used = 0
        self._freed: asyncio.Condition | None = None

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        size = min(size, self.total)  # one body alone may always use the whole budget
        if size <= self.free_below:  # small bodies: not worth the bookkeeping
            yield
            return
        if self._freed is None:
            self._freed = asyncio.Condition()
        async with self._freed:
            try:
                async with asyncio.timeout(self.queue_timeout):
                    await self._freed.wait_for(lambda: self.used + size <= self.total)
            except TimeoutError:
                raise ServerBusyError(
                    "the server is busy parsing other large bodies; retry later",
                    retry_after=max(1, math.ceil(self.queue_timeout / 4)),
                ) from None
            self.used += size
        try:
            yield
        finally:
            async with self._freed:
                self.used -= size
                self._freed.notify_all()
