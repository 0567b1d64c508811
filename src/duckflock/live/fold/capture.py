"""Retention deletes, the write path: capture the rows a DELETE removes, for the analyses.

A ``DELETE`` run through ``db.execute`` (one statement, autocommitted) on a table that
incremental analyses read is run as ``BEGIN; DELETE … RETURNING *; COMMIT`` (or a SELECT
of the same rows first, where that surely reads the rows the DELETE deletes), the COMMIT
under the writer's commit lock. The deleted rows are handed to the scheduler under that
lock too, so they are ordered against db.insert commits and against the snapshot an
analysis pins when it (re)builds, exactly as appended rows are.

What is captured: exactly one DELETE statement without a RETURNING of its own, outside
the caller's transaction, on a base table (not a temporary one of the same name), of no
more rows than an analysis keeps between refreshes. Anything else keeps the old
behaviour: the analyses on that table rebuild. How the captured rows leave the states
is :mod:`duckflock.live.fold.retention`'s.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable
from typing import Any

import duckdb
import pyarrow as pa

from duckflock.core.cursors import first_row
from duckflock.core.names import Identity, RelationKind, Resolver
from duckflock.sql import LexError, Token, tokens

_BATCH = 65_536

# -- the write path: which statements are captured, and how -----------------------------


def target(sql: str) -> tuple[str, ...] | None:
    """The name parts of the table ``sql`` deletes from, when ``sql`` is exactly one
    ``DELETE`` (WITH-prefixed or not) without a RETURNING of its own; else None."""
    found = _delete_keyword(sql)
    if found is None:
        return None
    scanned, at = found
    if at + 2 >= len(scanned) or scanned[at + 1].word != "from":
        return None
    at += 2
    if scanned[at].word == "only" and scanned[at].kind == duckdb.token_type.keyword:
        at += 1  # DELETE FROM ONLY t: t
    return _name(scanned, at)


_UNREPEATABLE = {"random", "uuid", "gen_random_uuid", "uuidv4", "uuidv7", "nextval", "setseed"}
# a subquery (or CTE) may sample, LIMIT without an order, or read a view or table macro
# that does: the SELECT and the DELETE could then pick as many rows but not the same ones
_SUBQUERY = {"select", "sample", "tablesample", "limit", "using"}


def selecting(sql: str, cursor: duckdb.DuckDBPyConnection | None = None) -> str | None:
    """The SELECT of the rows the DELETE ``sql`` deletes (same parameters), or None.

    ``[WITH …] DELETE FROM t [AS a] [WHERE …]`` becomes ``[WITH …] SELECT * FROM t …``;
    run in the DELETE's transaction just before it, it reads the very rows it deletes.
    That costs a scan of those rows; ``RETURNING *`` fetches them one by one from
    storage, ~15x slower. Only for a predicate sure to pick the same rows twice: not for
    ``USING`` (a join), subqueries and CTEs, or calls that may differ between runs
    (volatile functions and, with ``cursor``, a user's macros, whose bodies are not
    checked).
    """
    found = _delete_keyword(sql)
    if found is None:
        return None
    scanned, at = found
    words = {token.word for token in scanned}
    # FROM-first subqueries: (FROM t …); not IS DISTINCT FROM, extract(year FROM ts)
    from_first = any(
        before.text.startswith("(") and token.word == "from"
        for before, token in itertools.pairwise(scanned)
    )
    if from_first or words & (_UNREPEATABLE | _SUBQUERY):
        return None
    if cursor is not None and _volatile(cursor, scanned):
        return None
    position = scanned[at].start
    return sql[:position] + "SELECT *" + sql[position + len("delete") :]


def _volatile(cursor: duckdb.DuckDBPyConnection, scanned: list[Token]) -> bool:
    """Whether a word of ``sql`` names a volatile function or a user's macro (its body
    is not checked). Table functions and macros come with a FROM: a subquery already."""
    names = sorted(
        {
            token.name
            for token, after in itertools.pairwise(scanned)
            if after.text.startswith("(")  # a call: the catalogue costs ~10 ms to ask
        }
        - {""}
    )
    if not names:
        return False
    try:
        row = first_row(
            cursor.execute(
                "SELECT count(*) FROM duckdb_functions() WHERE lower(function_name) IN "
                "(SELECT lower(unnest(?))) "
                "AND (stability = 'VOLATILE' OR (function_type = 'macro' AND NOT internal))",
                [names],
            )
        )
    except duckdb.Error:
        return True
    return row is None or bool(row[0])


def _delete_keyword(sql: str) -> tuple[list[Token], int] | None:
    """The tokens of ``sql`` and the index of its top-level DELETE keyword, when ``sql``
    is one DELETE statement without RETURNING."""
    try:
        statements = duckdb.extract_statements(sql)
        scanned = tokens(sql)
    except (duckdb.Error, LexError):
        return None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.DELETE:
        return None
    depth = 0
    found: int | None = None
    for i, token in enumerate(scanned):
        if token.kind == duckdb.token_type.operator:
            depth += token.text.startswith("(") - token.text.startswith(")")
        elif token.kind == duckdb.token_type.keyword and token.word == "returning":
            return None  # its caller wants its own rows back
        elif token.kind == duckdb.token_type.keyword and token.word == "delete" and depth == 0:
            found = i
    return None if found is None else (scanned, found)


def _name(scanned: list[Token], i: int) -> tuple[str, ...] | None:
    """A dotted name of up to three parts starting at token ``i``."""
    parts: list[str] = []
    # unreserved keywords name tables too (data, value, name, type, day, session…)
    kinds = (duckdb.token_type.identifier, duckdb.token_type.keyword)
    while i < len(scanned) and scanned[i].kind in kinds:
        name = scanned[i].name
        if not name:
            return None
        parts.append(name)
        i += 1
        if i < len(scanned) and scanned[i].text.startswith(".") and i + 1 < len(scanned):
            i += 1
            continue
        break
    return tuple(parts) if 1 <= len(parts) <= 3 else None


def returning(sql: str) -> str:
    """``sql`` with ``RETURNING *``: before any trailing semicolons (and what follows
    them), on a line of its own (a trailing ``--`` comment would swallow it otherwise)."""
    scanned = tokens(sql)
    end = len(scanned)
    while end and scanned[end - 1].is_semicolon:
        end -= 1
    if end < len(scanned):
        sql = sql[: scanned[end].start]
    return sql.rstrip() + "\nRETURNING *"


def resolve(cursor: duckdb.DuckDBPyConnection, parts: tuple[str, ...]) -> Identity | None:
    """The base table ``parts`` names on ``cursor``, as its DELETE binds it; None when
    unsure (a temporary table of that name shadows the catalog's, or it is not a table)."""
    try:
        shadow = first_row(
            cursor.execute(
                "SELECT count(*) FROM duckdb_tables() "
                "WHERE temporary AND lower(table_name) = lower(?)",
                [parts[-1]],
            )
        )
        if shadow is None or shadow[0]:
            return None
        found = Resolver(cursor).lookup(parts)
    except duckdb.Error:  # e.g. the cursor's transaction is aborted: run it plainly
        return None
    return found.identity if found is not None and found.kind is RelationKind.TABLE else None


def delete(
    cursor: duckdb.DuckDBPyConnection,
    sql: str,
    params: Any,
    *,
    columns: list[str],
    commit_lock: threading.Lock,
    committed: Callable[[pa.Table | None], None],
    lost: Callable[[], None],
    limit: int,
    prepare: Callable[[pa.Table], None] = lambda rows: None,
    fault: Callable[[str], None] = lambda point: None,
) -> int | None:
    """Run the DELETE ``sql`` capturing its rows; the number deleted, or None when it did
    not run because the cursor is inside a transaction of its caller's.

    ``committed`` gets the deleted rows (None: more than ``limit`` of them, or not the
    table's columns) under ``commit_lock``, right after the COMMIT. Anything raised from
    the COMMIT until they are handed over (a Ctrl-C between the two) calls ``lost``
    first, still under the lock: the analyses rebuild rather than keep the deleted rows.
    ``prepare`` gets them before the lock is taken (the analyses' partials of them are
    aggregated there, on this thread: :func:`duckflock.live.fold.retention.prepare`).
    ``fault(point)`` is a test's seam ("deleted", "committed", "handed").
    """
    if _in_transaction(cursor):
        return None  # the caller's own transaction: it may yet roll back
    cursor.execute("BEGIN TRANSACTION")
    try:
        rows, deleted = _capture(cursor, sql, params, limit)
        if deleted < 0:
            return None  # rolled back: nothing ran
        if rows is not None and [name.lower() for name in rows.schema.names] != columns:
            rows = None
        if rows is not None:
            prepare(rows)
        fault("deleted")
        with commit_lock:
            try:
                cursor.execute("COMMIT")
                fault("committed")
                committed(rows)
            except BaseException:
                lost()  # committed or not: rebuilding is right either way
                raise
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            cursor.execute("ROLLBACK")
        raise
    fault("handed")
    # what a plain DELETE answers: one row, the number of rows deleted
    cursor.execute('SELECT CAST(? AS BIGINT) AS "Count"', [deleted])
    return deleted


def _capture(
    cursor: duckdb.DuckDBPyConnection, sql: str, params: Any, limit: int
) -> tuple[pa.Table | None, int]:
    """Delete, inside the open transaction: (the deleted rows or None, how many).
    -1 rows: the statement did not run and the transaction was rolled back."""
    select = selecting(sql, cursor)
    if select is not None:
        try:
            rows, seen = _read(cursor.execute(select, params).to_arrow_reader(_BATCH), limit)
        except duckdb.Error:
            # not a SELECT after all (it aborted the transaction): let the DELETE speak
            cursor.execute("ROLLBACK")
            cursor.execute("BEGIN TRANSACTION")
        else:
            counted = first_row(cursor.execute(sql, params))
            deleted = int(counted[0]) if counted else -1
            # same snapshot, same rows: a different count means it did not hold
            return (rows if deleted == seen else None), deleted
    try:
        result = cursor.execute(returning(sql), params)
    except duckdb.ParserException:
        # RETURNING did not fit where it was put: run the statement as it was
        with contextlib.suppress(duckdb.Error):
            cursor.execute("ROLLBACK")
        return None, -1
    return _read(result.to_arrow_reader(_BATCH), limit)


def _read(reader: pa.RecordBatchReader, limit: int) -> tuple[pa.Table | None, int]:
    """(the rows, or None past ``limit`` of them; how many)."""
    batches: list[pa.RecordBatch] = []
    seen = 0
    for batch in reader:
        seen += batch.num_rows
        if seen <= limit:
            batches.append(batch)
    if seen > limit:
        return None, seen
    return pa.Table.from_batches(batches, schema=reader.schema), seen


def _in_transaction(cursor: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``cursor`` is inside an explicit transaction. (A failed BEGIN would say
    so too, but it aborts the caller's transaction.) Autocommit gives each statement a
    transaction of its own; an explicit one keeps its id."""
    first = first_row(cursor.execute("SELECT txid_current()"))
    second = first_row(cursor.execute("SELECT txid_current()"))
    return first == second


def table_columns(cursor: duckdb.DuckDBPyConnection, table: Identity) -> list[str]:
    rows = cursor.execute(
        "SELECT lower(column_name) FROM duckdb_columns() "
        "WHERE database_name = ? AND schema_name = ? AND table_name = ? ORDER BY column_index",
        list(table),
    ).fetchall()
    return [str(name) for (name,) in rows]
