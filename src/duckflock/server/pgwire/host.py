"""What a connection needs from the server that accepted it (:class:`Host`).

The server (:class:`duckflock.server.pgwire.server.PgServer`) makes sessions and keeps
them by backend pid; a session reaches back only through this protocol, so the server
imports the session and never the other way round.
"""

from __future__ import annotations

import ssl
from typing import Protocol

from duckflock.database import Database
from duckflock.server.auth import Tokens
from duckflock.server.backoff import Backoff
from duckflock.server.guard import QueryGuard
from duckflock.server.pgwire.execute import Executor
from duckflock.server.pgwire.scram import ScramKeys
from duckflock.server.service import Service


class Cancellable(Protocol):
    """A session as the server keeps it: by backend pid, for cancel requests."""

    pid: int

    def cancel(self, secret: int) -> None:
        """Interrupt the running statement when ``secret`` is this session's."""


class Host(Protocol):
    """The server's side of a session: its settings, shared services and session table."""

    db: Database
    service: Service
    executor: Executor
    guard: QueryGuard
    backoff: Backoff
    tokens: Tokens
    scram: ScramKeys
    tls: ssl.SSLContext | None
    require_tls: bool
    cleartext: bool
    startup_timeout: float
    max_sql: int  # characters of one SQL text
    per_client: int  # suspended results one connection may hold
    row_cap: int
    byte_cap: int

    def established(self) -> str | None:
        """The calling session's start-up is done; a refusal's text when it may not stay."""

    def register(self, session: Cancellable) -> int:
        """Keep ``session`` for cancel requests; its backend pid."""

    def unregister(self, session: Cancellable) -> None:
        """Forget ``session`` (it has ended)."""

    def cancel(self, pid: int, secret: int) -> None:
        """A cancel request for the session ``pid`` (ignored unless ``secret`` is its)."""
