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

from duckflock.errors import DuckflockError
from duckflock.server.pgwire import compat, extended, running, startup
from duckflock.server.pgwire.compat import Kind
from duckflock.server.pgwire.messages import (
    Backend,
    Body,
    Disconnected,
    Frontend,
    NotUtf8,
    ProtocolError,
    error,
    message,
)
from duckflock.server.pgwire.session import Portal, Prepared, Session

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
        Frontend.QUERY: on_query,
        Frontend.PARSE: extended.on_parse,
        Frontend.BIND: extended.on_bind,
        Frontend.DESCRIBE: extended.on_describe,
        Frontend.EXECUTE: extended.on_execute,
        Frontend.CLOSE: extended.on_close,
        Frontend.FLUSH: lambda session, body: session.flush(),
    }
    while True:
        session.wait_for_client()
        kind, body = session.reader.message()
        log.debug("pg session %d: %r %d bytes", session.pid, kind, len(body))
        if kind == Frontend.TERMINATE:
            return
        if kind == Frontend.SYNC:
            session.skipping = False
            session.close_portals()
            session.ready_for_query()
            continue
        handler = handlers.get(kind)
        if handler is None:
            if kind in (
                Frontend.COPY_DATA,
                Frontend.COPY_DONE,
                Frontend.COPY_FAIL,
            ):  # copy-in data after a refused COPY FROM
                continue
            raise ProtocolError(f"unknown message type {kind!r}")
        if session.skipping and kind != Frontend.QUERY:
            continue
        try:
            handler(session, body)
        except NotUtf8 as exc:  # the message was whole: an ERROR, as PostgreSQL's
            failed(session, kind, exc)
        except (Disconnected, ProtocolError):
            raise
        except Exception as exc:
            if isinstance(exc, OSError) and not isinstance(exc, DuckflockError):
                raise  # the socket failed (QueryTimeoutError is an OSError too)
            failed(session, kind, exc)


def failed(session: Session, kind: bytes, exc: Exception) -> None:
    """A message's error: the simple Query is ready for the next; the extended
    protocol skips to the next Sync."""
    session.fail(exc)
    if kind == Frontend.QUERY:
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
        if statement.kind == Kind.EMPTY:
            session.send(message(Backend.EMPTY_QUERY))
            continue
        if statement.kind == Kind.COPY:
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
