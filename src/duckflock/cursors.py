"""Per-thread DuckDB cursors: created lazily, reused by their thread, closed when it ends.

The guide makes every thread call ``duckdb_con.cursor()`` by hand. Here each thread gets
its own cursor the first time it touches the Database; when the thread ends, CPython drops
its ``threading.local`` slot, and the slot's finalizer closes the cursor, so 10,000
short-lived threads leave no open cursors behind. Explicit cursors (``db.cursor()``, the
writer's, each analysis's) are tracked weakly: their owner closes them, or drops them.

A DuckDB cursor holds one pending result: running a second statement on it replaces the
first one's. So a statement *leases* a cursor of its thread for as long as its result
object lives: ``db.execute(a)`` kept in ``r1`` while ``db.execute(b)`` runs puts ``b`` on
a spare cursor of the same thread, and ``r1`` still reads ``a``'s rows. In the common
``db.execute(…).fetchall()`` the result dies at once and the thread reuses one cursor.
"""

from __future__ import annotations

import threading
import weakref

import duckdb


class Slot:
    """A thread's cursors; when the slot is collected, they are closed.

    ``free`` holds the cursors no live result leases (list append and pop are atomic, so
    a result released on another thread needs no lock).
    """

    __slots__ = ("__weakref__", "all", "cursor", "free")

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self.cursor = cursor  # the thread's first cursor (relations use it)
        self.free = [cursor]
        self.all = [cursor]

    def release(self, cursor: duckdb.DuckDBPyConnection) -> None:
        """A result on ``cursor`` is gone: the cursor may take the next statement."""
        self.free.append(cursor)


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

    def _slot(self) -> Slot:
        slot: Slot | None = getattr(self._local, "slot", None)
        if slot is not None:
            return slot
        slot = Slot(self._register())
        self._local.slot = slot
        weakref.finalize(slot, self._release, slot.all)
        return slot

    def _register(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            self._check_open()
            cursor = self._connection.cursor()
            self._by_thread[id(cursor)] = cursor
        return cursor

    def for_thread(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor, created on first use."""
        return self._slot().cursor

    def lease(self) -> tuple[Slot, duckdb.DuckDBPyConnection]:
        """A cursor of this thread that no live result holds; give it back with
        ``slot.release(cursor)`` when the result is gone."""
        slot = self._slot()
        try:
            return slot, slot.free.pop()
        except IndexError:
            cursor = self._register()
            slot.all.append(cursor)
            return slot, cursor

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

    def _release(self, cursors: list[duckdb.DuckDBPyConnection]) -> None:
        with self._lock:
            mine = [c for c in cursors if self._by_thread.pop(id(c), None) is not None]
        for cursor in mine:
            cursor.close()

    @property
    def open_count(self) -> int:
        """How many cursors are open now (per-thread and explicit)."""
        with self._lock:
            return len(self._by_thread) + len(self._explicit)

    def close_all(self) -> None:
        with self._lock:
            self._closed = True
            cursors = [*self._by_thread.values(), *self._explicit]
            self._by_thread.clear()
            self._explicit.clear()
        for cursor in cursors:
            cursor.close()
