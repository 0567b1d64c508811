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

from .errors import SchemaMismatchError, UnknownTableError, translate


@dataclass(frozen=True)
class TableSchema:
    """A table's name as the caller gave it, its quoted SQL name and its columns."""

    name: str
    sql_name: str
    columns: tuple[str, ...]
    by_lower: dict[str, str] = field(repr=False)
    # key tuples already checked against this schema -> canonical column names
    checked: dict[tuple[str, ...], tuple[str, ...]] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> str:
        """The name analyses compare with: see :func:`table_key`."""
        return table_key(self.name)

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


def table_key(name: str) -> str:
    """A table name as analyses and the writer compare them: lower case, last part."""
    return name.replace('"', "").split(".")[-1].lower()


def quote_table(name: str) -> str:
    """``schema.table`` -> ``"schema"."table"``; a name already quoted is kept as is."""
    if '"' in name:
        return name
    return ".".join('"' + part + '"' for part in name.split("."))


class SchemaCache:
    """Table name -> :class:`TableSchema`, filled on demand, emptied after DDL."""

    def __init__(self, cursor: Callable[[], duckdb.DuckDBPyConnection]) -> None:
        self._cursor = cursor
        # guards _tables: filled from any producer thread, emptied after DDL
        self._lock = threading.Lock()
        self._tables: dict[str, TableSchema] = {}

    def get(self, table: str) -> TableSchema:
        schema = self._tables.get(table)
        if schema is not None:
            return schema
        return self.refresh(table)

    def refresh(self, table: str) -> TableSchema:
        if not isinstance(table, str):
            raise TypeError(f"table must be a str, not {type(table).__name__}")
        sql_name = quote_table(table)
        sql = f"SELECT * FROM {sql_name} LIMIT 0"
        try:
            description = self._cursor().execute(sql).description or []
        except duckdb.CatalogException as exc:
            raise UnknownTableError(table, f"table {table!r} does not exist") from exc
        except duckdb.ParserException as exc:
            raise UnknownTableError(table, f"{table!r} is not a valid table name") from exc
        except duckdb.Error as exc:
            raise translate(exc, sql=sql) from exc
        columns = tuple(str(item[0]) for item in description)
        schema = TableSchema(
            name=table,
            sql_name=sql_name,
            columns=columns,
            by_lower={c.lower(): c for c in columns},
        )
        with self._lock:
            self._tables[table] = schema
        return schema

    def resolve(self, table: str, names: Iterable[str]) -> tuple[TableSchema, tuple[str, ...]]:
        """The schema and canonical columns for an insert, or SchemaMismatchError."""
        schema = self.get(table)
        key = tuple(names)
        found = schema.resolve(key)
        if found is None:
            schema = self.refresh(table)  # the table may have changed behind our back
            found = schema.resolve(key)
            if found is None:
                unknown = [n for n in key if str(n).lower() not in schema.by_lower]
                raise SchemaMismatchError(
                    schema.explain_mismatch(key),
                    table=table,
                    column=str(unknown[0]) if unknown else None,
                )
        return schema, found

    def invalidate(self) -> None:
        with self._lock:
            self._tables.clear()
