"""One client connection's state: what it holds (prepared statements, portals,
settings), its output buffer, cancelling and closing.

All socket I/O of a connection happens on its own thread (TLS sockets must not be read
and written from two threads at once): analysis subscriptions only queue a notification
and wake the thread through a socket pair; it sends them while idle, or before its next
ReadyForQuery. A client that breaks the protocol gets an error and is disconnected; one
that goes away mid-result just ends its query (the cursor is closed, nothing else is
touched). Errors inside the extended protocol skip to the next Sync, as PostgreSQL does.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import secrets
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from duckflock.errors import DuckflockError, QueryError, QueryTimeoutError, TransactionAbortedError
from duckflock.server.auth import Role
from duckflock.server.pgwire import compat
from duckflock.server.pgwire.channels import Channels
from duckflock.server.pgwire.compat import Statement
from duckflock.server.pgwire.encode import RowEncoder
from duckflock.server.pgwire.execute import Outcome
from duckflock.server.pgwire.host import Host
from duckflock.server.pgwire.messages import (
    MAX_ERROR_TEXT,
    LimitExceeded,
    Reader,
    error,
    ready,
    sqlstate,
)

log = logging.getLogger("duckflock.pgwire")
_I4 = struct.Struct("!i")
MAX_PREPARED = 1000  # named prepared statements one connection may hold (each keeps its SQL)
MAX_PORTALS = 1000  # portals one connection may hold open
# bytes one connection's prepared statements (SQL) and portals (Bind parameters) hold in
# all: 1000 Parse messages of 1 MiB each held 1 GB; one message of the most a client may
# send always fits when nothing else is held
MAX_HELD_BYTES = 64 * 2**20
MAX_SETTINGS = 100  # session settings a connection may add (SET) beside the reported ones
MAX_SETTING_TEXT = 4096  # characters of one setting's name or value
_FLUSH_AT = 256 * 1024  # bytes of output buffered before they are sent


@dataclass
class Prepared:
    statement: Statement
    param_types: list[int]
    size: int = 0  # bytes of its Parse message, counted in MAX_HELD_BYTES


@dataclass
class Portal:
    prepared: Prepared
    params: list[Any]
    formats: list[int]
    outcome: Outcome | None = None
    encoder: RowEncoder | None = None
    pending: pa.RecordBatch | None = None
    rows: int = 0
    bytes: int = 0
    done: bool = False
    notes: list[str] = field(default_factory=list)
    deadline: float = 0.0  # of its query: past it, a suspended portal gives its slot back
    expired: bool = False
    size: int = 0  # bytes of its Bind message, counted in MAX_HELD_BYTES


class Session:
    """One client connection's state, and its output buffer.

    Owner: the connection's own thread (every field); :meth:`cancel` alone runs on
    another connection's thread, and only reads ``cursor`` and sets ``cancelled``. The
    protocol's handlers are functions of a session: start-up in :mod:`.startup`, the
    message loop and simple query in :mod:`.connection`, the extended protocol in
    :mod:`.extended`, running statements and sending rows in :mod:`.running`.
    """

    def __init__(self, server: Host, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.reader = Reader(sock)
        self.peer = _peer(sock) or "unknown"  # the address: back-off, caps, client name
        self.pid = 0
        self.secret = secrets.randbits(31)
        self.role: str = Role.READ
        self.token: int | None = None  # which token authenticated (its index), at login
        self.client = ""  # the service's name for this client (address and token), at login
        self.user = ""
        self.settings = dict(compat.DEFAULT_SETTINGS)
        self.prepared: dict[str, Prepared] = {}
        self.portals: dict[str, Portal] = {}
        self.in_tx = False
        # a statement failed inside BEGIN: every other one is refused (25P02) until
        # COMMIT or ROLLBACK ends the block, as PostgreSQL does; set by fail(), the one
        # way every error of a message goes (duckflock's own checks as well as DuckDB's)
        self.aborted = False
        self.committed_in_tx = 0  # writing statements since BEGIN (each committed at once)
        self.skipping = False  # an extended-protocol error: ignore messages until Sync
        self.out: list[bytes] = []
        self.out_size = 0
        self.cursor: duckdb.DuckDBPyConnection | None = None  # what a cancel interrupts
        self.sending_until: float | None = None  # the deadline of the rows being sent
        self.cancelled = False
        self.channels = Channels(server.db)

    # -- output ---------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.out.append(data)
        self.out_size += len(data)
        if self.out_size >= _FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        """Send what is buffered, within the running statement's deadline (else the
        query time limit): a client that stops reading would otherwise block this
        thread in sendall for good, holding its query slot and cursor. Past it the
        connection is closed (TimeoutError)."""
        if self.out:
            data = b"".join(self.out)
            self.out.clear()
            self.out_size = 0
            limit = self.server.executor.timeout
            if self.sending_until is not None:
                limit = self.sending_until - time.monotonic()
            if limit <= 0:
                raise TimeoutError("the client did not take its rows within the time limit")
            self.sock.settimeout(limit)
            try:
                self.sock.sendall(data)
            finally:
                self.sock.settimeout(None)

    def send_error(self, exc: BaseException, *, fatal: bool = False) -> None:
        if isinstance(exc, QueryTimeoutError) and self.cancelled:
            text = "canceling statement due to user request"
        elif isinstance(exc, QueryError):
            text = exc.message
        else:
            text = str(exc)
        text = self.server.guard.scrub(text)
        if len(text) > MAX_ERROR_TEXT:
            text = f"{text[:MAX_ERROR_TEXT]}… ({len(text) - MAX_ERROR_TEXT:,} characters cut)"
        self.send(error(text, sqlstate(exc), "FATAL" if fatal else "ERROR"))

    def ready_for_query(self) -> None:
        for note in self.channels.take():
            self.send(note)
        self.send(ready(b"E" if self.aborted else b"T" if self.in_tx else b"I"))
        self.flush()

    # -- start-up -------------------------------------------------------------------------------

    def fail(self, exc: BaseException) -> None:
        log.debug("pg session %d: error %r", self.pid, exc)
        if not isinstance(exc, DuckflockError | ValueError | TypeError):
            log.exception("pg session %d: unexpected error", self.pid)
        self.aborted = self.in_tx
        self.close_portals()
        self.send_error(exc)

    def admit(self, statement: Statement) -> None:
        """After a failed statement inside BEGIN, only COMMIT or ROLLBACK runs."""
        if self.aborted and statement.tag not in ("COMMIT", "ROLLBACK"):
            raise TransactionAbortedError(
                "current transaction is aborted, commands ignored until end of transaction "
                "block (a statement of it failed: ROLLBACK)",
                sql=statement.sql,
            )

    # -- simple query ---------------------------------------------------------------------------

    def check_sql(self, sql: str) -> None:
        """SQL text over the server's cap (the HTTP query body's) is refused."""
        if len(sql) > self.server.max_sql:
            raise LimitExceeded(
                f"the SQL text is {len(sql):,} characters; the limit is {self.server.max_sql:,}"
            )

    def check_held(self, size: int, replacing: Prepared | Portal | None) -> None:
        """Room for ``size`` more bytes of prepared statements and portals."""
        held = sum(p.size for p in self.prepared.values())
        held += sum(p.size for p in self.portals.values())
        held -= replacing.size if replacing is not None else 0
        if held and held + size > MAX_HELD_BYTES:
            raise LimitExceeded(
                f"this connection's prepared statements and portals hold {held:,} bytes; "
                f"{size:,} more would pass the {MAX_HELD_BYTES:,}-byte limit: close some first"
            )

    def running_on(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self.cursor = cursor

    def close_outcome(self, portal: Portal) -> None:
        if portal.outcome is not None:
            self.cursor = None
            portal.outcome.close()

    def held_portals(self) -> list[Portal]:
        """Portals with rows still to send: each holds a query slot and a cursor."""
        return [
            p
            for p in self.portals.values()
            if p.outcome is not None and p.outcome.names is not None and not p.done
        ]

    def close_portal(self, name: str) -> None:
        portal = self.portals.pop(name, None)
        if portal is not None:
            self.close_outcome(portal)

    def close_portals(self) -> None:
        for name in list(self.portals):
            self.close_portal(name)

    def cancel(self, secret: int) -> None:
        """A cancel request for this session (from another connection's thread)."""
        if not hmac.compare_digest(_I4.pack(secret), _I4.pack(self.secret)):
            return
        cursor = self.cursor
        self.cancelled = True
        if cursor is not None:
            with contextlib.suppress(duckdb.Error):  # it finished and closed meanwhile
                cursor.interrupt()

    # -- the end --------------------------------------------------------------------------------

    def wait_for_client(self) -> None:
        """Until the client has sent something; notifications go out meanwhile, and a
        suspended portal past its query's deadline is closed (its query slot and its
        DuckDB transaction would otherwise be held for as long as the client idles)."""
        while True:
            held = self.held_portals()
            if not held and not self.channels.listening:
                return
            for note in self.channels.take():
                self.send(note)
            self.flush()
            if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
                return  # decrypted bytes already wait: poll() would not see them
            now = time.monotonic()
            wait = max(min(p.deadline for p in held) - now, 0.0) if held else None
            if self.channels.wait(self.sock, wait):
                return
            for portal in held:
                if portal.deadline <= time.monotonic():
                    self.close_outcome(portal)
                    portal.outcome, portal.done, portal.expired = None, True, True

    def close(self) -> None:
        self.channels.close()
        with contextlib.suppress(Exception):
            self.close_portals()
        self.server.unregister(self)
        with contextlib.suppress(OSError):
            self.sock.close()


def _peer(sock: socket.socket) -> str | None:
    """The client's address (None once the socket is gone)."""
    try:
        return str(sock.getpeername()[0])
    except (OSError, IndexError):
        return None
