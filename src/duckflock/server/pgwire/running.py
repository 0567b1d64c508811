"""Running one statement of a session (a portal) and sending what it gives: rows
(DataRow, within the server's row and byte caps), COPY data, settings, transaction
tags."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from duckflock.errors import QueryError, QueryTimeoutError, ServerBusyError
from duckflock.server.pgwire import compat
from duckflock.server.pgwire.compat import Kind, Statement
from duckflock.server.pgwire.encode import (
    COPY_SIGNATURE,
    COPY_TRAILER,
    GATHER_BYTES,
    GATHER_ROWS,
    RowEncoder,
    copy_data,
)
from duckflock.server.pgwire.execute import CopyFormat, CopyPlan, Outcome, copy_plan
from duckflock.server.pgwire.messages import (
    Backend,
    LimitExceeded,
    command_complete,
    message,
    notice,
    parameter_status,
    row_description,
)
from duckflock.server.pgwire.session import MAX_SETTING_TEXT, MAX_SETTINGS, Portal, Session
from duckflock.server.pgwire.types import Format

_I2 = struct.Struct("!h")


def gathered(next_batch: Callable[[], pa.RecordBatch | None]) -> pa.RecordBatch | None:
    """The next batches of a result as one, up to about :data:`GATHER_ROWS` rows and
    :data:`GATHER_BYTES` (None at the end): the byte cap is checked between groups, so a
    group of wide rows must stay small (COPY of 1 KB rows ran 30 MB past a 1 MB cap)."""
    batch = next_batch()
    if batch is None or batch.num_rows >= GATHER_ROWS or batch.nbytes >= GATHER_BYTES:
        return batch
    parts, rows, size = [batch], batch.num_rows, batch.nbytes
    while rows < GATHER_ROWS and size < GATHER_BYTES and (more := next_batch()) is not None:
        parts.append(more)
        rows += more.num_rows
        size += more.nbytes
    return pa.concat_batches(parts) if len(parts) > 1 else batch


def fitting(batch: pa.RecordBatch, room: int) -> pa.RecordBatch:
    """The first rows of ``batch`` up to the one whose data crosses ``room`` bytes (at
    least one row): the byte cap is checked after each send, and a group of very wide
    rows (300 values of 1 MB) must not be encoded and sent whole past it."""
    if batch.nbytes <= room or batch.num_rows <= 1:
        return batch
    sizes = np.zeros(batch.num_rows, dtype=np.int64)
    for column in batch.columns:
        if pa.types.is_binary(column.type) or pa.types.is_string(column.type):
            lengths = pc.binary_length(column).fill_null(0)
            sizes += lengths.to_numpy(zero_copy_only=False).astype(np.int64)
        else:  # fixed-width or nested: its share of the column's buffers
            sizes += max(1, column.nbytes // batch.num_rows)
    crossing = int(np.searchsorted(np.cumsum(sizes), room, side="right"))
    return batch.slice(0, min(batch.num_rows, crossing + 1))


def open_portal(session: Session, portal: Portal) -> None:
    if portal.expired:
        raise QueryTimeoutError(
            f"the query ran past its {session.server.executor.timeout:g} s limit while its "
            "portal was suspended, and was stopped",
            sql=portal.prepared.statement.sql,
        )
    if portal.outcome is not None:
        return
    if len(session.held_portals()) >= session.server.per_client:
        raise ServerBusyError(
            f"this connection holds {session.server.per_client} suspended results already "
            "(each takes a query slot): read them to the end, close them, or Sync",
            retry_after=1,
        )
    session.cancelled = False
    portal.deadline = time.monotonic() + session.server.executor.timeout
    portal.outcome = run_statement(session, portal.prepared.statement, portal.params)
    if portal.outcome.names is not None:
        assert portal.outcome.duck_types is not None
        portal.encoder = RowEncoder(portal.outcome.duck_types, portal.formats)


def run_statement(session: Session, statement: Statement, params: list[Any]) -> Outcome:
    session.admit(statement)
    kind, executor = statement.kind, session.server.executor
    if kind == Kind.TX:
        return transaction(session, statement.tag, to_savepoint=bool(statement.name))
    if kind == Kind.SET:
        return set_setting(session, statement)
    if kind == Kind.SHOW:
        name = statement.name
        value = session.settings.get(name, compat.SHOW_ONLY.get(name))
        if value is None:  # not a setting: DuckDB's SHOW <table>
            return executor.run(
                statement.sql, params, session.role, session.running_on, client=session.client
            )
        return Outcome.table("SHOW", pa.table({name: [value]}), ["VARCHAR"])
    if kind == Kind.LISTEN:
        session.channels.listen(statement.name, session.pid)
        return Outcome("LISTEN")
    if kind == Kind.UNLISTEN:
        session.channels.unlisten(statement.name)
        return Outcome("UNLISTEN")
    if kind == Kind.NOTIFY:
        raise QueryError("NOTIFY is not supported: channels are analyses, notified on refresh")
    if kind in (Kind.DISCARD, Kind.DEALLOCATE):
        if kind == Kind.DEALLOCATE and statement.sql.split()[-1].upper() == "ALL":
            session.prepared.clear()  # compat names it "", like the unnamed statement
        elif kind == Kind.DEALLOCATE:
            session.prepared.pop(statement.name, None)
        return Outcome(statement.tag)
    if kind == Kind.INSERT:
        outcome = executor.insert(statement.sql, params, session.role, client=session.client)
    else:
        outcome = executor.run(
            statement.sql, params, session.role, session.running_on, client=session.client
        )
    if outcome.names is None or not outcome.tag.startswith("SELECT"):
        session.committed_in_tx += session.in_tx  # a write: committed already
    return outcome


def transaction(session: Session, tag: str, *, to_savepoint: bool = False) -> Outcome:
    """BEGIN/COMMIT/ROLLBACK: accepted, and nothing to do, since every statement
    commits on its own; a ROLLBACK after writes says that it undid none. ROLLBACK TO
    SAVEPOINT ends a failed block's abort but not the block (PostgreSQL's recovery)."""
    if to_savepoint and not session.in_tx:
        raise QueryError("ROLLBACK TO SAVEPOINT can only be used in transaction blocks")
    if tag == "ROLLBACK" and session.committed_in_tx:
        session.send(
            notice(
                f"ROLLBACK undid nothing: duckflock committed each of the "
                f"{session.committed_in_tx} writing statement(s) of this transaction on its own",
                "25000",
            )
        )
    if to_savepoint:
        session.aborted = False
        return Outcome(tag)
    if tag in ("COMMIT", "ROLLBACK") or (tag == "BEGIN" and not session.in_tx):
        session.committed_in_tx = 0
    if tag == "COMMIT" and session.aborted:
        tag = "ROLLBACK"  # (PostgreSQL's answer to COMMIT of a failed block)
    session.aborted = False
    session.in_tx = tag == "BEGIN" or (session.in_tx and tag not in ("COMMIT", "ROLLBACK"))
    return Outcome(tag)


def set_setting(session: Session, statement: Statement) -> Outcome:
    """SET/RESET of a session setting, within :data:`MAX_SETTINGS` settings of at
    most :data:`MAX_SETTING_TEXT` characters (they were unbounded)."""
    if statement.tag != "RESET" and statement.name:
        name = compat.setting_name(statement.name)
        if max(len(name), len(statement.value)) > MAX_SETTING_TEXT:
            raise LimitExceeded(
                f"a setting's name and value may have {MAX_SETTING_TEXT:,} characters each"
            )
        added = len(session.settings) - len(compat.DEFAULT_SETTINGS)
        if name not in session.settings and added >= MAX_SETTINGS:
            raise LimitExceeded(
                f"this connection has set {MAX_SETTINGS} settings of its own, the most it "
                "may: RESET some first"
            )
    for name in compat.apply_setting(session.settings, statement):
        session.send(parameter_status(name, session.settings[name]))
    return Outcome(statement.sql.split(None, 1)[0].upper())  # SET x TO DEFAULT: SET


def describe_rows(session: Session, portal: Portal) -> bytes:
    assert portal.outcome is not None and portal.outcome.names is not None
    assert portal.encoder is not None
    return describe_columns(portal.outcome.names, portal.encoder)


def describe_columns(names: list[str], encoder: RowEncoder) -> bytes:
    formats = encoder.formats if len(encoder.formats) == len(names) else [Format.TEXT] * len(names)
    return row_description(
        (name, c.oid, c.size, f) for name, c, f in zip(names, encoder.columns, formats, strict=True)
    )


def send_rows(session: Session, portal: Portal, limit: int) -> None:
    """Up to ``limit`` rows (0: all) of the portal, then CommandComplete or
    PortalSuspended; the server's row and byte caps end a result early with a
    warning."""
    session.sending_until = portal.deadline
    try:
        _send_rows(session, portal, limit)
    finally:
        session.sending_until = None


def _send_rows(session: Session, portal: Portal, limit: int) -> None:
    outcome = portal.outcome
    assert outcome is not None
    if outcome.names is None or portal.done:
        session.send(command_complete(outcome.tag))
        return
    encoder = portal.encoder
    assert encoder is not None
    server = session.server
    sent = 0
    while True:
        batch = portal.pending if portal.pending is not None else gathered(outcome.next_batch)
        portal.pending = None
        if batch is None:
            break
        room = server.row_cap - portal.rows
        if batch.num_rows > room:
            batch = batch.slice(0, room)
            portal.notes.append(f"the result was cut at the {server.row_cap:,}-row cap")
        fitted = fitting(batch, server.byte_cap - portal.bytes)
        if fitted.num_rows < batch.num_rows:  # sent next, unless these cross the cap
            portal.pending, batch = batch.slice(fitted.num_rows), fitted
        if limit and sent + batch.num_rows > limit:
            rest = batch.slice(limit - sent)
            pending = portal.pending
            portal.pending = rest if pending is None else pa.concat_batches([rest, pending])
            batch = batch.slice(0, limit - sent)
        data = encoder.data_rows(batch)
        portal.rows += batch.num_rows
        portal.bytes += len(data)
        sent += batch.num_rows
        session.send(data)
        if portal.bytes > server.byte_cap:
            portal.notes.append(f"the result was cut at the {server.byte_cap:,}-byte cap")
        if portal.notes and (portal.pending is None or portal.bytes > server.byte_cap):
            portal.pending = None  # (rows cut before the byte cap but within it still go)
            break
        if limit and sent >= limit:
            session.send(message(Backend.PORTAL_SUSPENDED))
            return
    portal.done = True
    for text in portal.notes:
        session.send(notice(text))
    session.send(command_complete(f"SELECT {portal.rows}"))
    session.close_outcome(portal)


def copy_out(session: Session, statement: Statement, params: list[Any]) -> None:
    session.admit(statement)
    plan = copy_plan(statement.sql)
    session.sending_until = time.monotonic() + session.server.executor.timeout
    try:
        _copy_out(session, plan, params)
    finally:
        session.sending_until = None


def _copy_out(session: Session, plan: CopyPlan, params: list[Any]) -> None:
    outcome = session.server.executor.select(
        plan.query, params, client=session.client, on_cursor=session.running_on
    )
    try:
        assert outcome.duck_types is not None and outcome.names is not None
        binary = plan.format == CopyFormat.BINARY
        encoder = RowEncoder(outcome.duck_types, [Format.BINARY if binary else Format.TEXT])
        count = len(outcome.names)
        head = struct.pack("!bh", int(binary), count) + _I2.pack(int(binary)) * count
        session.send(message(Backend.COPY_OUT_RESPONSE, head))
        # the binary header travels with the first rows, as PostgreSQL sends it
        # (ADBC's reader expects a row right after the header in the same message)
        prefix = COPY_SIGNATURE if binary else b""
        # one CopyData a row (PostgreSQL's), or a batch (the session's opt-in)
        framed = session.settings.get(compat.COPY_MESSAGES, "row").lower() != "batch"
        rows = sent = 0
        header = outcome.names if plan.header else None
        row_cap, byte_cap = session.server.row_cap, session.server.byte_cap
        notes: list[str] = []
        pending: pa.RecordBatch | None = None  # rows of a batch cut before the byte cap
        while (
            batch := pending if pending is not None else gathered(outcome.next_batch)
        ) is not None:
            pending = None
            if batch.num_rows > row_cap - rows:  # the same caps and notices as a SELECT's
                batch = batch.slice(0, row_cap - rows)
                notes.append(f"the result was cut at the {row_cap:,}-row cap")
                if not batch.num_rows:
                    break
            fitted = fitting(batch, byte_cap - sent)
            if fitted.num_rows < batch.num_rows:  # sent next, unless these cross the cap
                pending, batch = batch.slice(fitted.num_rows), fitted
            if plan.format == CopyFormat.BINARY:
                data = encoder.copy_binary(batch, prefix, framed) if batch.num_rows else b""
                prefix = prefix if not data else b""
            elif plan.format == CopyFormat.CSV:
                data = encoder.copy_csv(batch, header, framed)
                header = None
            else:
                data = encoder.copy_text(batch, header, framed)
                header = None
            if data and not framed:  # (never an empty CopyData: clients read it as the end)
                data = copy_data(data)
            session.send(data)
            rows += batch.num_rows
            sent += len(data)
            if sent > byte_cap:  # cut at the row that crossed it, as a SELECT's
                notes.append(f"the result was cut at the {byte_cap:,}-byte cap")
            if notes and (pending is None or sent > byte_cap):
                break
        if binary:
            session.send(copy_data(prefix + COPY_TRAILER))
        session.send(message(Backend.COPY_DONE))
        for text in notes:
            session.send(notice(text))
        session.send(command_complete(f"COPY {rows}"))
    finally:
        session.cursor = None
        outcome.close()
