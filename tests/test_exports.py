"""The public surface is exactly what __all__ says, and the error tree is one tree."""

from __future__ import annotations

import types

import duckflock
from duckflock import errors


def test_public_names_are_pinned() -> None:
    assert set(duckflock.__all__) == {
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
    }
    for name in duckflock.__all__:
        assert hasattr(duckflock, name), name


def test_all_lists_every_public_name_and_nothing_else() -> None:
    """A new public name cannot slip in unlisted (httpx's habit); the lazily imported
    client names are listed although they are not in the module until first use."""
    public = {
        name
        for name, value in vars(duckflock).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert duckflock.__all__ == sorted([*public, "Client", "RemoteResults", "__version__"])
    assert {"Client", "RemoteResults"} <= set(dir(duckflock))


def test_every_error_descends_from_the_root_and_is_drawn_in_the_docstring() -> None:
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, errors.DuckflockError), name
            assert name in doc, f"{name} missing from the tree in errors.py's docstring"
