"""duckflock: a live DuckDB for Python.

Many threads write into one database, each with no cursor bookkeeping; see
:func:`connect` and :class:`Database`. This module needs DuckDB and pyarrow only: the
HTTP :class:`Client` (``duckflock[client]``), the server (``[server]``) and the command
line (``[cli]``) are extras, imported when first used.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from duckflock.core.statements import Results
from duckflock.database import Database, connect
from duckflock.errors import (
    AlreadyOpenError,
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
    ForbiddenError,
    IngestError,
    IngestTimeoutError,
    KeyReusedError,
    OpenError,
    ParserError,
    PayloadTooLargeError,
    QueryError,
    QueryRefusedError,
    QueryTimeoutError,
    QueueFullError,
    RequestError,
    RequestTimeoutError,
    ResultTimeoutError,
    RowRejectedError,
    SchemaMismatchError,
    ServerBusyError,
    StorageError,
    TransactionAbortedError,
    TransactionError,
    TransportError,
    UnknownAnalysisError,
    UnknownTableError,
    UnsupportedMediaTypeError,
    WriterBrokenError,
)
from duckflock.ingest.receipts import Receipt
from duckflock.ingest.stats import IngestStats
from duckflock.lake.connection import LakeOptions
from duckflock.live.changes import Change
from duckflock.live.results import Result, Subscription

if _TYPE_CHECKING:  # imported on first use: the HTTP client is the [client] extra
    from duckflock.client import Client, RemoteResults

__version__ = "0.1.0"

_LAZY = {"Client", "RemoteResults"}


def __getattr__(name: str) -> _Any:
    """``duckflock.Client`` imports the HTTP client (httpx) only when first asked for."""
    if name in _LAZY:
        from duckflock.extras import missing

        try:
            from duckflock import client
        except ImportError as exc:
            raise missing("client", "duckflock.Client", exc) from exc
        return getattr(client, name)
    raise AttributeError(f"module 'duckflock' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "AlreadyOpenError",
    "AnalysisError",
    "AuthenticationError",
    "BindError",
    "CatalogError",
    "Change",
    "Client",
    "ClosedError",
    "ConflictError",
    "ConstraintError",
    "ConversionError",
    "Database",
    "DatabaseDamagedError",
    "DuckflockError",
    "ForbiddenError",
    "IngestError",
    "IngestStats",
    "IngestTimeoutError",
    "KeyReusedError",
    "LakeOptions",
    "OpenError",
    "ParserError",
    "PayloadTooLargeError",
    "QueryError",
    "QueryRefusedError",
    "QueryTimeoutError",
    "QueueFullError",
    "Receipt",
    "RemoteResults",
    "RequestError",
    "RequestTimeoutError",
    "Result",
    "ResultTimeoutError",
    "Results",
    "RowRejectedError",
    "SchemaMismatchError",
    "ServerBusyError",
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
