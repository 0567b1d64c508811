"""Every error duckflock raises, in one tree.

::

    DuckflockError                  root: catch this to catch everything duckflock raises
     ├── ClosedError                the Database (or Client) was closed; nothing more can be done
     ├── OpenError                  connect() could not open the database file (.path): a
     │    │                         missing folder, no permission, held by another process
     │    ├── DatabaseDamagedError  a damaged WAL or file; the message names it and the way out
     │    └── AlreadyOpenError      another Database of this process has the file open
     ├── QueryError                 DuckDB refused or failed a statement (.sql, .params)
     │    ├── CatalogError          unknown table, column, function or schema
     │    │    └── UnknownTableError   insert into a table that does not exist (.table)
     │    ├── ParserError           the SQL does not parse
     │    ├── BindError             wrong parameters, bad types in the SQL itself
     │    ├── ConstraintError       NOT NULL, CHECK, PRIMARY KEY / UNIQUE, FOREIGN KEY
     │    ├── ConversionError       a value cannot be cast to the column's type
     │    ├── QueryRefusedError     the server's query endpoint does not run this (403)
     │    ├── QueryTimeoutError     the query ran past its time limit and was interrupted
     │    └── TransactionError      the transaction could not commit
     │         ├── ConflictError          write-write conflict, still there after every retry
     │         └── TransactionAbortedError a statement failed inside the transaction, so
     │                                      DuckDB rolled it back (its COMMIT says nothing)
     ├── TransportError             the server could not be reached (client side)
     ├── RequestError               an HTTP request to the server was malformed (400)
     │    ├── AuthenticationError   missing or wrong bearer token (401)
     │    ├── ForbiddenError        the token's role may not do this, or a refused Host (403)
     │    ├── PayloadTooLargeError  the body is over the server's limit (413)
     │    ├── RequestTimeoutError   the body came too slowly: past its deadline (408)
     │    └── UnsupportedMediaTypeError  no parser for that Content-Type (415)
     ├── ServerBusyError            the server's concurrency or memory limits are full (503,
     │                              .retry_after seconds)
     ├── AnalysisError              a live analysis could not be found or waited for
     │    ├── UnknownAnalysisError  no analysis of that name (.name)
     │    └── ResultTimeoutError    no result of the wanted version within the timeout
     └── IngestError                the write path (db.insert) could not take or commit rows
          ├── SchemaMismatchError   unknown column or wrong row width, found before queueing
          ├── RowRejectedError      DuckDB rejected a row of this call (.table, .row_index,
          │                         .row, .cause); other callers' rows were committed
          ├── KeyReusedError        an idempotency key came again with other rows (.key)
          ├── QueueFullError        the bounded ingest queue stayed full past the timeout
          ├── IngestTimeoutError    waiting for the commit took longer than the timeout
          ├── StorageError          the commit itself failed (I/O, disk full): nothing in the
          │                         batch was acknowledged
          └── WriterBrokenError     the writer thread died; everything waiting on it fails

Programmer mistakes (a non-string SQL, a negative timeout, an unsupported insert type) stay
``TypeError`` / ``ValueError``. Every class carries ``http_status``: the server renders
any of them as ``{"error": {"type": <class name>, "message": …, <fields>}}`` with that
status, and the client raises the same class again (:func:`from_payload`), so embedded
and remote code catch the same things. Every class also carries ``sqlstate``, the
PostgreSQL error code the Postgres port sends for it (a subclass inherits its parent's).
DuckDB's own exceptions are translated at the boundary by :func:`translate`, always
``raise … from exc`` so the original stays on ``__cause__``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import duckdb

__all__ = [
    "AlreadyOpenError",
    "AnalysisError",
    "AuthenticationError",
    "BindError",
    "CatalogError",
    "ClosedError",
    "ConflictError",
    "ConstraintError",
    "ConversionError",
    "DatabaseDamagedError",
    "OpenError",
    "DuckflockError",
    "ForbiddenError",
    "IngestError",
    "IngestTimeoutError",
    "KeyReusedError",
    "ParserError",
    "PayloadTooLargeError",
    "QueryError",
    "QueryRefusedError",
    "QueryTimeoutError",
    "QueueFullError",
    "RequestError",
    "RequestTimeoutError",
    "ResultTimeoutError",
    "RowRejectedError",
    "SchemaMismatchError",
    "ServerBusyError",
    "StorageError",
    "TransactionAbortedError",
    "TransactionError",
    "TransportError",
    "UnknownAnalysisError",
    "UnknownTableError",
    "UnsupportedMediaTypeError",
    "WriterBrokenError",
    "from_payload",
    "translate",
]


class DuckflockError(Exception):
    """Root of every error duckflock raises."""

    http_status = 500
    sqlstate = "XX000"  # internal_error

    def fields(self) -> dict[str, Any]:
        """The context worth sending over HTTP (JSON-serialisable)."""
        return {}


class ClosedError(DuckflockError):
    """The Database was closed; it cannot be used any more."""

    http_status = 503
    sqlstate = "57P01"  # admin_shutdown


class OpenError(DuckflockError):
    """``connect()`` could not open the database file; ``.path`` names it."""

    http_status = 500

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path

    def fields(self) -> dict[str, Any]:
        return {"path": self.path}


class AlreadyOpenError(OpenError):
    """Another open Database of this process has the same file (``.path``).

    DuckDB shares one instance per file within a process, so both would write the same
    data, but each Database's notices, caches and analyses see only its own statements:
    the other's commits and DDL would leave them stale. Use the one Database (it is
    safe from any thread), or close it first.
    """


class DatabaseDamagedError(OpenError):
    """The database could not be opened because its file or its WAL is damaged.

    ``.path`` is the database file, ``.wal`` its write-ahead log; the message names the
    damaged file and what to do about it.
    """

    http_status = 500

    def __init__(self, message: str, *, path: str, wal: str) -> None:
        super().__init__(message, path=path)
        self.wal = wal

    def fields(self) -> dict[str, Any]:
        return {"path": self.path, "wal": self.wal}


class QueryError(DuckflockError):
    """DuckDB refused or failed a statement. ``.sql`` holds the statement's text."""

    http_status = 400
    sqlstate = "42000"  # syntax_error_or_access_rule_violation

    def __init__(self, message: str, *, sql: str | None = None, params: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.sql = sql
        self.params = params

    def fields(self) -> dict[str, Any]:
        return {"sql": self.sql}

    def __str__(self) -> str:
        if self.sql is None:
            return self.message
        sql = self.sql if len(self.sql) <= 500 else self.sql[:497] + "..."
        return f"{self.message}\nSQL: {sql}"


class CatalogError(QueryError):
    """An unknown table, column, function or schema."""

    sqlstate = "42P01"  # undefined_table


class UnknownTableError(CatalogError):
    """The table named in an insert does not exist."""

    http_status = 404

    def __init__(self, table: str, message: str | None = None) -> None:
        super().__init__(message or f"table {table!r} does not exist")
        self.table = table

    def fields(self) -> dict[str, Any]:
        return {"table": self.table}


class ParserError(QueryError):
    """The SQL does not parse."""

    sqlstate = "42601"  # syntax_error


class BindError(QueryError):
    """The statement parses but cannot be bound: wrong parameter count or types."""

    sqlstate = "42804"  # datatype_mismatch


class ConstraintError(QueryError):
    """A NOT NULL, CHECK, PRIMARY KEY/UNIQUE or FOREIGN KEY constraint failed."""

    sqlstate = "23000"  # integrity_constraint_violation


class ConversionError(QueryError):
    """A value cannot be converted to the column's type."""

    http_status = 422
    sqlstate = "22P02"  # invalid_text_representation


class QueryRefusedError(QueryError):
    """The server's query endpoint runs one read-only SELECT; this is something else."""

    http_status = 403
    sqlstate = "42501"  # insufficient_privilege


class QueryTimeoutError(QueryError, TimeoutError):
    """The query ran past its time limit and was interrupted."""

    http_status = 504
    sqlstate = "57014"  # query_canceled


class TransactionError(QueryError):
    """The transaction could not be committed."""

    sqlstate = "25000"  # invalid_transaction_state


class ConflictError(TransactionError):
    """A write-write conflict persisted through every retry."""

    http_status = 409
    sqlstate = "40001"  # serialization_failure


class TransactionAbortedError(TransactionError):
    """A statement failed inside the transaction, so DuckDB rolled the whole of it back.

    DuckDB answers COMMIT of such a transaction without error (and rolls back); duckflock
    raises this instead of reporting success. The Postgres port raises it too, for a
    statement sent after a failed one inside BEGIN, until COMMIT or ROLLBACK.
    """

    sqlstate = "25P02"  # in_failed_sql_transaction


class TransportError(DuckflockError, ConnectionError):
    """The client could not reach the server, or the connection broke."""

    http_status = 502
    sqlstate = "XX000"  # internal_error


class RequestError(DuckflockError):
    """An HTTP request was malformed: the message carries the parser's words."""

    http_status = 400
    sqlstate = "42000"  # syntax_error_or_access_rule_violation


class AuthenticationError(RequestError):
    """The bearer token is missing or wrong."""

    http_status = 401
    sqlstate = "28P01"  # invalid_password


class ForbiddenError(RequestError):
    """The token is valid but its role may not do this (or the Host header is refused)."""

    http_status = 403
    sqlstate = "42501"  # insufficient_privilege


class ServerBusyError(DuckflockError):
    """The server's concurrency or memory limits stayed full; retry after a while."""

    http_status = 503
    sqlstate = "53300"  # too_many_connections

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def fields(self) -> dict[str, Any]:
        return {"retry_after": self.retry_after}


class PayloadTooLargeError(RequestError):
    """The request body is larger than the server accepts."""

    http_status = 413


class RequestTimeoutError(RequestError, TimeoutError):
    """The request body did not arrive within its deadline (the server's --body-timeout,
    extended by one second per --min-body-rate bytes received)."""

    http_status = 408
    sqlstate = "57014"  # query_canceled


class UnsupportedMediaTypeError(RequestError):
    """The server has no parser for the request's Content-Type."""

    http_status = 415


class AnalysisError(DuckflockError):
    """A live analysis could not be found or waited for."""

    http_status = 400
    sqlstate = "42000"  # syntax_error_or_access_rule_violation


class UnknownAnalysisError(AnalysisError, KeyError):
    """No analysis has this name."""

    http_status = 404
    sqlstate = "42P01"  # undefined_table

    def __init__(self, name: str) -> None:
        super().__init__(f"no analysis named {name!r}")
        self.name = name

    def fields(self) -> dict[str, Any]:
        return {"name": self.name}

    def __str__(self) -> str:
        return str(self.args[0])


class ResultTimeoutError(AnalysisError, TimeoutError):
    """No result of the wanted version arrived within the timeout."""

    http_status = 504
    sqlstate = "XX000"  # internal_error


class IngestError(DuckflockError):
    """The write path could not take or commit rows."""

    http_status = 422
    sqlstate = "58000"  # system_error


class SchemaMismatchError(IngestError, ValueError):
    """The rows do not fit the table: an unknown column, or a row of the wrong width."""

    def __init__(self, message: str, *, table: str, column: str | None = None) -> None:
        super().__init__(message)
        self.table = table
        self.column = column

    def fields(self) -> dict[str, Any]:
        return {"table": self.table, "column": self.column}


class RowRejectedError(IngestError):
    """DuckDB rejected a row of this insert call; the call committed nothing.

    ``.row_index`` is the index of the offending row within the call (``None`` when it
    could not be narrowed down), ``.row`` the row as a dict, ``.cause`` the translated
    DuckDB error (a :class:`ConstraintError`, :class:`ConversionError`, …).
    """

    sqlstate = "23000"  # integrity_constraint_violation

    def __init__(
        self,
        *,
        table: str,
        cause: QueryError,
        row_index: int | None,
        row: dict[str, Any] | None,
        column: str | None = None,
    ) -> None:
        where = f"row {row_index}" if row_index is not None else "a row"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"insert into {table!r} rejected: {where}: {cause.message}")
        self.table = table
        self.cause = cause
        self.row_index = row_index
        self.row = row
        self.column = column

    def fields(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "row_index": self.row_index,
            "column": self.column,
            "reason": self.cause.message,
            "cause": type(self.cause).__name__,
        }


class KeyReusedError(IngestError):
    """An idempotency key came again with different rows (or another table): the key
    names one batch only. Nothing of this call was written; ``.key`` is the key."""

    http_status = 422
    sqlstate = "23505"  # unique_violation

    def __init__(self, message: str, *, key: str, table: str) -> None:
        super().__init__(message)
        self.key = key
        self.table = table

    def fields(self) -> dict[str, Any]:
        return {"key": self.key, "table": self.table}


class QueueFullError(IngestError, TimeoutError):
    """The bounded ingest queue stayed full for longer than the caller's timeout."""

    http_status = 503
    sqlstate = "53000"  # insufficient_resources


class IngestTimeoutError(IngestError, TimeoutError):
    """The rows were accepted but their commit did not finish within the timeout."""

    http_status = 504


class StorageError(IngestError):
    """The commit failed for a reason that is not the rows' fault (I/O, disk full).

    Nothing in the batch was acknowledged.
    """

    http_status = 500


class WriterBrokenError(IngestError):
    """The writer thread died; every insert waiting on it, and every later one, fails."""

    http_status = 503


_BY_DUCKDB_TYPE: Sequence[tuple[type[BaseException], type[QueryError]]] = (
    (duckdb.CatalogException, CatalogError),
    (duckdb.ParserException, ParserError),
    (duckdb.BinderException, BindError),
    (duckdb.InvalidInputException, BindError),
    (duckdb.ConstraintException, ConstraintError),
    (duckdb.ConversionException, ConversionError),
    (duckdb.TransactionException, TransactionError),
)


# DuckDB suggests the nearest catalog name even when it is one of its own system views
_SYSTEM_SUGGESTION = re.compile(
    r'\nDid you mean "(?:pg_|duckdb_|sqlite_|information_schema|main\.pg_|system\.)[^"]*"\?'
)


def translate(exc: BaseException, *, sql: str | None = None, params: Any = None) -> QueryError:
    """Map a DuckDB exception onto duckflock's tree, keeping the SQL text."""
    message = _SYSTEM_SUGGESTION.sub("", str(exc))
    for duck_type, ours in _BY_DUCKDB_TYPE:
        if isinstance(exc, duck_type):
            if ours is TransactionError and is_conflict(exc):
                return ConflictError(message, sql=sql, params=params)
            return ours(message, sql=sql, params=params)
    return QueryError(message, sql=sql, params=params)


def is_conflict(exc: BaseException) -> bool:
    """True for DuckDB's write-write conflict, the one error worth retrying."""
    return isinstance(exc, duckdb.TransactionException) and "conflict" in str(exc).lower()


def from_payload(payload: dict[str, Any]) -> DuckflockError:
    """Rebuild the error a server sent (``{"type", "message", …fields}``) as its class."""
    name = str(payload.get("type", "DuckflockError"))
    message = str(payload.get("message", "unknown error"))
    cls = globals().get(name)
    if not (isinstance(cls, type) and issubclass(cls, DuckflockError)):
        cls = DuckflockError
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    fields = {k: v for k, v in payload.items() if k not in ("type", "message")}
    if issubclass(cls, QueryError):
        error.message = message  # type: ignore[attr-defined]
        error.sql = fields.pop("sql", None)  # type: ignore[attr-defined]
        error.params = None  # type: ignore[attr-defined]
    if issubclass(cls, RowRejectedError):
        cause_cls = globals().get(str(fields.get("cause")), QueryError)
        error.cause = cause_cls(str(fields.get("reason", message)))  # type: ignore[attr-defined]
        error.row = None  # type: ignore[attr-defined]
    for key, value in fields.items():
        if key != "cause":
            setattr(error, key, value)
    return error
