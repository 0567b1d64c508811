"""The last results of each analysis, kept in memory for a chart over time.

The library keeps only an analysis's latest result; the server keeps a few more so a
dashboard can draw how a result moved (``GET /v1/analyses/{name}/history``). The
history is bounded twice: at most ``results`` versions per analysis, and at most
``max_bytes`` of Arrow buffers in all (the oldest version of any analysis goes first;
a single result over the whole bound is not kept). It is the server's own memory: a
restart starts it afresh, and a slow reader sees the versions the feeder saw (a
burst of refreshes may skip some, as every watcher does).

:class:`History` is written by the :class:`Feeder`'s tasks on the server's event loop
and by a route catching up on the latest result; it is read by routes in worker threads.
Its lock guards every field.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC

import pyarrow as pa
from starlette.concurrency import run_in_threadpool

from duckflock.database import Database
from duckflock.errors import DuckflockError
from duckflock.live.results import Result

log = logging.getLogger("duckflock")

FOLLOW_EVERY = 1.0  # seconds between looks for analyses defined outside the HTTP API


def _size(result: Result) -> int:
    return int(result.table.get_total_buffer_size())


class History:
    """Per analysis name, its last ``results`` results within ``max_bytes`` in all."""

    def __init__(self, *, results: int, max_bytes: int) -> None:
        self.limit = results
        self.max_bytes = max_bytes
        # guards _kept and _bytes
        self._lock = threading.Lock()
        self._kept: dict[str, deque[Result]] = {}
        self._bytes = 0

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def record(self, result: Result) -> None:
        """Keep ``result`` unless a version as new is kept already (the feeder and a
        reader catching up both saw it). A dropped analysis is forgotten by the feeder,
        so one defined again under its name starts afresh."""
        size = _size(result)
        with self._lock:
            kept = self._kept.setdefault(result.name, deque())
            if kept and kept[-1].version >= result.version:
                return
            if size > self.max_bytes:
                return  # bigger than the whole bound: charted from its events only
            kept.append(result)
            self._bytes += size
            if len(kept) > self.limit:
                self._bytes -= _size(kept.popleft())
            while self._bytes > self.max_bytes:
                oldest = min((q for q in self._kept.values() if q), key=lambda q: q[0].refreshed_at)
                self._bytes -= _size(oldest.popleft())

    def forget(self, name: str) -> None:
        with self._lock:
            self._drop_all(name)

    def _drop_all(self, name: str) -> None:  # caller holds _lock
        for result in self._kept.pop(name, ()):
            self._bytes -= _size(result)

    def results(self, name: str) -> list[Result]:
        """The kept results of ``name``, oldest first."""
        with self._lock:
            return list(self._kept.get(name, ()))

    def names(self) -> set[str]:
        with self._lock:
            return {name for name, kept in self._kept.items() if kept}


def history_table(results: list[Result], last: int | None = None) -> tuple[pa.Table, list[int]]:
    """The ``last`` (default: all) results in one table, and their versions: ``version``
    and ``refreshed_at`` (UTC), then the result's columns, one row per result row, oldest
    version first.

    Only the versions shaped like the newest are included (an edit that changed the
    columns starts the chart afresh). A result column already named ``version`` or
    ``refreshed_at`` keeps its name; the history's own column gets a ``_`` prefix.
    """
    if last is not None:
        results = results[-last:] if last else []
    if not results:
        return pa.table({"version": pa.array([], pa.int64())}), []
    schema = results[-1].table.schema
    same = [r for r in results if r.table.schema.equals(schema)]
    names = set(schema.names)

    def free(name: str) -> str:
        while name in names:
            name = "_" + name
        return name

    version, at = free("version"), free("refreshed_at")
    parts = []
    for result in same:
        rows = result.table.num_rows
        when = result.refreshed_at.astimezone(UTC)
        table = result.table.add_column(0, at, pa.array([when] * rows, pa.timestamp("us", "UTC")))
        parts.append(table.add_column(0, version, pa.array([result.version] * rows, pa.int64())))
    return pa.concat_tables(parts).combine_chunks(), [r.version for r in same]


class Feeder:
    """Follows every analysis of ``db`` into ``history``: one task per analysis reading
    ``db.watch_async``, started by :meth:`follow` (the define route calls it) or by a look
    at ``db.analyses()`` every :data:`FOLLOW_EVERY` seconds (analyses from the config or
    the library). A task ends when its analysis is dropped or the database closes.

    Owner: the server's event loop (start, follow, stop run there).
    """

    def __init__(self, db: Database, history: History, *, every: float = FOLLOW_EVERY) -> None:
        self.db = db
        self.history = history
        self.every = every
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._looker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._looker = asyncio.get_running_loop().create_task(self._look())

    def follow(self, name: str) -> None:
        task = self._tasks.get(name)
        if task is None or task.done():
            self._tasks[name] = asyncio.get_running_loop().create_task(self._feed(name))

    async def _feed(self, name: str) -> None:
        try:
            async for result in self.db.watch_async(name):
                self.history.record(result)
        except DuckflockError:  # dropped before it was followed, or closing
            pass
        finally:
            if self._tasks.get(name) is asyncio.current_task():
                del self._tasks[name]
        self.history.forget(name)  # the watch ended: the analysis was dropped

    async def _look(self) -> None:
        while not self.db.closed:
            try:
                current = {a["name"] for a in await run_in_threadpool(self.db.analyses)}
            except DuckflockError:
                return  # closed meanwhile
            except Exception:  # a bug must not end the history quietly: say so, go on
                log.exception("the analysis history could not list the analyses")
                await asyncio.sleep(self.every)
                continue
            for name in current:
                self.follow(name)
            for name in self.history.names() - current:
                self.history.forget(name)  # dropped
            await asyncio.sleep(self.every)

    async def stop(self) -> None:
        tasks: list[asyncio.Task[None]] = list(self._tasks.values())
        if self._looker is not None:
            tasks.append(self._looker)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def catch_up(history: History, latest: Callable[[], Result | None]) -> None:
    """Record the analysis's latest result now (a reader asking for the history must see
    at least what ``/result`` would give it, whatever the feeder has reached)."""
    found = latest()
    if found is not None:
        history.record(found)
