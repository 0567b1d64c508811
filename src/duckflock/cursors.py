"""Per-thread DuckDB cursors: created lazily, reused by their thread, closed when it ends.

The guide makes every thread call ``duckdb_con.cursor()`` by hand. Here each thread gets
its own cursor the first time it touches the Database; when the thread ends, CPython drops
its ``threading.local`` slot, and the slot's finalizer closes the cursor, so 10,000
short-lived threads leave no open cursors behind. Explicit cursors (``db.cursor()``, the
writer's, each analysis's) are tracked weakly: their owner closes them, or drops them.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

import duckdb


class _Slot:
    """A thread's hold on its cursor; when the slot is collected, the cursor is closed."""

    __slots__ = ("__weakref__", "cursor", "generation")

    def __init__(self, cursor: duckdb.DuckDBPyConnection, generation: int) -> None:
        self.cursor = cursor
        self.generation = generation  # the connection it belongs to (see reconnect)


class CursorPool:
    """Hands each thread its own cursor of one DuckDB connection, and closes them all."""

    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self._connection = connection
        self._local = threading.local()
        # guards _by_thread, _explicit and _closed: cursors are registered from any
        # thread and released from the finalizers of ending threads
        self._lock = threading.Lock()
        # keyed by id(): the dict holds the cursor, so its id stays unique while tracked
        self._by_thread: dict[int, duckdb.DuckDBPyConnection] = {}
        self._explicit: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()
        self._closed = False
        self._generation = 0  # bumped by reconnect: older thread slots are stale

    def for_thread(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor, created on first use."""
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is not None and slot.generation == self._generation:
            return slot.cursor
        with self._lock:
            self._check_open()
            cursor = self._connection.cursor()
            self._by_thread[id(cursor)] = cursor
            generation = self._generation
        slot = _Slot(cursor, generation)
        self._local.slot = slot
        weakref.finalize(slot, self._release, id(cursor))
        return cursor

    def new(self) -> duckdb.DuckDBPyConnection:
        """A new cursor for an owner that closes it (or drops it); closed by close_all."""
        with self._lock:
            self._check_open()
            cursor = self._connection.cursor()
            self._explicit.add(cursor)
            return cursor

    def forget(self, cursor: duckdb.DuckDBPyConnection) -> None:
        """Close a cursor from :meth:`new`."""
        with self._lock:
            self._explicit.discard(cursor)
        cursor.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("cursor pool is closed")

    def _release(self, key: int) -> None:
        with self._lock:
            cursor = self._by_thread.pop(key, None)
        if cursor is not None:
            cursor.close()

    @property
    def open_count(self) -> int:
        """How many cursors are open now (per-thread and explicit)."""
        with self._lock:
            return len(self._by_thread) + len(self._explicit)

    def reconnect(self, connect: Callable[[], duckdb.DuckDBPyConnection]) -> None:
        """Close every cursor and the connection, then hand out cursors of a new one.

        For a database DuckDB invalidated: it can only be reopened once nothing holds
        the old instance. Threads get a fresh cursor on their next call.
        """
        with self._lock:
            self._check_open()
            cursors = [*self._by_thread.values(), *self._explicit]
            self._by_thread.clear()
            self._explicit.clear()
            self._generation += 1
            for cursor in cursors:
                cursor.close()
            self._connection.close()
            self._connection = connect()

    def close_all(self) -> None:
        with self._lock:
            self._closed = True
            cursors = [*self._by_thread.values(), *self._explicit]
            self._by_thread.clear()
            self._explicit.clear()
        for cursor in cursors:
            cursor.close()
