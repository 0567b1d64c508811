"""Every error duckflock raises, in one tree.

::

    DuckflockError                  root: catch this to catch everything duckflock raises
     ├── ClosedError                the Database (or Client) was closed; nothing more can be done
     ├── QueryError                 DuckDB refused or failed a statement (.sql, .params)
     │    ├── CatalogError          unknown table, column, function or schema
     │    │    └── UnknownTableError   insert into a table that does not exist (.table)
     │    ├── ParserError           the SQL does not parse
     │    ├── BindError             wrong parameters, bad types in the SQL itself
     │    ├── ConstraintError       NOT NULL, CHECK, PRIMARY KEY / UNIQUE, FOREIGN KEY
     │    ├── ConversionError       a value cannot be cast to the column's type
     │    └── TransactionError      the transaction could not commit
     │         ├── ConflictError          write-write conflict, still there after every retry
     │         └── TransactionAbortedError a statement failed inside the transaction, so
     │                                      DuckDB rolled it back (its COMMIT says nothing)
     ├── AnalysisError              a live analysis could not be found or waited for
     │    ├── UnknownAnalysisError  no analysis of that name (.name)
     │    └── ResultTimeoutError    no result of the wanted version within the timeout
     └── IngestError                the write path (db.insert) could not take or commit rows
          ├── SchemaMismatchError   unknown column or wrong row width, found before queueing
          ├── RowRejectedError      DuckDB rejected a row of this call (.table, .row_index,
          │                         .row, .cause); other callers' rows were committed
          ├── QueueFullError        the bounded ingest queue stayed full past the timeout
          ├── IngestTimeoutError    waiting for the commit took longer than the timeout
          ├── StorageError          the commit itself failed (I/O, disk full): nothing in the
          │                         batch was acknowledged
          └── WriterBrokenError     the writer thread died; everything waiting on it fails

Programmer mistakes (a non-string SQL, a negative timeout, an unsupported insert type) stay
``TypeError`` / ``ValueError``. DuckDB's own exceptions are translated at the boundary by
:func:`translate`, always ``raise … from exc`` so the original stays on ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

__all__ = [
    "AnalysisError",
    "BindError",
    "CatalogError",
    "ClosedError",
    "ConflictError",
    "ConstraintError",
    "ConversionError",
    "DuckflockError",
    "IngestError",
    "IngestTimeoutError",
    "ParserError",
    "QueryError",
    "QueueFullError",
    "ResultTimeoutError",
    "RowRejectedError",
    "SchemaMismatchError",
    "StorageError",
    "TransactionAbortedError",
    "TransactionError",
    "UnknownAnalysisError",
    "UnknownTableError",
    "WriterBrokenError",
    "translate",
]


class DuckflockError(Exception):
    """Root of every error duckflock raises."""


class ClosedError(DuckflockError):
    """The Database was closed; it cannot be used any more."""


class QueryError(DuckflockError):
    """DuckDB refused or failed a statement. ``.sql`` holds the statement's text."""

    def __init__(self, message: str, *, sql: str | None = None, params: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.sql = sql
        self.params = params

    def __str__(self) -> str:
        if self.sql is None:
            return self.message
        sql = self.sql if len(self.sql) <= 500 else self.sql[:497] + "..."
        return f"{self.message}\nSQL: {sql}"


class CatalogError(QueryError):
    """An unknown table, column, function or schema."""


class UnknownTableError(CatalogError):
    """The table named in an insert does not exist."""

    def __init__(self, table: str, message: str | None = None) -> None:
        super().__init__(message or f"table {table!r} does not exist")
        self.table = table


class ParserError(QueryError):
    """The SQL does not parse."""


class BindError(QueryError):
    """The statement parses but cannot be bound: wrong parameter count or types."""


class ConstraintError(QueryError):
    """A NOT NULL, CHECK, PRIMARY KEY/UNIQUE or FOREIGN KEY constraint failed."""


class ConversionError(QueryError):
    """A value cannot be converted to the column's type."""


class TransactionError(QueryError):
    """The transaction could not be committed."""


class ConflictError(TransactionError):
    """A write-write conflict persisted through every retry."""


class TransactionAbortedError(TransactionError):
    """A statement failed inside the transaction, so DuckDB rolled the whole of it back.

    DuckDB answers COMMIT of such a transaction without error (and rolls back); duckflock
    raises this instead of reporting success.
    """


class AnalysisError(DuckflockError):
    """A live analysis could not be found or waited for."""


class UnknownAnalysisError(AnalysisError, KeyError):
    """No analysis has this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no analysis named {name!r}")
        self.name = name

    def __str__(self) -> str:
        return str(self.args[0])


class ResultTimeoutError(AnalysisError, TimeoutError):
    """No result of the wanted version arrived within the timeout."""


class IngestError(DuckflockError):
    """The write path could not take or commit rows."""


class SchemaMismatchError(IngestError, ValueError):
    """The rows do not fit the table: an unknown column, or a row of the wrong width."""

    def __init__(self, message: str, *, table: str) -> None:
        super().__init__(message)
        self.table = table


class RowRejectedError(IngestError):
    """DuckDB rejected a row of this insert call; the call committed nothing.

    ``.row_index`` is the index of the offending row within the call (``None`` when it
    could not be narrowed down), ``.row`` the row as a dict, ``.cause`` the translated
    DuckDB error (a :class:`ConstraintError`, :class:`ConversionError`, …).
    """

    def __init__(
        self,
        *,
        table: str,
        cause: QueryError,
        row_index: int | None,
        row: dict[str, Any] | None,
    ) -> None:
        where = f"row {row_index}" if row_index is not None else "a row"
        super().__init__(f"insert into {table!r} rejected: {where}: {cause.message}")
        self.table = table
        self.cause = cause
        self.row_index = row_index
        self.row = row


class QueueFullError(IngestError, TimeoutError):
    """The bounded ingest queue stayed full for longer than the caller's timeout."""


class IngestTimeoutError(IngestError, TimeoutError):
    """The rows were accepted but their commit did not finish within the timeout."""


class StorageError(IngestError):
    """The commit failed for a reason that is not the rows' fault (I/O, disk full).

    Nothing in the batch was acknowledged.
    """


class WriterBrokenError(IngestError):
    """The writer thread died; every insert waiting on it, and every later one, fails."""


_BY_DUCKDB_TYPE: Sequence[tuple[type[BaseException], type[QueryError]]] = (
    (duckdb.CatalogException, CatalogError),
    (duckdb.ParserException, ParserError),
    (duckdb.BinderException, BindError),
    (duckdb.InvalidInputException, BindError),
    (duckdb.ConstraintException, ConstraintError),
    (duckdb.ConversionException, ConversionError),
    (duckdb.TransactionException, TransactionError),
)


def translate(exc: BaseException, *, sql: str | None = None, params: Any = None) -> QueryError:
    """Map a DuckDB exception onto duckflock's tree, keeping the SQL text."""
    message = str(exc)
    for duck_type, ours in _BY_DUCKDB_TYPE:
        if isinstance(exc, duck_type):
            if ours is TransactionError and is_conflict(exc):
                return ConflictError(message, sql=sql, params=params)
            return ours(message, sql=sql, params=params)
    return QueryError(message, sql=sql, params=params)


def is_conflict(exc: BaseException) -> bool:
    """True for DuckDB's write-write conflict, the one error worth retrying."""
    return isinstance(exc, duckdb.TransactionException) and "conflict" in str(exc).lower()
