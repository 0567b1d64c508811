"""duckflock: a live DuckDB for Python.

Many threads write into one database, each with no cursor bookkeeping; see
:func:`connect` and :class:`Database`.
"""

from __future__ import annotations

from .database import Database, connect
from .errors import (
    AnalysisError,
    BindError,
    CatalogError,
    ClosedError,
    ConflictError,
    ConstraintError,
    ConversionError,
    DuckflockError,
    IngestError,
    IngestTimeoutError,
    ParserError,
    QueryError,
    QueueFullError,
    ResultTimeoutError,
    RowRejectedError,
    SchemaMismatchError,
    StorageError,
    TransactionAbortedError,
    TransactionError,
    UnknownAnalysisError,
    UnknownTableError,
    WriterBrokenError,
)
from .ingest import IngestStats
from .receipts import Receipt
from .results import Result, Subscription

__version__ = "0.1.0"

__all__ = [
    "AnalysisError",
    "BindError",
    "CatalogError",
    "ClosedError",
    "ConflictError",
    "ConstraintError",
    "ConversionError",
    "Database",
    "DuckflockError",
    "IngestError",
    "IngestStats",
    "IngestTimeoutError",
    "ParserError",
    "QueryError",
    "QueueFullError",
    "Receipt",
    "Result",
    "ResultTimeoutError",
    "RowRejectedError",
    "SchemaMismatchError",
    "StorageError",
    "Subscription",
    "TransactionAbortedError",
    "TransactionError",
    "UnknownAnalysisError",
    "UnknownTableError",
    "WriterBrokenError",
    "__version__",
    "connect",
]
