"""The public surface is exactly what __all__ says, and the error tree is one tree."""

from __future__ import annotations

import duckflock
from duckflock import errors


def test_public_names_are_pinned() -> None:
    assert set(duckflock.__all__) == {
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
    }
    for name in duckflock.__all__:
        assert hasattr(duckflock, name), name


def test_every_error_descends_from_the_root_and_is_drawn_in_the_docstring() -> None:
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, errors.DuckflockError), name
            assert name in doc, f"{name} missing from the tree in errors.py's docstring"
