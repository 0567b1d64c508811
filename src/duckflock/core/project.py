"""duckflock's own schema: written by duckflock only, never through SQL a caller sends.

``duckflock.analyses`` keeps analysis definitions (:mod:`duckflock.live.definitions`); they
change only through the analyses API (``db.analysis`` / ``drop_analysis``, ``PUT`` /
``DELETE /v1/analyses/{name}``), which checks the SQL and records who defined it.
``duckflock.batches`` keeps the idempotency keys of committed keyed inserts
(:mod:`duckflock.ingest.keys`), written by the writer in the same commit as the rows. A
caller's statement that could write the schema is refused here, the one place every
surface asks — ``db.execute``, ``executemany``, ``sql``, ``db.insert``, the server's
``POST /v1/sql`` and the Postgres port:

- :func:`check_table` — an insert's target, resolved by :mod:`duckflock.core.names` to its
  catalog identity, is in the schema: refused.
- :func:`check_statement` — any statement that is not a read (:func:`syntax.classify`)
  and names the schema anywhere (``"duckflock"``, ``DUCKFLOCK``, ``db.duckflock.x``):
  refused, whatever it does (INSERT, UPDATE, DELETE, ALTER, DROP, COPY … FROM, CREATE
  OR REPLACE, USE, PREPARE …). The names are DuckDB's own tokens (its scanner, so a
  name inside a string or comment is not one) compared as DuckDB's binder compares
  identifiers: ASCII letters without case, anything else exactly, so a look-alike
  (``duckflock`` spelt with a Cyrillic es, a Kelvin sign for ``K``) is another schema.
  Any identifier counts, wherever it stands (a column named ``duckflock`` too): the
  parser does not say which names of a write are schemas, so the name is reserved.
- :func:`check_search_path` — before the first write after a ``USE``, ``SET schema`` or
  ``SET search_path`` on a thread's cursor: the schema must not be where unqualified
  names resolve (asked of DuckDB: ``current_schemas``), or the write is refused.
"""

from __future__ import annotations

import functools
import re

import duckdb

from duckflock.core.cursors import first_row
from duckflock.core.names import Identity
from duckflock.core.syntax import READ, SESSION, classify
from duckflock.errors import QueryRefusedError
from duckflock.sql import LexError, tokens

SCHEMA = "duckflock"
ANALYSES = "analyses"
BATCHES = "batches"  # idempotency keys of committed inserts (duckflock.ingest.keys)
WHERE = f"{SCHEMA}.{ANALYSES}"

_USE_API = (
    f"the schema {SCHEMA!r} is duckflock's own ({WHERE} keeps analysis definitions): "
    "no statement writes it; change analyses through the analyses API "
    "(db.analysis / db.drop_analysis, PUT / DELETE /v1/analyses/{name})"
)
# settings that change where unqualified names resolve
_RESOLVING = re.compile(r"\A\s*USE\b|\bschema\b|\bsearch_path\b", re.IGNORECASE)


def is_schema(name: str) -> bool:
    """True when ``name`` names duckflock's schema as DuckDB's binder compares names:
    ASCII letters case-insensitively, every other character exactly."""
    return len(name) == len(SCHEMA) and name.isascii() and name.lower() == SCHEMA


def check_table(identity: Identity, sql: str | None = None) -> None:
    """QueryRefusedError when ``identity`` (a resolved write target) is duckflock's."""
    if is_schema(identity.schema):
        raise QueryRefusedError(f"{identity.display()} cannot be written: {_USE_API}", sql=sql)


def resolves(sql: str) -> bool:
    """True when ``sql`` (a SET-type statement) may change where names resolve:
    ``USE``, ``SET schema``, ``SET search_path`` (``PRAGMA`` spellings included)."""
    return _RESOLVING.search(sql) is not None


def check_search_path(cursor: duckdb.DuckDBPyConnection, sql: str) -> None:
    """QueryRefusedError when duckflock's schema is on ``cursor``'s search path (its
    current schema included), where an unqualified name in ``sql`` (a write) could
    resolve to it. Asked of DuckDB, once after each SET or USE that may move it."""
    row = first_row(cursor.execute("SELECT current_schemas(false)"))
    if row is None or not any(is_schema(str(name)) for name in row[0] or ()):
        return
    raise QueryRefusedError(
        f"this thread's search path holds {SCHEMA!r} (an earlier USE, SET schema or SET "
        f"search_path): writes are refused until it does not; {_USE_API}",
        sql=sql,
    )


def check_statement(sql: str) -> None:
    """QueryRefusedError when a statement of ``sql`` may write duckflock's schema."""
    lowered = sql.lower()
    if SCHEMA not in lowered and "schema" not in lowered and "search_path" not in lowered:
        return  # it cannot name the schema, nor move the search path to it (USE names it)
    why = _refusal(sql)
    if why is not None:
        raise QueryRefusedError(f"{why}: {_USE_API}", sql=sql)


@functools.lru_cache(maxsize=4096)
def _refusal(sql: str) -> str | None:
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error:
        return None  # it does not parse, so it does not run either
    resolving = False  # an earlier statement of the string changed the search path
    for statement in statements:
        kind = classify(statement.query)
        if kind == READ:
            continue
        if names_schema(statement.query):
            return f"this statement names {SCHEMA!r}"
        if resolving:
            return (
                "a write after USE / SET schema / SET search_path in one string (where "
                "its names resolve is only known once it has run): run them apart"
            )
        resolving |= kind == SESSION and resolves(statement.query)
    return None


def names_schema(sql: str) -> bool:
    """True when an identifier of ``sql`` (by DuckDB's scanner) names duckflock's schema."""
    if SCHEMA not in sql.lower():  # fast path: the text cannot spell it
        return False
    try:
        found = tokens(sql)
    except LexError:
        return True  # a NUL (DuckDB reads up to it) or a lone surrogate: refuse, unread
    return any(
        token.kind == duckdb.token_type.identifier and is_schema(token.name) for token in found
    )
