"""Per-thread DuckDB cursors: created lazily, reused by their thread, closed when it ends.

The guide makes every thread call ``duckdb_con.cursor()`` by hand. Here each thread gets
its own cursor the first time it touches the Database; when the thread ends, CPython drops
its ``threading.local`` slot, and the slot's finalizer closes the cursor, so 10,000
short-lived threads leave no open cursors behind. Explicit cursors (``db.cursor()``, the
writer's, each analysis's) are tracked weakly: their owner closes them, or drops them.

A DuckDB cursor holds one pending result: running a second statement on it replaces the
first one's. Every statement of a thread runs on the thread's one cursor (so its
transaction, temp tables, variables and prepared statements carry from one ``execute``
to the next), and a result object the caller still holds when the thread runs its next
statement is dealt with first (:mod:`duckflock.core.statements`): an unread one is kept (its
rows fetched), one half read can no longer be used and says so. Only while an Arrow
reader streams from the thread's cursor does the next statement go to a spare cursor.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable
from typing import Any

import duckdb


class Slot:
    """A thread's cursors; when the slot is collected, they are closed.

    ``cursor`` runs the thread's statements and relations; ``current`` is the result
    of its last statement while the caller holds it; ``statements`` counts them.
    """

    __slots__ = (
        "__weakref__",
        "all",
        "current",
        "cursor",
        "generation",
        "owner",
        "reader",
        "resolving",
        "retire",
        "statements",
    )

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        retire: Callable[[Slot, duckdb.DuckDBPyConnection], None],
        generation: int = 0,
    ) -> None:
        self.cursor = cursor
        self.all = [cursor]
        self.retire = retire
        self.generation = generation  # the connection its cursors belong to (reconnect)
        self.owner = threading.get_ident()
        self.current: weakref.ref[Any] | None = None
        self.reader: weakref.ref[Any] | None = None  # an Arrow reader on ``cursor``
        self.statements = 0
        # a SET schema / search_path or USE ran on ``cursor``: where its names resolve is
        # asked of DuckDB before its next write (duckflock's own schema: project.py)
        self.resolving = False

    def streaming(self) -> bool:
        """True while an Arrow reader streams from the thread's cursor."""
        return self.reader is not None and self.reader() is not None

    def release_with(self, cursor: duckdb.DuckDBPyConnection, reader: object) -> None:
        """``reader`` streams from the spare ``cursor``: close it when the reader goes."""
        weakref.finalize(reader, self.retire, self, cursor)


class CursorPool:
    """Hands each thread its own cursor of one DuckDB connection, and closes them all."""

    def __init__(
        self,
        connection: duckdb.DuckDBPyConnection,
        prepare: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    ) -> None:
        self._connection = connection
        # run on each new cursor (a lake: USE lake, which DuckDB keeps per cursor)
        self._prepare = prepare
        self._local = threading.local()
        # guards _by_thread, _explicit and _closed: cursors are registered from any
        # thread and released from the finalizers of ending threads
        self._lock = threading.Lock()
        # keyed by id(): the dict holds the cursor, so its id stays unique while tracked
        self._by_thread: dict[int, duckdb.DuckDBPyConnection] = {}
        self._explicit: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()
        self._closed = False
        self._generation = 0  # bumped by reconnect: older thread slots are stale
        self._raw_handed_out = False  # set once by raw(), never cleared

    def _slot(self) -> Slot:
        slot: Slot | None = getattr(self._local, "slot", None)
        if slot is not None and slot.generation == self._generation:
            return slot
        generation = self._generation
        slot = Slot(self._register(), self._retire, generation)
        self._local.slot = slot
        weakref.finalize(slot, self._release, slot.all)
        return slot

    def _register(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            self._check_open()
            cursor = self._cursor()
            self._by_thread[id(cursor)] = cursor
        return cursor

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = self._connection.cursor()
        if self._prepare is not None:
            try:
                self._prepare(cursor)
            except BaseException:
                cursor.close()
                raise
        return cursor

    def for_thread(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor, created on first use."""
        return self._slot().cursor

    def slot(self) -> Slot:
        """This thread's cursors, created on first use."""
        return self._slot()

    def spare(self, slot: Slot) -> duckdb.DuckDBPyConnection:
        """A cursor for one statement of ``slot``'s thread; ``slot.retire`` closes it."""
        cursor = self._register()
        slot.all.append(cursor)
        return cursor

    def new(self) -> duckdb.DuckDBPyConnection:
        """A new cursor for an owner that closes it (or drops it); closed by close_all."""
        with self._lock:
            self._check_open()
            cursor = self._cursor()
            self._explicit.add(cursor)
            return cursor

    def raw(self) -> duckdb.DuckDBPyConnection:
        """A new cursor handed to the caller (``db.cursor()``), closed like :meth:`new`'s.

        What runs on it (DDL, macros, SET) reaches no duckflock notice, so from now on
        :attr:`raw_handed_out` is true: whatever duckflock keeps between statements
        because it saw every change (the catalogue of :mod:`duckflock.live.plan.functions`)
        is read again instead.
        """
        cursor = self.new()
        self._raw_handed_out = True  # (a bool store: atomic; readers take no lock)
        return cursor

    @property
    def raw_handed_out(self) -> bool:
        """Whether :meth:`raw` ever handed out a cursor: the one answer to "may the
        database have changed where duckflock does not see it?" (stays true)."""
        return self._raw_handed_out

    def forget(self, cursor: duckdb.DuckDBPyConnection) -> None:
        """Close a cursor from :meth:`new`."""
        with self._lock:
            self._explicit.discard(cursor)
        cursor.close()

    def _retire(self, slot: Slot, cursor: duckdb.DuckDBPyConnection) -> None:
        """Close one leased cursor of ``slot`` (any thread)."""
        with self._lock:
            known = self._by_thread.pop(id(cursor), None) is not None
        with contextlib.suppress(ValueError):
            slot.all.remove(cursor)
        if known:
            with contextlib.suppress(duckdb.Error):
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

    def reconnect(self, connect: Callable[[], duckdb.DuckDBPyConnection]) -> None:
        """Close every cursor and the connection, then hand out cursors of a new one.

        For a database DuckDB invalidated: it can only be reopened once nothing holds
        the old instance. Threads get fresh cursors on their next call.
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


def first_row(result: Any) -> tuple[Any, ...] | None:
    """The first row of ``result`` (a DuckDB cursor after ``execute``, or a
    :class:`~duckflock.core.statements.Results`), read whole: ``fetchone()`` leaves the
    rest unread, and a cursor idling with an unread result keeps its autocommit
    transaction open — DuckDB then refuses every CHECKPOINT ("other write transactions
    are active") once another connection changed the catalog. For one-row queries."""
    rows = result.fetchall()
    return tuple(rows[0]) if rows else None
