"""``Database.transaction``: BEGIN … COMMIT around a function, re-run on conflicts.

DuckDB uses optimistic concurrency: a second transaction updating the same rows fails
with "Conflict on update"; the whole function then runs again, after a jittered,
doubling pause. DuckDB's trap is handled too: after a statement failed inside a
transaction, COMMIT answers without error but rolls back — a probe statement before
COMMIT turns that silence into :class:`TransactionAbortedError`.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import duckdb

from duckflock.errors import ConflictError, TransactionAbortedError, is_conflict

T = TypeVar("T")

BACKOFF_BASE = 0.002  # seconds; the first conflict retry waits up to this, then doubling
BACKOFF_CAP = 0.2


def rollback_quietly(cursor: duckdb.DuckDBPyConnection) -> None:
    """ROLLBACK, when there may be nothing left to undo (DuckDB already rolled back)."""
    with contextlib.suppress(duckdb.Error):
        cursor.execute("ROLLBACK")


class _Conflict(Exception):
    """One attempt hit a write-write conflict."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def run(
    cursor: duckdb.DuckDBPyConnection,
    fn: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    retries: int,
    running: Callable[[], AbstractContextManager[None]],
    committed: Callable[[], None],
    fail: Callable[[BaseException, str | None], Exception],
) -> T:
    """Run ``fn(cursor, *args, **kwargs)`` in a transaction, retrying conflicts.

    ``running()`` brackets each attempt (the Database counts it as a running
    statement), ``committed()`` follows each successful COMMIT, ``fail`` translates
    DuckDB's errors.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, not {retries}")
    for attempt in range(retries + 1):
        try:
            with running():
                return _once(cursor, fn, args, kwargs, committed, fail)
        except _Conflict as conflict:
            if attempt == retries:
                raise ConflictError(
                    f"transaction still conflicted after {retries + 1} attempts: {conflict.cause}",
                ) from conflict.cause
            time.sleep(random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)))
    raise AssertionError("unreachable")  # pragma: no cover


def _once(
    cursor: duckdb.DuckDBPyConnection,
    fn: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    committed: Callable[[], None],
    fail: Callable[[BaseException, str | None], Exception],
) -> T:
    try:
        cursor.execute("BEGIN TRANSACTION")
    except duckdb.Error as exc:
        raise fail(exc, "BEGIN TRANSACTION") from exc
    try:
        result = fn(cursor, *args, **kwargs)
        # DuckDB answers COMMIT of an aborted transaction with silence (and rolls back);
        # any statement raises there, so this probe turns the silence into an error
        cursor.execute("SELECT 1")
        cursor.execute("COMMIT")
    except BaseException as exc:
        rollback_quietly(cursor)
        if is_conflict(exc) or isinstance(exc, ConflictError):
            raise _Conflict(exc) from exc
        if isinstance(exc, duckdb.TransactionException) and "aborted" in str(exc):
            raise TransactionAbortedError(
                "a statement failed inside the transaction, so DuckDB rolled it back; "
                "nothing was committed",
            ) from exc
        if isinstance(exc, duckdb.Error):
            raise fail(exc, None) from exc
        raise
    committed()
    return result
