"""What to do next after an error the CLI prints, when there is something to do.

The errors say what went wrong (the library and the server word them); this adds the
next step a person at a shell can take. One table, first match wins.
"""

from __future__ import annotations

from collections.abc import Callable

from duckflock.core.syntax import WRITE, classify
from duckflock.errors import (
    AuthenticationError,
    CatalogError,
    ConflictError,
    DuckflockError,
    ForbiddenError,
    PayloadTooLargeError,
    QueryError,
    QueryRefusedError,
    QueryTimeoutError,
    ServerBusyError,
    TransportError,
    UnknownAnalysisError,
)

TOKENS = (
    "pass --token TOKEN or set $DUCKFLOCK_TOKEN: the server's admin token (its --token), or "
    "a role token its operator set in $DUCKFLOCK_{READ,WRITE,ADMIN}_TOKEN or [[tokens]]"
)


def _writes(exc: DuckflockError) -> bool:
    sql = getattr(exc, "sql", None)
    if not isinstance(sql, str):
        return False
    try:
        return classify(sql) == WRITE
    except (DuckflockError, ValueError):
        return False


def _read_only_write(exc: DuckflockError) -> bool:
    return _writes(exc) and (isinstance(exc, QueryRefusedError) or "read-only" in str(exc))


def _role(exc: DuckflockError) -> bool:
    return "role" in str(exc)


def _unknown_table(exc: DuckflockError) -> bool:
    return "Table with name" in str(exc) or "does not exist" in str(exc)


RULES: list[tuple[type[DuckflockError], Callable[[DuckflockError], bool], str]] = [
    (
        QueryError,
        _read_only_write,
        "`duckflock query` runs read-only SELECTs: run writes and DDL with `duckflock sql "
        'TARGET "…"` (on a server it needs the admin token)',
    ),
    (AuthenticationError, lambda _: True, TOKENS),
    (
        ForbiddenError,
        _role,
        "this token's role may not do that: reading needs read, ingest (load) write, and "
        "sql, analysis define/drop the admin role; ask for a token with that role and pass "
        "it with --token",
    ),
    (
        ForbiddenError,
        lambda _: True,
        "address the server as 127.0.0.1 or localhost, or give the server a token (--token) "
        "so it can answer other hosts",
    ),
    (
        UnknownAnalysisError,
        lambda _: True,
        "`duckflock analysis list TARGET` lists the analyses; `duckflock analysis define` "
        "makes one",
    ),
    (CatalogError, _unknown_table, "`duckflock tables TARGET` lists the tables"),
    (
        TransportError,
        lambda _: True,
        "is the server running? Start it with `duckflock serve FILE` and check the URL "
        "and port (the default is http://127.0.0.1:8765)",
    ),
    (ServerBusyError, lambda _: True, "the server is at its limits: try again in a moment"),
    (
        PayloadTooLargeError,
        lambda _: True,
        "send less at once: `duckflock load … --chunked --chunk-rows N` commits the file in "
        "smaller requests (each on its own), or ask for a larger --max-body",
    ),
    (
        QueryTimeoutError,
        lambda _: True,
        "narrow the query (a WHERE, a LIMIT), or raise the limit: the server's "
        "--query-timeout, an analysis's --timeout",
    ),
    (ConflictError, lambda _: True, "another writer changed the same rows: run it again"),
]


def next_step(exc: DuckflockError) -> str | None:
    """The next thing to do about ``exc``, or None when there is nothing to add."""
    for kind, applies, hint in RULES:
        if isinstance(exc, kind) and applies(exc):
            return hint
    return None
