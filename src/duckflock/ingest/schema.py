"""Table schemas for the write path, cached so bad inserts fail in the caller, cheaply.

An insert names a table and columns; checking them against DuckDB on every call would cost
a query. The cache asks DuckDB once per table and is dropped whenever a statement that may
change the catalog runs through the Database; an unknown column is re-checked against a
fresh schema before it is reported, so DDL from elsewhere cannot cause a false error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import duckdb

from duckflock.core import project
from duckflock.core.names import Identity, Resolver
from duckflock.errors import SchemaMismatchError, translate

_COLUMNS_SQL = (
    "SELECT column_name FROM duckdb_columns() "
    "WHERE database_name = ? AND schema_name = ? AND table_name = ? ORDER BY column_index"
)


@dataclass(frozen=True)
class TableSchema:
    """A table's name as the caller gave it, its catalog identity and its columns."""

    name: str
    identity: Identity
    sql_name: str  # identity.sql, kept: the writer groups rows by it
    columns: tuple[str, ...]
    by_lower: dict[str, str] = field(repr=False)
    # key tuples already checked against this schema -> canonical column names
    checked: dict[tuple[str, ...], tuple[str, ...]] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> Identity:
        """The table's identity: what commit notices, captures and analyses compare."""
        return self.identity

    def resolve(self, names: Iterable[str]) -> tuple[str, ...] | None:
        """The canonical column names for ``names`` or None if any is unknown/repeated."""
        key = tuple(names)
        found = self.checked.get(key)
        if found is not None:
            return found
        canonical = []
        for name in key:
            if not isinstance(name, str):
                return None
            column = self.by_lower.get(name.lower())
            if column is None:
                return None
            canonical.append(column)
        if len(set(canonical)) != len(canonical):
            return None
        found = tuple(canonical)
        self.checked[key] = found
        return found

    def explain_mismatch(self, names: Iterable[str]) -> str:
        """Why ``names`` do not fit this table, in words."""
        key = list(names)
        unknown = [n for n in key if not isinstance(n, str) or n.lower() not in self.by_lower]
        if unknown:
            listed = ", ".join(repr(n) for n in unknown)
            return (
                f"table {self.name!r} has no column {listed}; "
                f"its columns are {', '.join(self.columns)}"
            )
        return f"column named twice in an insert into {self.name!r}: {key}"


class Target:
    """The table of one insert call, resolved once: the schema the call's columns are
    checked against, read again (``refresh``) at most when a column is not found in it
    (DDL from elsewhere may have changed the table since it was cached)."""

    __slots__ = ("_refresh", "schema")

    def __init__(self, schema: TableSchema, refresh: Callable[[], TableSchema]) -> None:
        self.schema = schema
        self._refresh = refresh

    @property
    def name(self) -> str:
        """The table as the caller named it."""
        return self.schema.name

    def columns(self, names: Iterable[str]) -> tuple[str, ...]:
        """The canonical column names for ``names``, or SchemaMismatchError."""
        key = tuple(names)
        found = self.schema.resolve(key)
        if found is None:
            self.schema = self._refresh()  # the table may have changed behind our back
            found = self.schema.resolve(key)
            if found is None:
                unknown = [n for n in key if str(n).lower() not in self.schema.by_lower]
                raise SchemaMismatchError(
                    self.schema.explain_mismatch(key),
                    table=self.schema.name,
                    column=str(unknown[0]) if unknown else None,
                )
        return found


class _Fill:
    """The reading of one table's schema that threads missing it wait for together."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()  # held by the thread reading the table
        self.users = 0  # threads reading or waiting (under SchemaCache._lock)


class SchemaCache:
    """Table name -> :class:`TableSchema`, filled on demand, emptied after DDL."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        # a cursor of the cache's own, so a caller's USE or SET cannot change what a name
        # means; guarded by _query_lock (a DuckDB cursor serves one statement at a time)
        self._cursor = cursor
        self._query_lock = threading.Lock()
        # guards writes to ``tables`` and ``_fills``: filled from any producer thread,
        # emptied after DDL; ``tables`` is read without it (one dict lookup: Intake's
        # hot path)
        self._lock = threading.Lock()
        self.tables: dict[str, TableSchema] = {}
        # one reading of a table missing from the cache at a time: threads that miss it
        # together (fifty producers after a DDL emptied the cache) wait for that reading
        # instead of each reading the catalog in turn; threads missing other tables do
        # not wait for it. An entry lives while a thread reads or waits (bounded by them)
        self._fills: dict[str, _Fill] = {}
        # invalidations so far (under _lock): a reading that one overtook is not stored
        self._generation = 0

    def get(self, table: str) -> TableSchema:
        """``table``'s schema: the cached one, else read once for every thread that
        asks meanwhile."""
        schema = self.tables.get(table)
        if schema is not None:
            return schema
        with self._lock:
            fill = self._fills.get(table)
            if fill is None:
                fill = self._fills[table] = _Fill()
            fill.users += 1
        try:
            with fill.lock:
                schema = self.tables.get(table)  # read by the thread we waited for
                if schema is not None:
                    return schema
                return self.refresh(table)
        finally:
            with self._lock:
                fill.users -= 1
                if not fill.users:
                    del self._fills[table]

    def refresh(self, table: str) -> TableSchema:
        """``table``'s schema read from the catalog now, and cached unless a DDL
        (:meth:`invalidate`) came while it was read."""
        if not isinstance(table, str):
            raise TypeError(f"table must be a str, not {type(table).__name__}")
        generation = self._generation
        schema = self._read(table)
        with self._lock:
            if generation == self._generation:  # else a DDL may have made it stale
                self.tables[table] = schema
        return schema

    def _read(self, table: str) -> TableSchema:
        try:
            with self._query_lock:
                identity = Resolver(self._cursor).table(table)
                rows = self._cursor.execute(_COLUMNS_SQL, list(identity)).fetchall()
        except duckdb.Error as exc:
            raise translate(exc) from exc
        project.check_table(identity)  # never cached: every insert into it is refused
        columns = tuple(str(row[0]) for row in rows)
        return TableSchema(
            name=table,
            identity=identity,
            sql_name=identity.sql,
            columns=columns,
            by_lower={c.lower(): c for c in columns},
        )

    def target(self, table: str, schema: TableSchema | None = None) -> Target:
        """``table`` resolved for one insert call: ``schema`` when the caller just got
        it from :meth:`get`, else the cached one."""
        return Target(schema or self.get(table), lambda: self.refresh(table))

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self.tables.clear()
