"""What SQL does, asked of DuckDB's own parser: whether it writes, and what it reads.

Two questions decide whether cached schemas and incremental states stay valid:

- :func:`classify` — does a statement string (one or several statements) write? Every
  statement is typed by ``duckdb.extract_statements``; only SELECT (and EXPLAIN of a
  SELECT) reads. ``EXPLAIN ANALYZE DELETE …`` runs the DELETE, so it writes; ``SET`` and
  ``USE`` change how names resolve, so cached schemas are dropped.
- :func:`reads` — which tables does a query read? The syntax tree
  (``json_serialize_sql``) names them; each name is resolved against the catalog
  (:mod:`duckflock.core.names`), views are expanded to the tables they read, and a query that
  reads tables in ways the tree does not show (``query('…')``, ``query_table``, macros)
  is marked as reading any table.
"""

from __future__ import annotations

import enum
import functools
import json
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import duckdb

from duckflock.core.cursors import first_row
from duckflock.core.effects import SETTINGS_SQL
from duckflock.core.names import Identity, RelationKind, Resolver
from duckflock.errors import ParserError, QueryError
from duckflock.sql import LexError, name_end, paren_end, tokens


class StatementKind(enum.StrEnum):
    """What running a statement may change (:func:`classify`)."""

    READ = "read"  # nothing: a query, EXPLAIN of one, BEGIN, ROLLBACK
    SESSION = "session"  # settings: names may resolve differently afterwards
    WRITE = "write"  # data or the catalog


READ, SESSION, WRITE = StatementKind.READ, StatementKind.SESSION, StatementKind.WRITE

_SESSION_TYPES = {duckdb.StatementType.SET}
# table functions that read tables named by a string (or a serialized query)
_DYNAMIC_READERS = {"query", "query_table", "json_execute_serialized_sql"}


@functools.lru_cache(maxsize=4096)
def _statements(sql: str) -> tuple[duckdb.Statement, ...] | None:
    """The statements of ``sql`` as DuckDB's parser splits and types them (None: it does
    not parse), parsed once for the predicates below that ask of the same text."""
    try:
        return tuple(duckdb.extract_statements(sql))
    except duckdb.Error:
        return None


@functools.lru_cache(maxsize=4096)
def classify(sql: str) -> StatementKind:
    """``WRITE`` if any statement in ``sql`` may change data or the catalog, ``SESSION``
    if one changes settings (names may resolve differently), else ``READ``.

    SQL that does not parse is ``READ``: it will not run either, and the caller
    reports DuckDB's parse error.
    """
    statements = _statements(sql)
    if statements is None:
        return READ
    kind = READ
    for statement in statements:
        if statement.type == duckdb.StatementType.SELECT:
            continue
        if statement.type == duckdb.StatementType.EXPLAIN and _explains_a_read(statement.query):
            continue
        if statement.type == duckdb.StatementType.TRANSACTION and _opens_or_undoes(statement.query):
            continue  # BEGIN writes nothing, ROLLBACK undoes what was seen when it ran
        if statement.type in _SESSION_TYPES:
            kind = SESSION
            continue
        return WRITE
    return kind


# statements that change the catalog and nothing else: what they changed is read off the
# catalog itself (effects.py), so only the analyses reading it rebuild
_CATALOG_TYPES = {
    duckdb.StatementType.CREATE,
    duckdb.StatementType.DROP,
    duckdb.StatementType.ALTER,
}


@functools.lru_cache(maxsize=4096)
def catalog_only(sql: str) -> bool:
    """Whether every statement in ``sql`` is CREATE, DROP, ALTER or CHECKPOINT: writes
    whose whole effect shows in the catalog (a table created AS SELECT is new)."""
    statements = _statements(sql)
    return bool(statements) and all(
        s.type in _CATALOG_TYPES
        or (s.type == duckdb.StatementType.CALL and _is_checkpoint(s.query))
        for s in statements or ()
    )


_DATA_TYPES = {
    duckdb.StatementType.SELECT,
    duckdb.StatementType.INSERT,
    duckdb.StatementType.UPDATE,
    duckdb.StatementType.DELETE,
}


@functools.lru_cache(maxsize=4096)
def data_only(sql: str) -> bool:
    """Whether ``sql`` only reads and writes rows (SELECT, INSERT, UPDATE, DELETE): the
    catalog is as it was, so no analysis needs planning again."""
    statements = _statements(sql)
    return bool(statements) and all(s.type in _DATA_TYPES for s in statements or ())


# statements that change no setting, global or of the session (SET, RESET, PRAGMA,
# USE, LOAD, CALL, EXECUTE, ATTACH… may: an extension or a database brings its own)
_SETTLED_TYPES = {
    *_DATA_TYPES,
    *_CATALOG_TYPES,
    duckdb.StatementType.TRANSACTION,
    duckdb.StatementType.COPY,
    duckdb.StatementType.EXPORT,
    duckdb.StatementType.VACUUM,
    duckdb.StatementType.PREPARE,
}


@functools.lru_cache(maxsize=4096)
def may_set(sql: str) -> bool:
    """Whether a statement in ``sql`` may change a setting (see
    :class:`duckflock.core.effects.Epoch`); SQL that does not parse does not run."""
    statements = _statements(sql)
    return statements is not None and not all(
        s.type in _SETTLED_TYPES
        or (s.type == duckdb.StatementType.CALL and _is_checkpoint(s.query))
        or (s.type == duckdb.StatementType.EXPLAIN and _explains_a_read(s.query))
        for s in statements
    )


def _words(query: str) -> list[str]:
    """The words of ``query`` as DuckDB's scanner reads them (comments left out, ""
    for a token that is not a word); [] for text it cannot read."""
    try:
        return [token.word for token in tokens(query) if not token.is_semicolon]
    except LexError:
        return []


def _is_checkpoint(query: str) -> bool:
    return _words(query) in (["checkpoint"], ["force", "checkpoint"])


def said(sql: str, limit: int = 80) -> str:
    """A statement as a reason quotes it: whitespace collapsed, cut at ``limit``."""
    text = " ".join(sql.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _opens_or_undoes(query: str) -> bool:
    return _words(query)[:1] in (["begin"], ["start"], ["rollback"], ["abort"])


def _explains_a_read(query: str) -> bool:
    """``EXPLAIN <select>`` reads; ``EXPLAIN ANALYZE <anything>`` runs it, and anything
    that is not plainly ``EXPLAIN`` + one SELECT counts as a write."""
    try:
        found = tokens(query)
    except LexError:
        return False
    if len(found) < 2 or found[0].word != "explain":
        return False
    try:
        inner = duckdb.extract_statements(query[found[1].start :])
    except duckdb.Error:
        return False  # EXPLAIN ANALYZE …, EXPLAIN (options) …: assume it runs
    return len(inner) == 1 and inner[0].type == duckdb.StatementType.SELECT


_SERIALIZE = "SELECT json_serialize_sql(?)"
# the settings DuckDB's parser reads (its ParserOptions): a query parsed apart is parsed
# under the caller's values of them
_PARSER_SETTINGS = ("preserve_identifier_case", "integer_division", "max_expression_depth")


def tree(execute: Callable[[str, list[Any]], Any], sql: str) -> dict[str, Any]:
    """``json_serialize_sql(sql)`` as read: the syntax tree, or ``{"error": true, …}``.

    ``execute`` runs a statement on the caller's connection (a cursor's or a Database's
    ``execute``). DuckDB writes the tree in the format of the instance's
    ``storage_compatibility_version`` (a GLOBAL setting: the database file's format;
    v0.10.2 unless the file is newer), which cannot carry a type whose parameters are
    expressions: an ENUM inside a STRUCT, LIST, MAP or UNION (``CAST(x AS STRUCT(a
    ENUM('p', 'q')))``: "Cannot serialize non-constant type parameter"). Such a query
    is parsed apart, on an in-memory instance writing the newest format under the
    caller's parser settings: parsing reads no catalog, so it parses the same there.
    """
    raw = first_row(execute(_SERIALIZE, [sql]))
    found: dict[str, Any] = json.loads(raw[0] if raw else "{}")
    if found.get("error_type") != "serialization":
        return found
    values = execute(SETTINGS_SQL, [list(_PARSER_SETTINGS)]).fetchall()
    settings = tuple(sorted((str(name), str(value)) for name, value in values))
    with _apart_lock:
        raw = first_row(_apart(settings).execute(_SERIALIZE, [sql]))
    apart_tree: dict[str, Any] = json.loads(raw[0] if raw else "{}")
    return apart_tree


_apart_lock = threading.Lock()  # one statement at a time on the kept instances


@functools.lru_cache(maxsize=4)
def _apart(settings: tuple[tuple[str, str], ...]) -> duckdb.DuckDBPyConnection:
    """The in-memory instance that parses apart under parser ``settings``: kept, not
    opened per query (an instance costs ~28 ms of CPU: a cheap way to load a server
    through its query endpoint, the round-4 attack found)."""
    config: dict[str, Any] = {"storage_compatibility_version": "latest", "threads": 1}
    config.update(dict(settings))
    return duckdb.connect(":memory:", config=config)


def parse(cursor: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any]:
    """The syntax tree of one SELECT statement (QueryError for anything else)."""
    found = tree(cursor.execute, sql)
    if found.get("error"):
        message = found.get("error_message", "cannot parse")
        if found.get("error_type") == "parser":
            raise ParserError(f"Parser Error: {message}", sql=sql)
    if found.get("error") or len(found["statements"]) != 1:
        raise QueryError(f"an analysis must be one SELECT statement, not {_kinds(sql)}", sql=sql)
    return found


def _kinds(sql: str) -> str:
    """What ``sql`` holds, in words: ``a DELETE statement``, ``3 statements``…"""
    statements = _statements(sql)
    if statements is None:
        return "this"
    if not statements:
        return "an empty string"
    if len(statements) > 1:
        return f"{len(statements)} statements"
    kind = statements[0].type.name
    if kind == "SELECT":  # PRAGMA and friends are rewritten to SELECT by the parser
        kind = (_words(sql) or ["this"])[0].upper() or "this"
    return f"a {kind} statement"


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every object in a syntax tree from ``json_serialize_sql``, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def table_parts(node: dict[str, Any]) -> tuple[str, ...]:
    """The name parts of a BASE_TABLE node: ``(catalog, schema, name)``, as written."""
    qualifiers = (node.get("catalog_name"), node.get("schema_name"))
    return (*(str(part) for part in qualifiers if part), str(node["table_name"]))


class Reads(NamedTuple):
    """The base tables a query reads (views expanded), and whether it may read any."""

    tables: frozenset[Identity]
    any_table: bool  # it reads tables the syntax tree does not name (query(), macros)
    views: frozenset[Identity]  # the views it reads through
    called: frozenset[str] = frozenset()  # the functions it calls (lower case), views' too

    def touches(self, changed: set[Identity] | frozenset[Identity]) -> bool:
        return self.any_table or not self.tables.isdisjoint(changed)


def reads(
    cursor: duckdb.DuckDBPyConnection,
    tree: dict[str, Any],
    macros: frozenset[str] | None = None,
) -> Reads:
    """The tables the query in ``tree`` reads, resolved as DuckDB binds them.

    ``macros``: the lower-case names of the macros the catalog holds, when the caller
    has read them already (else they are asked of ``duckdb_functions()``)."""
    resolver = Resolver(cursor)
    tables: set[Identity] = set()
    views: set[Identity] = set()
    called: set[str] = set()
    dynamic = _reads_into(cursor, resolver, tree, None, tables, views, 0, (macros, called))
    return Reads(frozenset(tables), dynamic, frozenset(views), frozenset(called))


_MAX_VIEW_DEPTH = 32


def _reads_into(
    cursor: duckdb.DuckDBPyConnection,
    resolver: Resolver,
    tree: dict[str, Any],
    near: tuple[str, str] | None,
    tables: set[Identity],
    views: set[Identity],
    depth: int,
    macros: tuple[frozenset[str] | None, set[str]],
) -> bool:
    """``macros``: the catalogue's macros (None: ask it), and the names called so far."""
    if depth > _MAX_VIEW_DEPTH:
        return True  # views nested this deep: do not guess, refresh on every commit
    dynamic = False
    functions: set[str] = set()
    for node in walk(tree):
        if node.get("type") == "BASE_TABLE" and node.get("table_name"):
            # a CTE's name resolves to nothing (or, harmlessly, to a table it shadows)
            found = resolver.lookup(table_parts(node), near=near)
            if found is None:
                continue
            if found.kind is RelationKind.TABLE:
                tables.add(found.identity)
            elif found.identity not in views:
                views.add(found.identity)
                dynamic |= _view_reads(cursor, resolver, found, tables, views, depth, macros)
        elif node.get("type") == "TABLE_FUNCTION" or node.get("class") == "FUNCTION":
            function = node.get("function") or node
            name = str(function.get("function_name", "")).lower()
            if name:
                functions.add(name)
    known, called = macros
    called |= functions
    called_macro = functions & known if known is not None else _macros(cursor, functions)
    if functions & _DYNAMIC_READERS or called_macro:
        dynamic = True
    return dynamic


def _view_reads(
    cursor: duckdb.DuckDBPyConnection,
    resolver: Resolver,
    view: Any,
    tables: set[Identity],
    views: set[Identity],
    depth: int,
    macros: tuple[frozenset[str] | None, set[str]],
) -> bool:
    query = view_query(view.sql or "")
    if query is None:
        return True  # a view whose text we cannot read: assume it reads anything
    try:
        tree = parse(cursor, query)
    except QueryError:
        return True
    near = (view.identity.catalog, view.identity.schema)
    return _reads_into(cursor, resolver, tree, near, tables, views, depth + 1, macros)


def view_query(create: str) -> str | None:
    """The SELECT of a ``CREATE VIEW name [(aliases)] AS <query>;`` as DuckDB stores it."""
    head = re.match(
        r"\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP(?:ORARY)?\s+)?VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?",
        create,
        re.IGNORECASE,
    )
    if head is None:
        return None
    rest = name_end(create, head.end())
    if rest is None:
        return None
    i = rest
    while i < len(create) and create[i].isspace():
        i += 1
    if i < len(create) and create[i] == "(":  # column aliases: quoted or bare names
        end = paren_end(create, i)
        if end is None:
            return None
        i = end
    tail = re.match(r"\s*AS\s+(.*?);?\s*\Z", create[i:], re.IGNORECASE | re.DOTALL)
    return tail.group(1) if tail else None


def _macros(cursor: duckdb.DuckDBPyConnection, functions: set[str]) -> bool:
    """True when any of ``functions`` is a macro (its body may read any table)."""
    if not functions:
        return False
    row = first_row(
        cursor.execute(
            "SELECT count(*) FROM duckdb_functions() "
            "WHERE function_type IN ('macro', 'table_macro') AND lower(function_name) IN "
            "(SELECT unnest(?::VARCHAR[]))",
            [sorted(functions)],
        )
    )
    return bool(row and row[0])
