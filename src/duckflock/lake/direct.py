"""The lake's catalog read over a PostgreSQL connection of its own, where psycopg is installed.

A catalog read through the postgres extension (:mod:`duckflock.lake.session`) is a DuckDB
statement: it wakes DuckDB's worker threads, binds, runs the ``COPY`` and converts the
rows, ~1 ms of this process's CPU for one small statement. The same statement sent by
psycopg costs 0.04 ms of CPU (0.07 ms wall) in a loop and 0.3 ms (0.65 ms wall) between
refreshes, against 1.4 ms (5 ms wall) through DuckDB, at load 6 on 2 cores. psycopg is
in the ``lake`` extra, not a dependency of the library, so :class:`Direct` is used only
where it is importable (and ``Session.DIRECT`` is left on), for lakes whose target names
the catalog's connection string (``ducklake:postgres:<dsn>``: DuckDB shows it as the
lake's path) and whose direct connection reaches the same database the extension reads:
checked once, by asking both for the database's name and its server's start time.
Anything else -- a secret in place of the connection string, a password the extension
found elsewhere, a failed connection, a read past ``Direct.READ_TIMEOUT`` -- leaves the
reads to the extension. Each read is one autocommit statement (one snapshot of the
catalog, as the extension's read without a transaction), prepared by PostgreSQL where
repeated.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import duckdb

from duckflock.core.cursors import first_row

# the server (its start, to the microsecond) and the database a connection reached
IDENTITY = "SELECT current_database()::text, extract(epoch FROM pg_postmaster_start_time())::text"
_PREFIX = "postgres:"  # the lake's path in duckdb_databases(): the catalog's libpq string


def available() -> bool:
    """Whether psycopg can be imported (it is not a dependency of the library)."""
    return importlib.util.find_spec("psycopg") is not None


def dsn_of(cursor: duckdb.DuckDBPyConnection, lake: str) -> str | None:
    """The libpq connection string of the lake ``lake``'s catalog, as DuckDB shows its
    path; None where its catalog is not PostgreSQL's or the string is empty (a secret)."""
    row = first_row(
        cursor.execute("SELECT path FROM duckdb_databases() WHERE database_name = ?", [lake])
    )
    path = str(row[0]) if row and row[0] else ""
    if not path.startswith(_PREFIX) or not path[len(_PREFIX) :].strip():
        return None
    return path[len(_PREFIX) :]


class Direct:
    """One autocommit psycopg connection to the catalog; :meth:`query` raises
    :class:`Failed` for any failure of the connection or the statement."""

    class Failed(Exception):
        """The direct read failed: the caller reads through the extension instead."""

    CONNECT_TIMEOUT = 5  # seconds
    # seconds one read may take: a read past it fails (and goes through the extension)
    # rather than hold the refresh. The server ends a slow statement (statement_timeout:
    # a lock wait, an overloaded catalog); the kernel a connection whose server no
    # longer answers (TCP keepalives; data unacknowledged: tcp_user_timeout). A stopped
    # backend (SIGSTOP) does neither, its kernel still answering: a watch thread cuts
    # the connection (shuts its socket down) once a read runs twice this long.
    READ_TIMEOUT = 10.0

    def __init__(self, dsn: str) -> None:
        import psycopg

        self._errors: tuple[type[BaseException], ...] = (psycopg.Error,)
        self._lock = threading.Lock()
        bound = max(1, round(self.READ_TIMEOUT * 1000))  # milliseconds
        dead: dict[str, Any] = {"keepalives": 1, "keepalives_idle": max(1, bound // 2000)}
        dead |= {"keepalives_interval": 1, "keepalives_count": 2}
        if psycopg.pq.version() >= 120000:  # libpq 12 knows tcp_user_timeout
            dead["tcp_user_timeout"] = bound
        try:
            self._connection = psycopg.connect(
                dsn, autocommit=True, connect_timeout=self.CONNECT_TIMEOUT, **dead
            )
        except psycopg.Error as exc:
            # (psycopg's message may quote the connection string: not chained)
            raise self.Failed(type(exc).__name__) from None
        # closed when dropped too (a Session is not closed with its database)
        weakref.finalize(self, self._connection.close)
        self._since: float | None = None  # when the running read began (monotonic)
        self._stop = threading.Event()
        weakref.finalize(self, self._stop.set)
        every = self.READ_TIMEOUT / 2
        watch = threading.Thread(
            target=_watch, args=(weakref.ref(self), self._stop, every), daemon=True
        )
        watch.name = "duckflock-catalog-watch"
        watch.start()
        try:  # a SET, not the startup's options (a pooler such as PgBouncer refuses those)
            self._connection.execute(f"SET statement_timeout = {bound}")
        except psycopg.Error as exc:
            self.close()
            raise self.Failed(type(exc).__name__) from None

    def query(self, sql: str, *, prepared: bool = False) -> list[tuple[Any, ...]]:
        """The rows of ``sql``, one statement (``prepared``: PostgreSQL keeps its plan)."""
        with self._lock:
            self._since = time.monotonic()
            try:
                rows = self._connection.execute(sql, prepare=prepared).fetchall()
            except self._errors as exc:
                raise self.Failed(type(exc).__name__) from None
            finally:
                self._since = None
        return [tuple(row) for row in rows]

    def overdue(self) -> None:
        """Cut the connection if a read has run past twice ``READ_TIMEOUT`` (the watch
        thread's check): its blocked read then fails at once."""
        since = self._since
        if since is None or time.monotonic() - since < 2 * self.READ_TIMEOUT:
            return
        with contextlib.suppress(OSError, *self._errors):
            cut = socket.socket(fileno=os.dup(self._connection.fileno()))
            with cut:
                cut.shutdown(socket.SHUT_RDWR)  # the socket, not only this descriptor

    def close(self) -> None:
        self._stop.set()
        with self._lock, contextlib.suppress(*self._errors):
            self._connection.close()


def reaching(
    cursor: duckdb.DuckDBPyConnection,
    lake: str,
    extension_reads: Callable[[str], list[tuple[Any, ...]]],
) -> Direct | None:
    """A direct connection to the database the extension reads (``extension_reads``
    answers a query through it), or None: psycopg missing, the lake's path not the
    catalog's connection string (a secret), the open failing, or another server or
    database answering (:data:`IDENTITY` compared on both)."""
    dsn = dsn_of(cursor, lake) if available() else None
    if dsn is None:
        return None
    try:
        direct = Direct(dsn)
    except Direct.Failed:
        return None
    try:
        same = direct.query(IDENTITY) == [tuple(row) for row in extension_reads(IDENTITY)]
    except (Direct.Failed, duckdb.Error):
        same = False
    if not same:
        direct.close()
        return None
    return direct


def _watch(direct: weakref.ref[Direct], stop: threading.Event, every: float) -> None:
    """Check ``direct``'s running read every ``every`` seconds, until it is closed or
    dropped (held weakly: the thread keeps nothing alive)."""
    while not stop.wait(every):
        found = direct()
        if found is None:
            return
        found.overdue()
        del found
