"""One client connection from start to end: start-up, then the message loop, which
hands each message to its handler (the simple Query here; the extended protocol in
:mod:`.extended`). A client that breaks the protocol gets an error and is disconnected;
errors inside the extended protocol skip to the next Sync, as PostgreSQL does.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Callable

from duckflock.errors import (
    DuckflockError,
)
from duckflock.server.pgwire import compat, extended, running, startup
from duckflock.server.pgwire.messages import (
    Body,
    Disconnected,
    ProtocolError,
    error,
    message,
)
from duckflock.server.pgwire.session import (
    Portal,
    Prepared,
    Session,
)

log = logging.getLogger("duckflock.pgwire")


def serve(session: Session) -> None:
    """The whole life of a connection; the session is closed at its end."""
    try:
        if startup.startup(session):
            loop(session)
    except (Disconnected, ConnectionError, ssl.SSLError, TimeoutError):
        pass
    except ProtocolError as exc:
        with contextlib.suppress(OSError):
            session.out.clear()
            session.send(error(f"protocol violation: {exc}", "08P01", "FATAL"))
            session.flush()
    except OSError:
        pass
    finally:
        session.close()


def loop(session: Session) -> None:
    """Messages until the client says goodbye (Terminate) or breaks the protocol."""
    handlers: dict[bytes, Callable[[Session, bytes], None]] = {
        b"Q": on_query,
        b"P": extended.on_parse,
        b"B": extended.on_bind,
        b"D": extended.on_describe,
        b"E": extended.on_execute,
        b"C": extended.on_close,
        b"H": lambda session, body: session.flush(),
    }
    while True:
        session.wait_for_client()
        kind, body = session.reader.message()
        log.debug("pg session %d: %r %d bytes", session.pid, kind, len(body))
        if kind == b"X":
            return
        if kind == b"S":
            session.skipping = False
            session.close_portals()
            session.ready_for_query()
            continue
        handler = handlers.get(kind)
        if handler is None:
            if kind in (b"d", b"c", b"f"):  # copy-in data after a refused COPY FROM
                continue
            raise ProtocolError(f"unknown message type {kind!r}")
        if session.skipping and kind != b"Q":
            continue
        try:
            handler(session, body)
        except (Disconnected, ProtocolError):
            raise
        except Exception as exc:
            if isinstance(exc, OSError) and not isinstance(exc, DuckflockError):
                raise  # the socket failed (QueryTimeoutError is an OSError too)
            session.fail(exc)
            if kind == b"Q":
                session.ready_for_query()
            else:  # sent now, as PostgreSQL does: a client may wait for it before Sync
                session.skipping = True
                session.flush()


def on_query(session: Session, body: bytes) -> None:
    sql = Body(body).string()
    session.check_sql(sql)
    log.debug("pg session %d: query %r", session.pid, sql)
    for part in compat.split(sql):
        statement = compat.classify(part)
        if statement.kind == "empty":
            session.send(message(b"I"))
            continue
        if statement.kind == "copy":
            running.copy_out(session, statement, [])
            continue
        portal = Portal(Prepared(statement, []), [], [0])
        try:
            running.open_portal(session, portal)
            assert portal.outcome is not None
            if portal.outcome.names is not None:
                session.send(running.describe_rows(session, portal))
            running.send_rows(session, portal, 0)
        finally:
            session.close_outcome(portal)
    session.ready_for_query()
