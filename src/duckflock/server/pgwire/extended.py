"""The extended query protocol: Parse, Bind, Describe, Execute and Close, over a
session's prepared statements and portals."""

from __future__ import annotations

import logging
import struct

from duckflock.errors import QueryError
from duckflock.server.pgwire import compat, running, types
from duckflock.server.pgwire.compat import Kind
from duckflock.server.pgwire.encode import RowEncoder
from duckflock.server.pgwire.messages import Backend, Body, LimitExceeded, message
from duckflock.server.pgwire.session import MAX_PORTALS, MAX_PREPARED, Portal, Prepared, Session

log = logging.getLogger("duckflock.pgwire")
_I2, _I4 = struct.Struct("!h"), struct.Struct("!i")


def on_parse(session: Session, body: bytes) -> None:
    fields = Body(body)
    name, sql = fields.string(), fields.string()
    given = [fields.int32() for _ in range(fields.int16())]
    log.debug("pg session %d: parse %r %r", session.pid, sql[:200], given)
    session.check_sql(sql)
    session.check_held(len(body), session.prepared.get(name))
    parts = compat.split(sql)
    if len(parts) > 1:
        raise QueryError("a prepared statement holds one statement", sql=sql)
    statement = compat.classify(parts[0])
    if name not in session.prepared and len(session.prepared) >= MAX_PREPARED:
        raise LimitExceeded(
            f"this connection holds {MAX_PREPARED} prepared statements, the most it may: "
            "close some (DEALLOCATE, or a Close message) first"
        )
    types_of = compat.parameter_types(parts[0], given)
    session.prepared[name] = Prepared(statement, types_of, len(body))
    session.send(message(Backend.PARSE_COMPLETE))


def on_bind(session: Session, body: bytes) -> None:
    fields = Body(body)
    portal_name, name = fields.string(), fields.string()
    prepared = _prepared(session, name)
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
        params.append(types.decode_param(oids[i], param_formats[i] == types.Format.BINARY, data))
    formats = [fields.int16() for _ in range(fields.int16())]
    session.close_portal(portal_name)
    session.check_held(len(body), None)
    if len(session.portals) >= MAX_PORTALS:
        raise LimitExceeded(
            f"this connection holds {MAX_PORTALS} portals, the most it may: close some "
            "(a Close message, or end the transaction) first"
        )
    session.portals[portal_name] = Portal(prepared, params, formats, size=len(body))
    session.send(message(Backend.BIND_COMPLETE))


def on_describe(session: Session, body: bytes) -> None:
    fields = Body(body)
    what, name = fields.raw(1), fields.string()
    if what == b"S":
        prepared = _prepared(session, name)
        oids = prepared.param_types
        session.send(
            message(
                Backend.PARAMETER_DESCRIPTION,
                _I2.pack(len(oids)) + b"".join(_I4.pack(o) for o in oids),
            )
        )
        columns = describe_statement(session, prepared)
        if columns is None:
            session.send(message(Backend.NO_DATA))
        else:
            encoder = RowEncoder(columns[1], [0])
            session.send(running.describe_columns(columns[0], encoder))
        return
    portal = _portal(session, name)
    if portal.prepared.statement.kind == Kind.COPY:
        session.send(message(Backend.NO_DATA))
        return
    running.open_portal(session, portal)
    assert portal.outcome is not None
    if portal.outcome.names is None:
        session.send(message(Backend.NO_DATA))
    else:
        session.send(running.describe_rows(session, portal))


def describe_statement(session: Session, prepared: Prepared) -> tuple[list[str], list[str]] | None:
    statement = prepared.statement
    if statement.kind == Kind.SHOW and (
        statement.name in session.settings or statement.name in compat.SHOW_ONLY
    ):
        return [statement.name], ["VARCHAR"]
    if statement.kind == Kind.SHOW:
        return session.server.executor.describe(
            statement.sql, 0, session.role, client=session.client
        )
    if statement.kind != Kind.SQL:
        return None
    count = len(prepared.param_types)
    return session.server.executor.describe(
        statement.sql, count, session.role, client=session.client
    )


def on_execute(session: Session, body: bytes) -> None:
    fields = Body(body)
    name, limit = fields.string(), fields.int32()
    portal = _portal(session, name)
    statement = portal.prepared.statement
    if statement.kind == Kind.EMPTY:
        session.send(message(Backend.EMPTY_QUERY))
        return
    if statement.kind == Kind.COPY:
        running.copy_out(session, statement, portal.params)
        return
    running.open_portal(session, portal)
    running.send_rows(session, portal, max(limit, 0))  # PostgreSQL: 0 or less, every row


def on_close(session: Session, body: bytes) -> None:
    fields = Body(body)
    what, name = fields.raw(1), fields.string()
    if what == b"S":
        session.prepared.pop(name, None)
    else:
        session.close_portal(name)
    session.send(message(Backend.CLOSE_COMPLETE))


def _prepared(session: Session, name: str) -> Prepared:
    found = session.prepared.get(name)
    if found is None:
        raise QueryError(f"prepared statement {name!r} does not exist")
    return found


def _portal(session: Session, name: str) -> Portal:
    found = session.portals.get(name)
    if found is None:
        raise QueryError(f"portal {name!r} does not exist")
    return found
