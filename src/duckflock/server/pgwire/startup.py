"""A connection's start-up: TLS, the start-up packet, authentication (a token as
password, or SCRAM-SHA-256), the address's back-off, and the session's first
ReadyForQuery."""

from __future__ import annotations

import ssl
import struct
import time

from duckflock.errors import AuthenticationError
from duckflock.server.auth import Role
from duckflock.server.backoff import Door, Refused
from duckflock.server.pgwire import compat
from duckflock.server.pgwire.messages import (
    CANCEL_REQUEST,
    GSS_REQUEST,
    MAX_AUTH_MESSAGE,
    PROTOCOL_3,
    SSL_REQUEST,
    Backend,
    Body,
    Frontend,
    ProtocolError,
    Reader,
    cstr,
    error,
    message,
    parameter_status,
)
from duckflock.server.pgwire.scram import MECHANISM
from duckflock.server.pgwire.session import Session

_I4 = struct.Struct("!i")


def startup(session: Session) -> bool:
    """Negotiate TLS, read the start-up packet, authenticate; False: nothing follows."""
    deadline = time.monotonic() + session.server.startup_timeout
    session.reader.deadline = deadline  # for the whole start-up, not each read
    session.sock.settimeout(session.server.startup_timeout)
    code, body = session.reader.startup()
    while code in (SSL_REQUEST, GSS_REQUEST):
        tls = session.server.tls
        if code == SSL_REQUEST and tls is not None:
            session.sock.sendall(b"S")
            session.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            session.sock = tls.wrap_socket(session.sock, server_side=True)
            session.reader = Reader(session.sock, deadline)
        else:
            session.sock.sendall(b"N")
        code, body = session.reader.startup()
    if code == CANCEL_REQUEST and len(body) >= 8:
        pid, secret = struct.unpack("!ii", body[:8])
        session.server.cancel(pid, secret)
        return False
    if code != PROTOCOL_3:
        raise ProtocolError(f"protocol {code >> 16}.{code & 0xFFFF} is not supported (3.0)")
    fields = body.split(b"\x00")
    options = {
        fields[i].decode(errors="replace"): fields[i + 1].decode(errors="replace")
        for i in range(0, len(fields) - 1, 2)
        if fields[i]
    }
    session.user = options.get("user", "")
    if "application_name" in options:
        session.settings["application_name"] = options["application_name"]
    if session.server.require_tls and not isinstance(session.sock, ssl.SSLSocket):
        session.send(error("this server accepts TLS connections only", "28000", "FATAL"))
        session.flush()
        return False
    try:
        role = authenticate(session)
    except Refused as exc:  # the address's back-off: refused without a check
        session.send(error(str(exc), "53300", "FATAL"))
        session.flush()
        return False
    if role is None:
        failed = AuthenticationError(f'password authentication failed for user "{session.user}"')
        session.send(error(str(failed), "28P01", "FATAL"))
        session.flush()
        return False
    session.role = role
    session.client = session.server.service.client_key(session.peer, session.token)
    refusal = session.server.established()
    if refusal is not None:
        session.send(error(refusal, "53300", "FATAL"))
        session.flush()
        return False
    session.pid = session.server.register(session)
    session.reader.deadline = None
    session.sock.settimeout(None)
    session.send(message(Backend.AUTHENTICATION, _I4.pack(0)))
    for name in compat.STARTUP_REPORTED:
        session.send(parameter_status(name, session.settings[name]))
    session.send(message(Backend.BACKEND_KEY_DATA, struct.pack("!ii", session.pid, session.secret)))
    session.ready_for_query()
    return True


def authenticate(session: Session) -> str | None:
    """The role the client's password (a token) gives, or None."""
    server = session.server
    if not server.tokens:
        return Role.ADMIN  # tokenless: the server listens on loopback only
    if server.cleartext and isinstance(session.sock, ssl.SSLSocket):
        session.send(message(Backend.AUTHENTICATION, _I4.pack(3)))
        session.flush()
        kind, body = session.reader.message(MAX_AUTH_MESSAGE)
        if kind != Frontend.PASSWORD:
            raise ProtocolError("expected a password message")
        password = body.rstrip(b"\x00").decode("utf-8", "replace")
        wait_out_backoff(session, password)
        match = server.tokens.match(password)
        if match is None:
            server.backoff.failed(session.peer, password, Door.POSTGRES)
            return None
        session.token = match[0]
        return match[1]
    exchange = server.scram.exchange()
    session.send(message(Backend.AUTHENTICATION, _I4.pack(10) + cstr(MECHANISM) + b"\x00"))
    session.flush()
    kind, body = session.reader.message(MAX_AUTH_MESSAGE)
    if kind != Frontend.PASSWORD:
        raise ProtocolError("expected a SASL initial response")
    fields = Body(body)
    if fields.string() != MECHANISM:
        raise ProtocolError(f"only {MECHANISM} is offered")
    first = fields.raw(fields.int32())
    try:
        challenge = exchange.server_first(first)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(str(exc)) from None
    session.send(message(Backend.AUTHENTICATION, _I4.pack(11) + challenge))
    session.flush()
    kind, body = session.reader.message(MAX_AUTH_MESSAGE)
    if kind != Frontend.PASSWORD:
        raise ProtocolError("expected a SASL response")
    wait_out_backoff(session, None)  # SCRAM never shows the token: per address only
    outcome = exchange.server_final(body)
    if outcome is None:
        server.backoff.failed(session.peer, None, Door.POSTGRES)
        return None
    role, final = outcome
    session.token = exchange.token
    session.send(message(Backend.AUTHENTICATION, _I4.pack(12) + final))
    return role


def wait_out_backoff(session: Session, token: str | None) -> None:
    """Wait out the address's back-off before checking a password (the client has
    no answer meanwhile); :class:`Refused` when that would pass the start-up
    deadline or the back-off's own bound."""
    wait = session.server.backoff.reserve(session.peer, token, Door.POSTGRES)
    if wait:
        deadline = session.reader.deadline
        if deadline is not None and time.monotonic() + wait >= deadline:
            raise Refused(wait)
        time.sleep(wait)  # a start-up slot (per peer too) is held meanwhile
