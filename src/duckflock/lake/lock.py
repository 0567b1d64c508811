"""The lake's commit lock (``LakeOptions.serial_commits``): one duckflock writer at a
time commits into a lake whose catalog is in PostgreSQL."""

from __future__ import annotations

import contextlib

import duckdb

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

    It is ``pg_advisory_xact_lock`` in a transaction of its own, on the catalog's
    PostgreSQL database through DuckLake's own attachment of it (another cursor, so
    another connection of its pool): COMMIT or ROLLBACK of that transaction lets it go,
    and so does PostgreSQL when the process dies. It only orders commits; DuckLake's
    conflict checks still decide them, so a writer that does not take it (another
    program, a lock wait that timed out) is as safe as before. A wait longer than
    ``wait`` seconds (``lock_timeout``), or any error taking it, commits without it.
    """

    KEY = 0x6475636B666C6B  # "duckflk": one lock per PostgreSQL database

    def __init__(self, wait: float, lake: str) -> None:
        self.wait = wait
        self.metadata = metadata(lake)
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self._held = False
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

    def release(self) -> None:
        """Let the lock go (a no-op when not held)."""
        if not self._held or self._cursor is None:
            return
        self._held = False
        try:
            self._cursor.execute("COMMIT")
        except duckdb.Error:  # the catalog went away: so did the lock
            with contextlib.suppress(duckdb.Error):
                self._cursor.execute("ROLLBACK")
