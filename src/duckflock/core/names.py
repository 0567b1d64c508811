"""Names from callers, resolved against DuckDB's catalog and quoted in one place.

A table name a caller hands duckflock (``db.insert("events", …)``, an analysis's
``FROM other.events``) is data, never SQL. :func:`parse` splits it into at most three
parts (``catalog.schema.name``; double quotes protect dots and quotes, ``""`` is a quote);
:class:`Resolver` looks the parts up in ``duckdb_tables()`` and ``duckdb_views()`` the
way DuckDB's binder would, and returns an :class:`Identity` — the catalog's own spelling
of ``(catalog, schema, name)``. :func:`quote` is the one function that turns a name into
SQL, and the same identity keys the schema cache, the writer's capture set, commit
notices and analyses, so ``main.events`` and ``other.events`` are never confused.

A string that is a table's name as it stands (``a"b``, ``my.table``) is found as such
first; anything that is neither that nor a well-formed qualified name is refused before
it reaches SQL.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import duckdb

from duckflock.errors import UnknownTableError


class Identity(NamedTuple):
    """A table or view as DuckDB's catalog names it."""

    catalog: str
    schema: str
    name: str

    @property
    def sql(self) -> str:
        """The fully qualified, quoted name: safe to put into SQL."""
        return f"{quote(self.catalog)}.{quote(self.schema)}.{quote(self.name)}"

    def display(self, catalog: str | None = None) -> str:
        """A short name that resolves back to this identity (``events``, ``other.events``)."""
        parts = [self.name]
        if self.schema != "main" or (catalog is not None and self.catalog != catalog):
            parts.insert(0, self.schema)
        if catalog is not None and self.catalog != catalog:
            parts.insert(0, self.catalog)
        if len(parts) == 1:
            return self.name
        return ".".join(_display_part(part) for part in parts)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False  # a lone surrogate: no table can have it in its name
    return True


class Resolved(NamedTuple):
    """What a name resolved to: its identity, ``"table"`` or ``"view"``, a view's SQL."""

    identity: Identity
    kind: str
    sql: str | None


def quote(name: str) -> str:
    """``name`` as a quoted SQL identifier. Every identifier duckflock writes goes here."""
    if not isinstance(name, str):
        raise TypeError(f"a name must be a str, not {type(name).__name__}")
    if "\x00" in name:
        raise ValueError("a name cannot contain a NUL character")
    return '"' + name.replace('"', '""') + '"'


def _display_part(part: str) -> str:
    return part if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part) else quote(part)


def parse(text: str) -> tuple[str, ...]:
    """Split ``catalog.schema.name`` (1 to 3 parts) into its parts.

    A part is either bare (no dot, no quote, not empty; surrounding spaces dropped) or
    double-quoted, where ``""`` stands for one quote. Raises ValueError for anything else.
    """
    if not isinstance(text, str):
        raise TypeError(f"a table name must be a str, not {type(text).__name__}")
    parts, end = _scan(text, 0, stop=".")
    if end != len(text):
        raise ValueError(f"{text!r} has text after a quoted name")
    return parts


def parse_prefix(text: str, start: int) -> int | None:
    """Where the qualified name that starts ``text[start:]`` ends (as DuckDB renders
    names: bare parts end at white space or a parenthesis), or None."""
    try:
        _, end = _scan(text, start, stop=". \t\n\r(")
    except ValueError:
        return None
    return end


def _scan(text: str, i: int, *, stop: str) -> tuple[tuple[str, ...], int]:
    parts: list[str] = []
    n = len(text)
    while True:
        if i < n and text[i] == '"':
            chars: list[str] = []
            i += 1
            while True:
                end = text.find('"', i)
                if end < 0:
                    raise ValueError(f"{text!r} has an unclosed quote")
                chars.append(text[i:end])
                if end + 1 < n and text[end + 1] == '"':
                    chars.append('"')
                    i = end + 2
                    continue
                i = end + 1
                break
            part = "".join(chars)
        else:
            end = i
            while end < n and text[end] not in stop:
                end += 1
            part = text[i:end].strip()
            if '"' in part:
                raise ValueError(f"{text!r} has a quote inside a bare name")
            i = end
        if not part:
            raise ValueError(f"{text!r} has an empty name part")
        parts.append(part)
        if i == n or text[i] != ".":
            break
        i += 1
    if len(parts) > 3:
        raise ValueError(f"{text!r} has more than three parts (catalog.schema.name)")
    return tuple(parts), i


# tables and views of every attached database (temporary ones belong to one cursor)
_CATALOG_SQL = """
SELECT database_name, schema_name, table_name, 'table', NULL FROM duckdb_tables()
 WHERE NOT internal AND NOT temporary AND lower(table_name) = lower($name)
UNION ALL
SELECT database_name, schema_name, view_name, 'view', sql FROM duckdb_views()
 WHERE NOT internal AND NOT temporary AND lower(view_name) = lower($name)
"""


class Resolver:
    """Resolves names on one cursor, as DuckDB's binder would for that cursor."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self._cursor = cursor

    def defaults(self) -> tuple[str, str]:
        """This cursor's current catalog and schema."""
        row = self._cursor.execute("SELECT current_database(), current_schema()").fetchone()
        assert row is not None
        return str(row[0]), str(row[1])

    def candidates(self, name: str) -> list[Resolved]:
        rows = self._cursor.execute(_CATALOG_SQL, {"name": name}).fetchall()
        return [Resolved(Identity(c, s, n), kind, sql) for c, s, n, kind, sql in rows]

    def lookup(
        self, parts: tuple[str, ...], *, near: tuple[str, str] | None = None
    ) -> Resolved | None:
        """The table or view ``parts`` names, or None.

        Unqualified names are looked up in ``near`` (a view's own catalog and schema,
        where DuckDB binds a view's body) first, then in the current schema, then in
        ``main`` of the current catalog; ``x.name`` is a schema of the current catalog
        first, then a catalog's default schema.
        """
        found = self.candidates(parts[-1])
        if not found:
            return None
        catalog, schema = self.defaults()
        if len(parts) == 3:
            wanted = [(parts[0], parts[1])]
        elif len(parts) == 2:
            wanted = [(catalog, parts[0]), (parts[0], "main")]
            if near is not None:
                wanted.insert(0, (near[0], parts[0]))
        else:
            wanted = [(catalog, schema), (catalog, "main")]
            if near is not None:
                wanted.insert(0, near)
        for want_catalog, want_schema in wanted:
            matches = [
                r
                for r in found
                if r.identity.catalog.lower() == want_catalog.lower()
                and r.identity.schema.lower() == want_schema.lower()
            ]
            if matches:
                exact = [r for r in matches if r.identity.name == parts[-1]]
                return (exact or matches)[0]
        return None

    def resolve(self, text: str) -> Resolved:
        """The table or view a caller's ``text`` names; UnknownTableError otherwise."""
        if not isinstance(text, str):
            raise TypeError(f"a table name must be a str, not {type(text).__name__}")
        if not text or "\x00" in text or not _encodable(text):
            raise UnknownTableError(text, f"{text!r} is not a valid table name")
        literal = self.lookup((text,))  # a name that is a table's name as it stands
        if literal is not None:
            return literal
        try:
            parts = parse(text)
        except ValueError as exc:
            raise UnknownTableError(text, f"{text!r} is not a valid table name: {exc}") from None
        found = self.lookup(parts)
        if found is None:
            raise UnknownTableError(text, f"table {text!r} does not exist")
        return found

    def table(self, text: str) -> Identity:
        """The base table ``text`` names (a view is refused: it cannot take rows)."""
        resolved = self.resolve(text)
        if resolved.kind != "table":
            raise UnknownTableError(
                text, f"{text!r} is a view, not a table: insert into the table it reads"
            )
        return resolved.identity
