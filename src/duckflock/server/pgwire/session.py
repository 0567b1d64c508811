"""One client connection: start-up, authentication, then the query loop.

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
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from duckflock.errors import (
    AuthenticationError,
    DuckflockError,
    QueryError,
    QueryTimeoutError,
    ServerBusyError,
)
from duckflock.server.backoff import Door, Refused
from duckflock.server.pgwire import compat, types
from duckflock.server.pgwire.channels import Channels
from duckflock.server.pgwire.compat import Statement
from duckflock.server.pgwire.encode import COPY_SIGNATURE, COPY_TRAILER, RowEncoder, copy_data
from duckflock.server.pgwire.execute import CopyPlan, Outcome, copy_plan
from duckflock.server.pgwire.messages import (
    CANCEL_REQUEST,
    GSS_REQUEST,
    MAX_AUTH_MESSAGE,
    MAX_ERROR_TEXT,
    PROTOCOL_3,
    SSL_REQUEST,
    Body,
    Disconnected,
    LimitExceeded,
    ProtocolError,
    Reader,
    command_complete,
    cstr,
    error,
    message,
    notice,
    parameter_status,
    ready,
    row_description,
    sqlstate,
)
from duckflock.server.pgwire.scram import MECHANISM

if TYPE_CHECKING:
    from duckflock.server.pgwire.server import PgServer

log = logging.getLogger("duckflock.pgwire")
_I2, _I4 = struct.Struct("!h"), struct.Struct("!i")
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
    def __init__(self, server: PgServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.reader = Reader(sock)
        self.peer = _peer(sock) or "unknown"  # the address: back-off, caps, client name
        self.pid = 0
        self.secret = secrets.randbits(31)
        self.role = "read"
        self.token: int | None = None  # which token authenticated (its index), at login
        self.client = ""  # the service's name for this client (address and token), at login
        self.user = ""
        self.settings = dict(compat.DEFAULT_SETTINGS)
        self.prepared: dict[str, Prepared] = {}
        self.portals: dict[str, Portal] = {}
        self.in_tx = False
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
        self.send(ready(b"T" if self.in_tx else b"I"))
        self.flush()

    # -- start-up -------------------------------------------------------------------------------

    def serve(self) -> None:
        try:
            if self.startup():
                self.loop()
        except (Disconnected, ConnectionError, ssl.SSLError, TimeoutError):
            pass
        except ProtocolError as exc:
            with contextlib.suppress(OSError):
                self.out.clear()
                self.send(error(f"protocol violation: {exc}", "08P01", "FATAL"))
                self.flush()
        except OSError:
            pass
        finally:
            self.close()

    def startup(self) -> bool:
        """Negotiate TLS, read the start-up packet, authenticate; False: nothing follows."""
        deadline = time.monotonic() + self.server.startup_timeout
        self.reader.deadline = deadline  # for the whole start-up, not each read
        self.sock.settimeout(self.server.startup_timeout)
        code, body = self.reader.startup()
        while code in (SSL_REQUEST, GSS_REQUEST):
            tls = self.server.tls
            if code == SSL_REQUEST and tls is not None:
                self.sock.sendall(b"S")
                self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
                self.sock = tls.wrap_socket(self.sock, server_side=True)
                self.reader = Reader(self.sock, deadline)
            else:
                self.sock.sendall(b"N")
            code, body = self.reader.startup()
        if code == CANCEL_REQUEST and len(body) >= 8:
            pid, secret = struct.unpack("!ii", body[:8])
            self.server.cancel(pid, secret)
            return False
        if code != PROTOCOL_3:
            raise ProtocolError(f"protocol {code >> 16}.{code & 0xFFFF} is not supported (3.0)")
        fields = body.split(b"\x00")
        options = {
            fields[i].decode(errors="replace"): fields[i + 1].decode(errors="replace")
            for i in range(0, len(fields) - 1, 2)
            if fields[i]
        }
        self.user = options.get("user", "")
        if "application_name" in options:
            self.settings["application_name"] = options["application_name"]
        if self.server.require_tls and not isinstance(self.sock, ssl.SSLSocket):
            self.send(error("this server accepts TLS connections only", "28000", "FATAL"))
            self.flush()
            return False
        try:
            role = self.authenticate()
        except Refused as exc:  # the address's back-off: refused without a check
            self.send(error(str(exc), "53300", "FATAL"))
            self.flush()
            return False
        if role is None:
            failed = AuthenticationError(f'password authentication failed for user "{self.user}"')
            self.send(error(str(failed), "28P01", "FATAL"))
            self.flush()
            return False
        self.role = role
        self.client = self.server.service.client_key(self.peer, self.token)
        refusal = self.server.established()
        if refusal is not None:
            self.send(error(refusal, "53300", "FATAL"))
            self.flush()
            return False
        self.pid = self.server.register(self)
        self.reader.deadline = None
        self.sock.settimeout(None)
        self.send(message(b"R", _I4.pack(0)))
        for name in compat.STARTUP_REPORTED:
            self.send(parameter_status(name, self.settings[name]))
        self.send(message(b"K", struct.pack("!ii", self.pid, self.secret)))
        self.ready_for_query()
        return True

    def authenticate(self) -> str | None:
        """The role the client's password (a token) gives, or None."""
        server = self.server
        if not server.tokens:
            return "admin"  # tokenless: the server listens on loopback only
        if server.cleartext and isinstance(self.sock, ssl.SSLSocket):
            self.send(message(b"R", _I4.pack(3)))
            self.flush()
            kind, body = self.reader.message(MAX_AUTH_MESSAGE)
            if kind != b"p":
                raise ProtocolError("expected a password message")
            password = body.rstrip(b"\x00").decode("utf-8", "replace")
            self.wait_out_backoff(password)
            match = server.tokens.match(password)
            if match is None:
                server.backoff.failed(self.peer, password, Door.POSTGRES)
                return None
            self.token = match[0]
            return match[1]
        exchange = server.scram.exchange()
        self.send(message(b"R", _I4.pack(10) + cstr(MECHANISM) + b"\x00"))
        self.flush()
        kind, body = self.reader.message(MAX_AUTH_MESSAGE)
        if kind != b"p":
            raise ProtocolError("expected a SASL initial response")
        fields = Body(body)
        if fields.string() != MECHANISM:
            raise ProtocolError(f"only {MECHANISM} is offered")
        first = fields.raw(fields.int32())
        try:
            challenge = exchange.server_first(first)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(str(exc)) from None
        self.send(message(b"R", _I4.pack(11) + challenge))
        self.flush()
        kind, body = self.reader.message(MAX_AUTH_MESSAGE)
        if kind != b"p":
            raise ProtocolError("expected a SASL response")
        self.wait_out_backoff(None)  # SCRAM never shows the token: per address only
        outcome = exchange.server_final(body)
        if outcome is None:
            server.backoff.failed(self.peer, None, Door.POSTGRES)
            return None
        role, final = outcome
        self.token = exchange.token
        self.send(message(b"R", _I4.pack(12) + final))
        return role

    def wait_out_backoff(self, token: str | None) -> None:
        """Wait out the address's back-off before checking a password (the client has
        no answer meanwhile); :class:`Refused` when that would pass the start-up
        deadline or the back-off's own bound."""
        wait = self.server.backoff.reserve(self.peer, token, Door.POSTGRES)
        if wait:
            deadline = self.reader.deadline
            if deadline is not None and time.monotonic() + wait >= deadline:
                raise Refused(wait)
            time.sleep(wait)  # a start-up slot (per peer too) is held meanwhile

    # -- the loop -------------------------------------------------------------------------------

    def loop(self) -> None:
        handlers = {
            b"Q": self.on_query,
            b"P": self.on_parse,
            b"B": self.on_bind,
            b"D": self.on_describe,
            b"E": self.on_execute,
            b"C": self.on_close,
            b"H": lambda body: self.flush(),
        }
        while True:
            self.wait_for_client()
            kind, body = self.reader.message()
            log.debug("pg session %d: %r %d bytes", self.pid, kind, len(body))
            if kind == b"X":
                return
            if kind == b"S":
                self.skipping = False
                self.close_portals()
                self.ready_for_query()
                continue
            handler = handlers.get(kind)
            if handler is None:
                if kind in (b"d", b"c", b"f"):  # copy-in data after a refused COPY FROM
                    continue
                raise ProtocolError(f"unknown message type {kind!r}")
            if self.skipping and kind != b"Q":
                continue
            try:
                handler(body)  # type: ignore[no-untyped-call]
            except (Disconnected, ProtocolError):
                raise
            except Exception as exc:
                if isinstance(exc, OSError) and not isinstance(exc, DuckflockError):
                    raise  # the socket failed (QueryTimeoutError is an OSError too)
                self.fail(exc)
                if kind == b"Q":
                    self.ready_for_query()
                else:  # sent now, as PostgreSQL does: a client may wait for it before Sync
                    self.skipping = True
                    self.flush()

    def fail(self, exc: BaseException) -> None:
        log.debug("pg session %d: error %r", self.pid, exc)
        if not isinstance(exc, DuckflockError | ValueError | TypeError):
            log.exception("pg session %d: unexpected error", self.pid)
        self.close_portals()
        self.send_error(exc)

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

    def on_query(self, body: bytes) -> None:
        sql = Body(body).string()
        self.check_sql(sql)
        log.debug("pg session %d: query %r", self.pid, sql)
        for part in compat.split(sql):
            statement = compat.classify(part)
            if statement.kind == "empty":
                self.send(message(b"I"))
                continue
            if statement.kind == "copy":
                self.copy_out(statement, [])
                continue
            portal = Portal(Prepared(statement, []), [], [0])
            try:
                self.open_portal(portal)
                assert portal.outcome is not None
                if portal.outcome.names is not None:
                    self.send(self.describe_rows(portal))
                self.send_rows(portal, 0)
            finally:
                self.close_outcome(portal)
        self.ready_for_query()

    # -- extended query -------------------------------------------------------------------------

    def on_parse(self, body: bytes) -> None:
        fields = Body(body)
        name, sql = fields.string(), fields.string()
        given = [fields.int32() for _ in range(fields.int16())]
        log.debug("pg session %d: parse %r %r", self.pid, sql[:200], given)
        self.check_sql(sql)
        self.check_held(len(body), self.prepared.get(name))
        parts = compat.split(sql)
        if len(parts) > 1:
            raise QueryError("a prepared statement holds one statement", sql=sql)
        statement = compat.classify(parts[0])
        if name not in self.prepared and len(self.prepared) >= MAX_PREPARED:
            raise LimitExceeded(
                f"this connection holds {MAX_PREPARED} prepared statements, the most it may: "
                "close some (DEALLOCATE, or a Close message) first"
            )
        types_of = compat.parameter_types(parts[0], given)
        self.prepared[name] = Prepared(statement, types_of, len(body))
        self.send(message(b"1"))

    def on_bind(self, body: bytes) -> None:
        fields = Body(body)
        portal_name, name = fields.string(), fields.string()
        prepared = self.prepared.get(name)
        if prepared is None:
            raise QueryError(f"prepared statement {name!r} does not exist")
        param_formats = [fields.int16() for _ in range(fields.int16())]
        count = fields.int16()
        if len(param_formats) == 1:
            param_formats *= count
        param_formats += [0] * (count - len(param_formats))
        oids = prepared.param_types + [0] * (count - len(prepared.param_types))
        params = []
        for i in range(count):
            size = fields.int32()
            data = None if size == -1 else fields.raw(size)
            params.append(types.decode_param(oids[i], param_formats[i] == 1, data))
        formats = [fields.int16() for _ in range(fields.int16())]
        self.close_portal(portal_name)
        self.check_held(len(body), None)
        if len(self.portals) >= MAX_PORTALS:
            raise LimitExceeded(
                f"this connection holds {MAX_PORTALS} portals, the most it may: close some "
                "(a Close message, or end the transaction) first"
            )
        self.portals[portal_name] = Portal(prepared, params, formats, size=len(body))
        self.send(message(b"2"))

    def on_describe(self, body: bytes) -> None:
        fields = Body(body)
        what, name = fields.raw(1), fields.string()
        if what == b"S":
            prepared = self.prepared.get(name)
            if prepared is None:
                raise QueryError(f"prepared statement {name!r} does not exist")
            oids = prepared.param_types
            self.send(message(b"t", _I2.pack(len(oids)) + b"".join(_I4.pack(o) for o in oids)))
            columns = self.describe_statement(prepared)
            if columns is None:
                self.send(message(b"n"))
            else:
                encoder = RowEncoder(columns[1], [0])
                self.send(self.row_description(columns[0], encoder))
            return
        portal = self.portals.get(name)
        if portal is None:
            raise QueryError(f"portal {name!r} does not exist")
        if portal.prepared.statement.kind == "copy":
            self.send(message(b"n"))
            return
        self.open_portal(portal)
        assert portal.outcome is not None
        if portal.outcome.names is None:
            self.send(message(b"n"))
        else:
            self.send(self.describe_rows(portal))

    def describe_statement(self, prepared: Prepared) -> tuple[list[str], list[str]] | None:
        statement = prepared.statement
        if statement.kind == "show" and (
            statement.name in self.settings or statement.name in compat.SHOW_ONLY
        ):
            return [statement.name], ["VARCHAR"]
        if statement.kind == "show":
            return self.server.executor.describe(statement.sql, 0, self.role, client=self.client)
        if statement.kind != "sql":
            return None
        count = len(prepared.param_types)
        return self.server.executor.describe(statement.sql, count, self.role, client=self.client)

    def on_execute(self, body: bytes) -> None:
        fields = Body(body)
        name, limit = fields.string(), fields.int32()
        portal = self.portals.get(name)
        if portal is None:
            raise QueryError(f"portal {name!r} does not exist")
        statement = portal.prepared.statement
        if statement.kind == "empty":
            self.send(message(b"I"))
            return
        if statement.kind == "copy":
            self.copy_out(statement, portal.params)
            return
        self.open_portal(portal)
        self.send_rows(portal, max(limit, 0))  # PostgreSQL: 0 or less, every row

    def on_close(self, body: bytes) -> None:
        fields = Body(body)
        what, name = fields.raw(1), fields.string()
        if what == b"S":
            self.prepared.pop(name, None)
        else:
            self.close_portal(name)
        self.send(message(b"3"))

    # -- running statements ---------------------------------------------------------------------

    def open_portal(self, portal: Portal) -> None:
        if portal.expired:
            raise QueryTimeoutError(
                f"the query ran past its {self.server.executor.timeout:g} s limit while its "
                "portal was suspended, and was stopped",
                sql=portal.prepared.statement.sql,
            )
        if portal.outcome is not None:
            return
        if len(self.held_portals()) >= self.server.per_client:
            raise ServerBusyError(
                f"this connection holds {self.server.per_client} suspended results already "
                "(each takes a query slot): read them to the end, close them, or Sync",
                retry_after=1,
            )
        self.cancelled = False
        portal.deadline = time.monotonic() + self.server.executor.timeout
        portal.outcome = self.outcome(portal.prepared.statement, portal.params)
        if portal.outcome.names is not None:
            assert portal.outcome.duck_types is not None
            portal.encoder = RowEncoder(portal.outcome.duck_types, portal.formats)

    def outcome(self, statement: Statement, params: list[Any]) -> Outcome:
        kind, executor = statement.kind, self.server.executor
        if kind == "tx":
            return self.transaction(statement.tag)
        if kind == "set":
            return self.set(statement)
        if kind == "show":
            name = statement.name
            value = self.settings.get(name, compat.SHOW_ONLY.get(name))
            if value is None:  # not a setting: DuckDB's SHOW <table>
                return executor.run(
                    statement.sql, params, self.role, self.running_on, client=self.client
                )
            return Outcome.table("SHOW", pa.table({name: [value]}), ["VARCHAR"])
        if kind == "listen":
            self.channels.listen(statement.name, self.pid)
            return Outcome("LISTEN")
        if kind == "unlisten":
            self.channels.unlisten(statement.name)
            return Outcome("UNLISTEN")
        if kind == "notify":
            raise QueryError("NOTIFY is not supported: channels are analyses, notified on refresh")
        if kind in ("discard", "deallocate"):
            if kind == "deallocate" and statement.sql.split()[-1].upper() == "ALL":
                self.prepared.clear()  # compat names it "", like the unnamed statement
            elif kind == "deallocate":
                self.prepared.pop(statement.name, None)
            return Outcome(statement.tag)
        if kind == "insert":
            outcome = executor.insert(statement.sql, params, self.role, client=self.client)
        else:
            outcome = executor.run(
                statement.sql, params, self.role, self.running_on, client=self.client
            )
        if outcome.names is None or not outcome.tag.startswith("SELECT"):
            self.committed_in_tx += self.in_tx  # a write: committed already
        return outcome

    def transaction(self, tag: str) -> Outcome:
        """BEGIN/COMMIT/ROLLBACK: accepted, and nothing to do, since every statement
        commits on its own; a ROLLBACK after writes says that it undid none."""
        if tag == "ROLLBACK" and self.committed_in_tx:
            self.send(
                notice(
                    f"ROLLBACK undid nothing: duckflock committed each of the "
                    f"{self.committed_in_tx} writing statement(s) of this transaction on its own",
                    "25000",
                )
            )
        if tag in ("COMMIT", "ROLLBACK") or (tag == "BEGIN" and not self.in_tx):
            self.committed_in_tx = 0
        self.in_tx = tag == "BEGIN" or (self.in_tx and tag not in ("COMMIT", "ROLLBACK"))
        return Outcome(tag)

    def running_on(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self.cursor = cursor

    def set(self, statement: Statement) -> Outcome:
        """SET/RESET of a session setting, within :data:`MAX_SETTINGS` settings of at
        most :data:`MAX_SETTING_TEXT` characters (they were unbounded)."""
        if statement.tag != "RESET" and statement.name:
            name = compat.setting_name(statement.name)
            if max(len(name), len(statement.value)) > MAX_SETTING_TEXT:
                raise LimitExceeded(
                    f"a setting's name and value may have {MAX_SETTING_TEXT:,} characters each"
                )
            added = len(self.settings) - len(compat.DEFAULT_SETTINGS)
            if name not in self.settings and added >= MAX_SETTINGS:
                raise LimitExceeded(
                    f"this connection has set {MAX_SETTINGS} settings of its own, the most it "
                    "may: RESET some first"
                )
        for name in compat.apply_setting(self.settings, statement):
            self.send(parameter_status(name, self.settings[name]))
        return Outcome(statement.tag)

    def describe_rows(self, portal: Portal) -> bytes:
        assert portal.outcome is not None and portal.outcome.names is not None
        assert portal.encoder is not None
        return self.row_description(portal.outcome.names, portal.encoder)

    @staticmethod
    def row_description(names: list[str], encoder: RowEncoder) -> bytes:
        formats = encoder.formats if len(encoder.formats) == len(names) else [0] * len(names)
        return row_description(
            (name, c.oid, c.size, f)
            for name, c, f in zip(names, encoder.columns, formats, strict=True)
        )

    def send_rows(self, portal: Portal, limit: int) -> None:
        """Up to ``limit`` rows (0: all) of the portal, then CommandComplete or
        PortalSuspended; the server's row and byte caps end a result early with a
        warning."""
        self.sending_until = portal.deadline
        try:
            self._send_rows(portal, limit)
        finally:
            self.sending_until = None

    def _send_rows(self, portal: Portal, limit: int) -> None:
        outcome = portal.outcome
        assert outcome is not None
        if outcome.names is None or portal.done:
            self.send(command_complete(outcome.tag))
            return
        encoder = portal.encoder
        assert encoder is not None
        server = self.server
        sent = 0
        while True:
            batch = portal.pending if portal.pending is not None else outcome.next_batch()
            portal.pending = None
            if batch is None:
                break
            room = server.row_cap - portal.rows
            if batch.num_rows > room:
                batch = batch.slice(0, room)
                portal.notes.append(f"the result was cut at the {server.row_cap:,}-row cap")
            if limit and sent + batch.num_rows > limit:
                portal.pending = batch.slice(limit - sent)
                batch = batch.slice(0, limit - sent)
            data = encoder.data_rows(batch)
            portal.rows += batch.num_rows
            portal.bytes += len(data)
            sent += batch.num_rows
            self.send(data)
            if portal.bytes > server.byte_cap:
                portal.notes.append(f"the result was cut at the {server.byte_cap:,}-byte cap")
            if portal.notes:
                portal.pending = None
                break
            if limit and sent >= limit:
                self.send(message(b"s"))
                return
        portal.done = True
        for text in portal.notes:
            self.send(notice(text))
        self.send(command_complete(f"SELECT {portal.rows}"))
        self.close_outcome(portal)

    def copy_out(self, statement: Statement, params: list[Any]) -> None:
        plan = copy_plan(statement.sql)
        self.sending_until = time.monotonic() + self.server.executor.timeout
        try:
            self._copy_out(plan, params)
        finally:
            self.sending_until = None

    def _copy_out(self, plan: CopyPlan, params: list[Any]) -> None:
        outcome = self.server.executor.select(
            plan.query, params, client=self.client, on_cursor=self.running_on
        )
        try:
            assert outcome.duck_types is not None and outcome.names is not None
            binary = plan.format == "binary"
            encoder = RowEncoder(outcome.duck_types, [1 if binary else 0])
            count = len(outcome.names)
            head = struct.pack("!bh", int(binary), count) + _I2.pack(int(binary)) * count
            self.send(message(b"H", head))
            # the binary header travels with the first rows, as PostgreSQL sends it
            # (ADBC's reader expects a row right after the header in the same message)
            prefix = COPY_SIGNATURE if binary else b""
            rows = sent = 0
            header = outcome.names if plan.header else None
            while (batch := outcome.next_batch()) is not None:
                batch = batch.slice(0, max(self.server.row_cap - rows, 0))
                if plan.format == "binary":
                    data = encoder.copy_binary(batch, prefix) if batch.num_rows else b""
                    prefix = prefix if not data else b""
                elif plan.format == "csv":
                    data = copy_data(encoder.copy_csv(batch, header))
                    header = None
                else:
                    data = copy_data(encoder.copy_text(batch))
                self.send(data)
                rows += batch.num_rows
                sent += len(data)
                if rows >= self.server.row_cap or sent > self.server.byte_cap:
                    break  # the same caps as a SELECT's (the byte cap: whole batches)
            if binary:
                self.send(copy_data(prefix + COPY_TRAILER))
            self.send(message(b"c"))
            if sent > self.server.byte_cap:
                self.send(notice(f"the result was cut at the {self.server.byte_cap:,}-byte cap"))
            self.send(command_complete(f"COPY {rows}"))
        finally:
            self.cursor = None
            outcome.close()

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
