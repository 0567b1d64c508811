"""Telling a storage fault from a fault of the rows.

*Any* exception raised while appending a call's rows is that call's fault, whatever its
type, except a storage fault (:func:`storage_fault`: I/O, disk full, an invalidated
database): the writer then fails the rest of the batch with :class:`StorageFailure`.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

# Failures typically caused by the rows themselves (kept for reference and callers that
# classify DuckDB errors; attempt() treats every non-storage exception as the rows' fault).
ROW_FAULTS: tuple[type[BaseException], ...] = (
    duckdb.ConstraintException,
    duckdb.ConversionException,
    duckdb.InvalidInputException,
    duckdb.BinderException,
    duckdb.CatalogException,
    duckdb.TypeMismatchException,
    duckdb.OutOfRangeException,
    duckdb.TransactionException,
    duckdb.NotImplementedException,
    pa.ArrowException,
    TypeError,
    ValueError,
    OverflowError,
)


# DuckDB errors that are the storage's fault whatever the rows: the file system failed, or
# DuckDB gave up on the database instance. Checked by experiment on 1.5.5: a commit that
# cannot write (RLIMIT_FSIZE, disk full) raises TransactionException "Failed to commit:
# Could not write file …" and the connection stays usable; a failed checkpoint raises
# FatalException and invalidates the instance until it is reopened.
_STORAGE_ERRORS: tuple[type[BaseException], ...] = (
    duckdb.IOException,
    duckdb.FatalException,
    duckdb.ConnectionException,
    duckdb.PermissionException,
    duckdb.InterruptException,
)
_STORAGE_WORDS = (
    "could not write",
    "could not fsync",
    "could not read",
    "could not open",
    "could not truncate",
    "no space left",
    "file too large",
    "input/output error",
    "disk quota",
    "database has been invalidated",
    # a DuckLake catalog in PostgreSQL that went away (postgres_scanner's words)
    "unable to connect to postgres",
    "failed to query most recent snapshot",
    "failed to execute query",
)
# DuckDB's FatalException after a commit whose automatic checkpoint failed: the rows are
# in the WAL ("Transaction COMMIT succeeded and is durable, but the autocheckpoint failed.
# Reopen the database instance to recover.")
DURABLE_WORDS = "commit succeeded and is durable"


def storage_fault(exc: BaseException, cursor: duckdb.DuckDBPyConnection | None = None) -> bool:
    """True when ``exc`` is the storage's fault rather than the rows'.

    DuckDB's InternalException is both: a value can raise one (``['', {}]`` bound to a
    DECIMAL column: "Operation requires a flat vector") and leave the connection fine,
    or the instance can be broken. ``cursor`` (outside any transaction) is then probed.
    """
    if isinstance(exc, _STORAGE_ERRORS):
        return True
    if not isinstance(exc, duckdb.Error):
        return False
    message = str(exc).lower()
    if any(word in message for word in _STORAGE_WORDS):
        return True
    if isinstance(exc, duckdb.InternalException) and cursor is not None:
        try:
            cursor.execute("SELECT 1").fetchall()
        except Exception:
            return True
    return False


def invalidated(exc: BaseException) -> bool:
    """True when DuckDB gave up on the database instance: it must be reopened."""
    if isinstance(exc, duckdb.FatalException):
        return True
    return "database has been invalidated" in str(exc).lower()


class StorageFailure(Exception):
    """A commit failed for a reason that is not the rows' fault.

    ``committed``: DuckDB reported the commit itself durable (the checkpoint after it
    failed). ``invalidated``: the database instance must be reopened before the next
    commit.
    """

    def __init__(self, message: str, *, committed: bool = False, invalidated: bool = False):
        super().__init__(message)
        self.committed = committed
        self.invalidated = invalidated
