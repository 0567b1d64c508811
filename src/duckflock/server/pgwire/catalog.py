"""PostgreSQL's catalog as psql and BI tools read it, answered by DuckDB views and macros.

DuckDB has a ``pg_catalog`` of its own (views over ``duckdb_tables()`` and friends), but
it names types as DuckDB does (``VARCHAR``, ``DOUBLE``), lists duckflock's own schema,
knows no primary-key indexes and lacks what psql's ``\\l``, ``\\dt+``, ``\\d table`` and
``\\df`` call (``pg_encoding_to_char``, ``pg_get_indexdef``, ``pg_get_function_result``…).
Here each relation and function clients read is a DuckDB temporary view or macro
(:mod:`catalog_relations`, :mod:`catalog_functions`), created on the query's own
cursor just before a catalog query runs (only those the query names, with what they
read): the client's SQL runs as it was sent, with
``pg_catalog.`` left off the names defined here (a temporary object comes first in
DuckDB's search path, as ``pg_catalog`` does in PostgreSQL's) and
``information_schema.x`` read from the view ``information_schema_x``.

Types are named from one table, :data:`types.PG_TYPES`: a column's type is the OID its
values are sent with (:func:`types.column_type`), except that VARCHAR is PostgreSQL's
``character varying`` (an unbounded VARCHAR) rather than the ``text`` it travels as.
The schema ``duckflock`` (duckflock's own bookkeeping) is left out; analyses are tables
of the schema ``analyses``, with their latest result's columns. Relations DuckDB has no
object for (the index behind a primary key, an analysis) get OIDs from a hash of their
name in ranges above DuckDB's own counter, so they are the same on every connection.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

import duckdb

from duckflock.core.wide import readable
from duckflock.database import Database
from duckflock.errors import UnknownAnalysisError
from duckflock.server.pgwire import types
from duckflock.server.pgwire.catalog_functions import FUNCTIONS
from duckflock.server.pgwire.catalog_relations import (
    ANALYSES_TABLE,
    ANALYSIS_BASE,
    RELATIONS,
    SPAN,
    TYPES_TABLE,
)


def catalog_type(duck_type: str) -> tuple[int, int]:
    """``(atttypid, atttypmod)`` of a column of DuckDB type ``duck_type``."""
    element = duck_type.removesuffix("[]")
    if element == "VARCHAR":  # travels as text; PostgreSQL's unbounded VARCHAR
        oid = types.Oid.VARCHAR if element == duck_type else types.PG_TYPES[types.Oid.VARCHAR].array
    else:
        oid = types.column_type(duck_type).oid
    decimal = re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", element)
    typmod = ((int(decimal.group(1)) << 16) | int(decimal.group(2))) + 4 if decimal else -1
    return oid, typmod


_OBJECTS = [*RELATIONS, *FUNCTIONS]
_TYPES, _ANALYSES = TYPES_TABLE, ANALYSES_TABLE
_STATEMENTS = dict(_OBJECTS)
_HELPERS = (_ANALYSES, _TYPES)
_WORDS = re.compile(r"\w+")


def _named(text: str) -> set[str]:
    return {w for w in _WORDS.findall(text) if w in _STATEMENTS or w in _HELPERS}


_READS = {name: _named(statement) - {name} for name, statement in _OBJECTS}
_READS[_TYPES] = {"duckflock_raw_columns"}
_ORDER = [_ANALYSES, *_STATEMENTS]  # the order objects are made in
_ORDER.insert(_ORDER.index("duckflock_raw_columns") + 1, _TYPES)
# every name above contains one of these
_MARKERS = ("pg_", "information_schema", "format_type", "_description", "json_build", "duckflock_")
assert all(any(m in name for m in _MARKERS) for name in [*_STATEMENTS, *_HELPERS])
_PG_NAMES = [n for n, _ in _OBJECTS if not n.startswith(("duckflock_", "information_schema_"))]
_QUALIFIED = re.compile(
    r"(?<![\w.\"])pg_catalog\s*\.\s*(" + "|".join(_PG_NAMES) + r")\b"
    r"|(?<![\w.\"])information_schema\s*\.\s*("
    + "|".join(
        n.removeprefix("information_schema_")
        for n, _ in _OBJECTS
        if n.startswith("information_schema_")
    )
    + r")\b",
    re.I,
)


def _renamed(match: re.Match[str]) -> str:
    if match.group(1):
        return match.group(1).lower()
    return f"information_schema_{match.group(2).lower()}"


def rename(sql: str) -> str:
    """``sql`` (code, outside literals) reading the catalog defined here: ``pg_catalog.``
    left off the names it defines, ``information_schema.x`` as ``information_schema_x``."""
    return _QUALIFIED.sub(_renamed, sql)


def needed(sql: str) -> list[str]:
    """The objects ``sql`` reads, with those they read, in the order they are created."""
    lowered = sql.lower()
    if not any(marker in lowered for marker in _MARKERS):
        return []  # most SQL: one pass over the text, no word list
    found = _named(sql)
    todo = list(found)
    while todo:
        for name in _READS.get(todo.pop(), ()):
            if name not in found:
                found.add(name)
                todo.append(name)
    return [name for name in _ORDER if name in found]


def install(cursor: duckdb.DuckDBPyConnection, sql: str, db: Database) -> None:
    """Create on ``cursor`` the catalog objects ``sql`` reads (nothing for other SQL)."""
    for name in needed(sql):
        if name == _ANALYSES:
            _register_analyses(cursor, db)
        elif name == _TYPES:
            _register_types(cursor)
        else:
            cursor.execute(_STATEMENTS[name])


def analysis_oids(names: list[str]) -> dict[str, int]:
    """The made-up OID of each analysis's table: a hash of its name, the same on every
    connection; two names that hash alike take the next free OID, in name order."""
    taken: dict[str, int] = {}
    used: set[int] = set()
    for name in sorted(names):
        oid = ANALYSIS_BASE + zlib.crc32(name.encode()) % SPAN
        while oid in used:
            oid = ANALYSIS_BASE + (oid - ANALYSIS_BASE + 1) % SPAN
        used.add(oid)
        taken[name] = oid
    return taken


def _register_analyses(cursor: duckdb.DuckDBPyConnection, db: Database) -> None:
    """Each analysis with a result as an empty view of its columns, and a table naming
    them (its name, OID, column and row counts). A refused definition (edited into the
    file offline, never run: ``refused`` set) has no result and is left out, as is one
    dropped since it was listed."""
    found = []
    for status in db.analyses():
        if status["refused"] is not None:
            continue
        try:
            result = db.result(str(status["name"]))
        except UnknownAnalysisError:
            continue  # dropped meanwhile
        if result is not None:  # no columns before a first result
            found.append(result)
    oids = analysis_oids([r.name for r in found])
    rows: list[tuple[str, str, int, int, int]] = []
    for result in found:
        view = f"duckflock_analysis_{len(rows)}"
        cursor.register(view, readable(result.table).slice(0, 0))
        table = result.table
        rows.append((result.name, view, oids[result.name], table.num_columns, table.num_rows))
    _table(
        cursor,
        _ANALYSES,
        ("name", "view_name", "oid", "columns", "rows"),
        ("VARCHAR", "VARCHAR", "BIGINT", "BIGINT", "BIGINT"),
        rows,
    )


def _register_types(cursor: duckdb.DuckDBPyConnection) -> None:
    """Each DuckDB type a column has, with its PostgreSQL OID and typmod."""
    found = cursor.execute("SELECT DISTINCT duck_type FROM duckflock_raw_columns").fetchall()
    rows = [(str(row[0]), *catalog_type(str(row[0]))) for row in found]
    _table(
        cursor,
        _TYPES,
        ("data_type", "atttypid", "atttypmod"),
        ("VARCHAR", "BIGINT", "INTEGER"),
        rows,
    )


def _table(
    cursor: duckdb.DuckDBPyConnection,
    name: str,
    columns: tuple[str, ...],
    kinds: tuple[str, ...],
    rows: list[tuple[Any, ...]],
) -> None:
    """A temporary table of ``rows`` (not a registered Arrow table: DuckDB 1.5.5 cannot
    push a join's bloom filter into an Arrow scan)."""
    select = ", ".join(
        f"unnest(?::{kind}[]) AS {column}" for column, kind in zip(columns, kinds, strict=True)
    )
    values = [list(column) for column in zip(*rows, strict=True)] or [[] for _ in columns]
    cursor.execute(f"CREATE TEMP TABLE {name} AS SELECT {select}", values)
