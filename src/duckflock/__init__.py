"""duckflock: a live DuckDB for Python.

Many threads write into one database, each with no cursor bookkeeping; see
:func:`connect` and :class:`Database`.
"""

from __future__ import annotations

from .database import Database, connect
from .errors import (
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
    RowRejectedError,
    SchemaMismatchError,
    StorageError,
    TransactionAbortedError,
    TransactionError,
    UnknownTableError,
    WriterBrokenError,
)
from .ingest import IngestStats
from .receipts import Receipt

__version__ = "0.1.0"

__all__ = [
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
    "RowRejectedError",
    "SchemaMismatchError",
    "StorageError",
    "TransactionAbortedError",
    "TransactionError",
    "UnknownTableError",
    "WriterBrokenError",
    "__version__",
    "connect",
]
