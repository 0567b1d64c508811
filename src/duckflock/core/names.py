"""Names from callers, resolved against DuckDB's catalog and quoted in one place.

A table name a caller hands duckflock (``db.insert("events", …)``, an analysis's
``FROM other.events``) is data, never SQL. :func:`duckflock.sql.split_name` splits it
into at most three parts (``catalog.schema.name``; double quotes protect dots and
quotes, ``""`` is a quote); :class:`Resolver` looks the parts up in ``duckdb_tables()``
and ``duckdb_views()`` the way DuckDB's binder would, and returns an :class:`Identity` —
the catalog's own spelling of ``(catalog, schema, name)``. :mod:`duckflock.sql` is the one
place that turns a name into SQL, and the same identity keys the schema cache, the
writer's capture set, commit notices and analyses, so ``main.events`` and
``other.events`` are never confused.

A string that is a table's name as it stands (``a"b``, ``my.table``) is found as such
first; anything that is neither that nor a well-formed qualified name is refused before
it reaches SQL.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

import duckdb

from duckflock.core.cursors import first_row
from duckflock.errors import UnknownTableError
from duckflock.sql import LexError, check_text, display_ident, quote_qualified, split_name


class Identity(NamedTuple):
    """A table or view as DuckDB's catalog names it."""

    catalog: str
    schema: str
    name: str

    @property
    def sql(self) -> str:
        """The fully qualified, quoted name: safe to put into SQL."""
        return quote_qualified(self)

    def display(self, catalog: str | None = None) -> str:
        """A short name that resolves back to this identity (``events``, ``other.events``)."""
        parts = [self.name]
        if self.schema != "main" or (catalog is not None and self.catalog != catalog):
            parts.insert(0, self.schema)
        if catalog is not None and self.catalog != catalog:
            parts.insert(0, self.catalog)
        if len(parts) == 1:
            return self.name
        return ".".join(display_ident(part) for part in parts)


class RelationKind(StrEnum):
    """What a name resolves to (the value is the catalogue query's label)."""

    TABLE = "table"
    VIEW = "view"


class Resolved(NamedTuple):
    """What a name resolved to: its identity, a table or a view, a view's SQL."""

    identity: Identity
    kind: RelationKind
    sql: str | None


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
        row = first_row(self._cursor.execute("SELECT current_database(), current_schema()"))
        assert row is not None
        return str(row[0]), str(row[1])

    def candidates(self, name: str) -> list[Resolved]:
        rows = self._cursor.execute(_CATALOG_SQL, {"name": name}).fetchall()
        return [Resolved(Identity(c, s, n), RelationKind(kind), sql) for c, s, n, kind, sql in rows]

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
        try:
            check_text(text, "a table name")  # a NUL or a lone surrogate: no table has it
        except LexError as exc:
            raise UnknownTableError(text, f"{text!r} is not a valid table name: {exc}") from None
        if not text:
            raise UnknownTableError(text, f"{text!r} is not a valid table name")
        literal = self.lookup((text,))  # a name that is a table's name as it stands
        if literal is not None:
            return literal
        try:
            parts = split_name(text)
        except LexError as exc:
            raise UnknownTableError(text, f"{text!r} is not a valid table name: {exc}") from None
        found = self.lookup(parts)
        if found is None:
            raise UnknownTableError(text, f"table {text!r} does not exist")
        return found

    def table(self, text: str) -> Identity:
        """The base table ``text`` names (a view is refused: it cannot take rows)."""
        resolved = self.resolve(text)
        if resolved.kind is not RelationKind.TABLE:
            raise UnknownTableError(
                text, f"{text!r} is a view, not a table: insert into the table it reads"
            )
        return resolved.identity
