"""The lake's commit lock (``LakeOptions.serial_commits``): one duckflock writer at a
time commits into a lake whose catalog is in PostgreSQL."""

from __future__ import annotations

import contextlib
import time

import duckdb

from duckflock.lake import direct as directly
from duckflock.sql import quote_literal


def metadata(lake: str) -> str:
    """The name DuckLake attaches the catalog of the lake ``lake`` under (1.5.5)."""
    return f"__ducklake_metadata_{lake}"


class CommitLock:
    """The lake's commit lock: one duckflock writer at a time commits into the lake.

    Measured on 1.5.5 (PostgreSQL's log): DuckLake opens its catalog transaction
    (REPEATABLE READ) at the batch's first read of the lake, writes the Parquet file,
    then at COMMIT inserts snapshot id latest + 1 and updates the table's stats row. A
    writer that committed in between makes that fail (a primary-key or serialisation
    error), and DuckLake rolls back, sleeps and tries again: with 4 busy writers about
    1.5 rollbacks per 10,000-row commit (``benchmarks/lake.py``). Taken before the
    catalog transaction's snapshot -- first thing in the batch's transaction -- and held
    to its COMMIT, this lock leaves nobody a race to lose, at the price of one writer's
    Parquet write at a time.

    Where psycopg is installed and reaches the database the extension reads (checked
    once, as :mod:`duckflock.lake.direct`'s reads are), it is a session lock on a
    connection of its own: ``pg_advisory_lock`` to take it, ``pg_advisory_unlock`` to
    let it go, one round trip each. Else it is ``pg_advisory_xact_lock`` in a
    transaction of its own, on the catalog's PostgreSQL database through DuckLake's own
    attachment of it (another cursor, so another connection of its pool): a DuckDB
    statement and ~6 PostgreSQL round trips per commit, COMMIT or ROLLBACK of that
    transaction lets it go. Either way PostgreSQL lets it go when the process dies. It
    only orders commits; DuckLake's conflict checks still decide them, so a writer that
    does not take it (another program, a lock wait that timed out) is as safe as
    before. A wait longer than ``wait`` seconds (``lock_timeout``), or any error
    taking it, commits without it.
    """

    KEY = 0x6475636B666C6B  # "duckflk": one lock per PostgreSQL database
    RENEW = 30.0  # seconds after a failed try before the lock's own connection is tried again

    def __init__(self, wait: float, lake: str) -> None:
        self.wait = wait
        self.lake = lake
        self.metadata = metadata(lake)
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self._held = False
        self._direct: directly.Direct | None = None
        self._direct_at = 0.0  # monotonic time from which a connection of its own is tried
        self.taken = 0  # commits under the lock, for stats
        self.missed = 0  # commits without it (timed out, or the catalog away)

    @staticmethod
    def possible(connection: duckdb.DuckDBPyConnection, lake: str) -> bool:
        """Whether the catalog of the lake attached as ``lake`` is a PostgreSQL database
        (the lock lives there): asked by running ``SELECT 1`` there, as the lock will."""
        try:
            connection.execute(
                f"CALL postgres_execute({quote_literal(metadata(lake))}, 'SELECT 1')"
            )
        except duckdb.Error:
            return False
        return True

    def acquire(self, writer: duckdb.DuckDBPyConnection) -> None:
        """Wait for the lock (at most ``wait`` seconds), on a cursor of ``writer``'s."""
        if self._cursor is None:
            self._cursor = writer.cursor()
        if self._direct is None and time.monotonic() >= self._direct_at:
            # (not tried again for RENEW seconds if it cannot be had: psycopg missing, a
            # secret for the dsn, another database, or the catalog away right now)
            self._direct_at = time.monotonic() + self.RENEW
            self._direct = self._open_direct(self._cursor)
        if self._direct is not None:
            try:
                self._direct.query(f"SELECT pg_advisory_lock({self.KEY})")
            except directly.Direct.Failed as exc:
                self.missed += 1
                if str(exc) != "LockNotAvailable":  # not the wait: the connection failed
                    self._drop_direct()
                return
            self._held = True
            self.taken += 1
            return
        sql = (
            f"SET LOCAL lock_timeout = '{max(1, round(self.wait * 1000))}ms'; "
            f"SELECT pg_advisory_xact_lock({self.KEY})"
        )
        try:
            self._cursor.execute("BEGIN TRANSACTION")
            self._cursor.execute(
                f"CALL postgres_execute({quote_literal(self.metadata)}, {quote_literal(sql)})"
            )
        except duckdb.Error:
            self.missed += 1
            with contextlib.suppress(duckdb.Error):
                self._cursor.execute("ROLLBACK")
            # made again next time from the writer's cursor then (the database may have
            # been reopened since: this one's connection is closed)
            self._cursor = None
            return
        self._held = True
        self.taken += 1

    def _open_direct(self, cursor: duckdb.DuckDBPyConnection) -> directly.Direct | None:
        """A psycopg connection to the catalog's database, its lock wait bounded by
        ``wait``; None where psycopg is missing, the catalog's connection string is not
        the lake's path (a secret) or it reaches another database than the extension."""
        identity = f"SELECT * FROM postgres_query({quote_literal(self.metadata)}, ?)"
        direct = directly.reaching(
            cursor, self.lake, lambda sql: cursor.execute(identity, [sql]).fetchall()
        )
        if direct is None:
            return None
        wait = max(1, round(self.wait * 1000))
        try:
            # the wait is the lock's bound; the connection's statement_timeout above it
            direct.query(f"SELECT set_config('lock_timeout', '{wait}ms', false)")
            timeout = wait + round(direct.READ_TIMEOUT * 1000)
            direct.query(f"SELECT set_config('statement_timeout', '{timeout}ms', false)")
        except directly.Direct.Failed:
            direct.close()
            return None
        return direct

    def _drop_direct(self) -> None:
        """Close the lock's connection (PostgreSQL lets a lock it held go); the next
        commit opens a new one."""
        if self._direct is not None:
            self._direct.close()
        self._direct, self._direct_at = None, 0.0

    def release(self) -> None:
        """Let the lock go (a no-op when not held)."""
        if not self._held:
            return
        self._held = False
        if self._direct is not None:
            try:
                self._direct.query(f"SELECT pg_advisory_unlock({self.KEY})")
            except directly.Direct.Failed:  # whether it let go is unknown: end the session
                self._drop_direct()
            return
        if self._cursor is None:
            return
        try:
            self._cursor.execute("COMMIT")
        except duckdb.Error:  # the catalog went away: so did the lock
            with contextlib.suppress(duckdb.Error):
                self._cursor.execute("ROLLBACK")
