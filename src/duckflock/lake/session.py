"""One connection to a lake's PostgreSQL catalog kept for the catalog reads of refreshes.

``postgres_query`` on the metadata catalog DuckLake attached takes a connection from the
postgres extension's pool when its DuckDB transaction starts and gives it back when it
ends. With the read itself that is six PostgreSQL statements per read: the pool's health
check (``SELECT 1``) on taking the connection and again on giving it back, ``DISCARD
ALL``, and the extension's ``BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ`` and
``COMMIT`` around the read (counted in the server's log: tests/test_lake_feed.py).

A :class:`Session` keeps one DuckDB cursor in an open transaction that touches only the
``system`` catalog and that PostgreSQL one, so the extension keeps its connection checked
out, and runs each read with ``use_transaction => false``: the read is the only
statement that reaches PostgreSQL, and one statement sees one snapshot of the catalog,
as its own transaction did. (The extension asks PostgreSQL to prepare and describe a
statement when DuckDB binds it, before the ``COPY`` that reads it: three round trips.
A read the caller repeats with the same text, ``query(…, prepared=True)``, is bound
once per session -- a DuckDB ``PREPARE`` -- and each ``EXECUTE`` is the ``COPY`` alone:
one round trip, 0.23 vs 0.41 ms at best, 0.5 vs 3.9 ms median at load 16.)

The transaction is renewed after ``RENEW`` seconds, so no DuckDB transaction stays open
for long, and after any error. A read that failed because the connection was gone (the
catalog restarted, or the cursor the session came from was closed) is tried once more
on a fresh one. Where the catalog is attached read-only (the extension refuses reads
outside a transaction there), or while another thread holds the session, a read is its
own DuckDB statement, as before.

Where psycopg is installed (it is in the ``lake`` extra; ``Session.DIRECT = False`` turns
this off), reads go over a PostgreSQL connection of the session's own instead
(:mod:`duckflock.lake.direct`: a quarter of the CPU), and through the extension where that
connection cannot be had or fails.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import duckdb

from duckflock.core.cursors import first_row
from duckflock.lake import direct as directly
from duckflock.lake.connection import unreachable
from duckflock.sql import quote_literal

_QUERY = "SELECT * FROM system.main.postgres_query(?, ?)"
# qualified: looked up in the cursor's default catalog (the lake), the function would
# begin a DuckLake transaction (a snapshot query) for nothing
_PINNED = "SELECT * FROM system.main.postgres_query(?, ?, use_transaction => false)"


METADATA = "__ducklake_metadata_{}"  # the catalog database DuckLake attaches for a lake


class Session:
    """Reads of the PostgreSQL catalog of the lake attached as ``lake`` on one kept
    connection; shared by the analysis threads, one read at a time."""

    RENEW = 30.0  # seconds one DuckDB transaction holds the connection, then a new one
    KEPT = 16  # prepared reads per session, then the oldest is let go
    DIRECT = True  # reads over psycopg where it is installed (lake/direct.py; the lake extra)

    def __init__(self, lake: str) -> None:
        self.lake = lake
        self.database = METADATA.format(lake)  # (hidden from duckdb_databases())
        self._lock = threading.Lock()  # held for a read on the session's cursor
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self._opened = 0.0
        self._pinned: bool | None = None  # None: not asked yet; False: read-only catalog
        self._prepared: dict[str, str] = {}  # sql -> its DuckDB prepared statement's name
        self._names = 0  # prepared statements named so far (each name used once)
        self.opened = 0  # sessions begun (for tests)
        self._direct: directly.Direct | None = None
        self._direct_at = 0.0  # monotonic time from which a direct connection is tried
        self._direct_lock = threading.Lock()  # held while one is opened
        self.direct_reads = 0  # reads answered by it (for tests)

    def query(
        self, cursor: duckdb.DuckDBPyConnection, sql: str, *, prepared: bool = False
    ) -> list[tuple[Any, ...]]:
        """The rows of PostgreSQL ``sql``; ``cursor``: the caller's, whose database
        holds the catalog (the session's cursor is made from it). ``prepared``: the
        same text will be read again: bind it once for the session."""
        if self.DIRECT:
            direct = self._direct or self._open_direct(cursor)
            if direct is not None:
                try:
                    rows = direct.query(sql, prepared=prepared)
                except directly.Direct.Failed:
                    self._drop_direct(direct)
                else:
                    self.direct_reads += 1
                    return rows
        return self._query(cursor, sql, prepared=prepared)

    def _query(
        self, cursor: duckdb.DuckDBPyConnection, sql: str, *, prepared: bool = False
    ) -> list[tuple[Any, ...]]:
        """:meth:`query` through the postgres extension."""
        if self._pinned is False or not self._lock.acquire(blocking=False):
            return cursor.execute(_QUERY, [self.database, sql]).fetchall()
        try:
            for attempt in range(2):
                session = self._session(cursor)
                if session is None:
                    return cursor.execute(_QUERY, [self.database, sql]).fetchall()
                try:
                    if prepared:
                        return session.execute(f"EXECUTE {self._prepare(session, sql)}").fetchall()
                    return session.execute(_PINNED, [self.database, sql]).fetchall()
                except duckdb.Error as exc:
                    self._end()
                    gone = isinstance(exc, duckdb.ConnectionException) or unreachable(exc)
                    if attempt or not gone:
                        raise
            raise AssertionError("unreachable")  # the loop returns or raises
        finally:
            self._lock.release()

    def _prepare(self, session: duckdb.DuckDBPyConnection, sql: str) -> str:
        """The name of ``sql``'s prepared read on ``session`` (under ``_lock``)."""
        name = self._prepared.get(sql)
        if name is not None:
            return name
        if len(self._prepared) >= self.KEPT:
            oldest = next(iter(self._prepared))
            session.execute(f"DEALLOCATE {self._prepared.pop(oldest)}")
        self._names += 1
        name = f"duckflock_catalog_{self._names}"
        session.execute(
            f"PREPARE {name} AS SELECT * FROM system.main.postgres_query("
            f"{quote_literal(self.database)}, {quote_literal(sql)}, use_transaction => false)"
        )
        self._prepared[sql] = name
        return name

    def _open_direct(self, cursor: duckdb.DuckDBPyConnection) -> directly.Direct | None:
        """A direct connection to the catalog the extension reads, or None (then not
        tried again for ``RENEW`` seconds); one thread opens it, the others meanwhile
        read through the extension."""
        if time.monotonic() < self._direct_at or not self._direct_lock.acquire(blocking=False):
            return None
        try:
            if self._direct is not None:
                return self._direct
            self._direct_at = time.monotonic() + self.RENEW
            direct = directly.reaching(cursor, self.lake, lambda sql: self._query(cursor, sql))
            if direct is None:
                return None
            with self._lock:  # the extension's connection back to its pool
                self._end()
            self._direct = direct
            return direct
        finally:
            self._direct_lock.release()

    def _drop_direct(self, direct: directly.Direct) -> None:
        """Close a direct connection that failed; a new one is tried at once (a
        catalog restart), then, if that fails too, after ``RENEW`` seconds."""
        with self._direct_lock:
            if self._direct is direct:
                self._direct, self._direct_at = None, 0.0
        direct.close()

    def close(self) -> None:
        """Give the connection back (a later read begins a new session)."""
        with self._lock:
            self._end()
        with self._direct_lock:
            direct, self._direct = self._direct, None
        if direct is not None:
            direct.close()

    def _session(self, cursor: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection | None:
        """The session's cursor in its open transaction (under ``_lock``); None where
        the catalog is attached read-only."""
        if self._cursor is not None and time.monotonic() - self._opened < self.RENEW:
            return self._cursor
        self._end()
        if self._pinned is None:
            # DuckLake attaches its catalog read-only where the lake is
            row = first_row(
                cursor.execute(
                    "SELECT readonly FROM duckdb_databases() WHERE database_name = ?",
                    [self.lake],
                )
            )
            self._pinned = row is not None and not row[0]
        if not self._pinned:
            return None
        session = cursor.cursor()  # default catalog: memory, not the lake
        try:
            session.execute("BEGIN TRANSACTION")
        except BaseException:
            session.close()
            raise
        self._cursor, self._opened = session, time.monotonic()
        self.opened += 1
        return session

    def _end(self) -> None:
        """Close the session's cursor (rolling its transaction back gives the
        connection back to the pool)."""
        session, self._cursor = self._cursor, None
        self._prepared.clear()  # (a cursor's prepared statements go with it)
        if session is not None:
            # (an error: its database is already closed, and so is the connection)
            with contextlib.suppress(duckdb.Error):
                session.close()
