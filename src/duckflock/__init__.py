"""duckflock: a live DuckDB for Python.

Many threads write into one database, each with no cursor bookkeeping; see
:func:`connect` and :class:`Database`.
"""

from __future__ import annotations

from .client import Client, RemoteResults
from .database import Database, Results, connect
from .errors import (
    AnalysisError,
    AuthenticationError,
    BindError,
    CatalogError,
    ClosedError,
    ConflictError,
    ConstraintError,
    ConversionError,
    DatabaseDamagedError,
    DuckflockError,
    IngestError,
    IngestTimeoutError,
    ParserError,
    PayloadTooLargeError,
    QueryError,
    QueryRefusedError,
    QueryTimeoutError,
    QueueFullError,
    RequestError,
    ResultTimeoutError,
    RowRejectedError,
    SchemaMismatchError,
    StorageError,
    TransactionAbortedError,
    TransactionError,
    TransportError,
    UnknownAnalysisError,
    UnknownTableError,
    UnsupportedMediaTypeError,
    WriterBrokenError,
)
from .ingest import IngestStats
from .receipts import Receipt
from .results import Result, Subscription

__version__ = "0.1.0"

__all__ = [
    "AnalysisError",
    "AuthenticationError",
    "BindError",
    "CatalogError",
    "Client",
    "ClosedError",
    "ConflictError",
    "ConstraintError",
    "ConversionError",
    "Database",
    "DatabaseDamagedError",
    "DuckflockError",
    "IngestError",
    "IngestStats",
    "IngestTimeoutError",
    "ParserError",
    "PayloadTooLargeError",
    "QueryError",
    "QueryRefusedError",
    "QueryTimeoutError",
    "QueueFullError",
    "Receipt",
    "RemoteResults",
    "RequestError",
    "Result",
    "ResultTimeoutError",
    "Results",
    "RowRejectedError",
    "SchemaMismatchError",
    "StorageError",
    "Subscription",
    "TransactionAbortedError",
    "TransactionError",
    "TransportError",
    "UnknownAnalysisError",
    "UnknownTableError",
    "UnsupportedMediaTypeError",
    "WriterBrokenError",
    "__version__",
    "connect",
]
