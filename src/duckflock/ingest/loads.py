"""A file's chunks into a table in one transaction: all of them, or nothing.

``duckflock load`` streams a file in bounded chunks; committing each on its own left a
partial table behind a bad line. Here every chunk goes in on one cursor inside one
transaction (memory stays at one chunk; DuckDB spills what it must), optionally after
the ``CREATE TABLE`` that makes the table, so a failure leaves the database exactly as
it was. The failing row is then found by a prefix search over its chunk in transactions
that are rolled back, and named with its column when DuckDB's message names one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

import duckdb
import pyarrow as pa

from duckflock.core import project
from duckflock.core.transactions import rollback_quietly
from duckflock.errors import QueryError, RowRejectedError
from duckflock.ingest import keys
from duckflock.ingest.files import Chunk
from duckflock.ingest.rejections import column_in
from duckflock.sql import quote_ident

T = TypeVar("T")


class Transactional(Protocol):
    """What a load needs of the database (``duckflock.Database`` is one): a transaction
    that counts as a statement and tells the analyses it committed, and a cursor of its
    own for the rolled-back search of a refused row (``own_cursor``: the search changes
    nothing, so the Database keeps trusting its kept catalogue and settings, which a
    raw ``cursor()`` would end)."""

    def transaction(self, fn: Callable[..., T], /, *args: Any, retries: int = ...) -> T: ...

    def own_cursor(self) -> duckdb.DuckDBPyConnection: ...


_VIEW = "__duckflock_load"
# the view's columns are the file's, so a cast error names the file's column
_CAST_COLUMN = re.compile(r"when casting from source column (\w+)")


class ChunkRejectedError(Exception):
    """A row of ``chunk`` was refused; nothing of the load was committed. ``error``
    names the row within the chunk (``row_index``, None when only running the earlier
    chunks with it fails: a key that repeats one of theirs) and the column."""

    def __init__(self, chunk: Chunk, error: RowRejectedError) -> None:
        super().__init__(str(error))
        self.chunk = chunk
        self.error = error


def _append(cursor: duckdb.DuckDBPyConnection, table: str, data: pa.Table) -> None:
    columns = ", ".join(quote_ident(name) for name in data.column_names)
    sql = f"INSERT INTO {table} ({columns}) SELECT * FROM {_VIEW}"
    project.check_statement(sql)  # the raw cursor asks nothing: duckflock's schema is not written
    cursor.register(_VIEW, data)
    try:
        cursor.execute(sql)
    finally:
        cursor.unregister(_VIEW)


def insert_all(
    db: Transactional,
    table: str,
    chunks: Iterable[Chunk],
    *,
    create: str | None = None,
    on_chunk: Callable[[Chunk, int], None] | None = None,
    key: str | None = None,
) -> int:
    """Append every chunk to ``table`` (quoted SQL) in one transaction, after ``create``
    (DDL making the table) when given; the rows appended. ``on_chunk(chunk, rows so
    far)`` follows each chunk. Raises :class:`ChunkRejectedError` for a refused row,
    :class:`QueryRefusedError` for a table in duckflock's own schema
    (:func:`project.check_statement`), or what reading ``chunks`` raises, with nothing
    committed."""
    if create is not None:
        project.check_statement(create)  # not a table in duckflock's own schema
    failed: list[tuple[Chunk, duckdb.Error]] = []

    def load(cursor: duckdb.DuckDBPyConnection) -> int:
        if key is not None and (done := keys.loaded(cursor, key)) is not None:
            return done  # this very load committed before: nothing is written again
        if create is not None:
            cursor.execute(create)
        total = 0
        for chunk in chunks:
            try:
                _append(cursor, table, chunk.table)
            except duckdb.Error as exc:
                failed.append((chunk, exc))
                raise
            total += chunk.table.num_rows
            if on_chunk is not None:
                on_chunk(chunk, total)
        if key is not None:
            keys.record_load(cursor, key, table, total)  # in the same commit as the rows
        return total

    try:
        return db.transaction(load, retries=0)
    except QueryError as exc:
        if not failed:
            raise
        chunk, _ = failed[0]
        row = _first_refused(db, table, create, chunk)
        message = exc.message
        column = column_in(message)
        if column is None:
            found = _CAST_COLUMN.search(message)
            column = found.group(1) if found else None
        rejected = RowRejectedError(
            table=table,
            cause=exc,
            row_index=row,
            row=None if row is None else chunk.table.slice(row, 1).to_pylist()[0],
            column=column,
        )
        raise ChunkRejectedError(chunk, rejected) from None


def _first_refused(db: Transactional, table: str, create: str | None, chunk: Chunk) -> int | None:
    """The first row of ``chunk`` that fails on its own (prefix search, rolled back);
    None when the chunk alone goes in (the conflict is with an earlier chunk)."""

    def fails(rows: int) -> bool:
        try:
            cursor.execute("BEGIN TRANSACTION")
            if create is not None:
                cursor.execute(create)
            _append(cursor, table, chunk.table.slice(0, rows))
        except duckdb.Error:
            return True
        finally:
            rollback_quietly(cursor)
        return False

    cursor = db.own_cursor()
    try:
        if not fails(chunk.table.num_rows):
            return None
        low, high = 1, chunk.table.num_rows
        while low < high:
            middle = (low + high) // 2
            if fails(middle):
                high = middle
            else:
                low = middle + 1
        return low - 1
    finally:
        cursor.close()
