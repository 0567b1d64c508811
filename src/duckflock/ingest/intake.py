"""Where an insert call enters the write path: its table resolved once, its rows checked
in the caller's thread and wrapped in one :class:`~duckflock.ingest.receipts.Call`.

The table's name is looked up in the :class:`~duckflock.ingest.schema.SchemaCache`
once per call; what goes down from here (to :mod:`duckflock.ingest.rows`, then to the
writer and :mod:`duckflock.ingest.appends`) is the resolved
:class:`~duckflock.ingest.schema.TableSchema`, never the name again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

from duckflock.ingest.receipts import Call
from duckflock.ingest.rows import to_parts
from duckflock.ingest.schema import SchemaCache, TableSchema


class Intake:
    """Checks insert calls against the tables' schemas; any producer thread calls it.

    The schema cache reads on a cursor of its own (no caller's USE or SET changes what
    a name means) and is emptied by :meth:`invalidate` after anything that may change
    the catalog."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self._schemas = SchemaCache(cursor)
        self._tables = self._schemas.tables  # emptied in place, never replaced

    def invalidate(self) -> None:
        """Tables may have changed: read their schemas again on next use."""
        self._schemas.invalidate()

    def single(
        self, table: str, data: Any, columns: Sequence[str] | None
    ) -> tuple[TableSchema, tuple[str, ...], tuple[Any, ...]] | None:
        """``data`` as one row for ``table`` when it takes the hot path (a dict whose
        keys, or a tuple whose columns and width, were seen before): the schema, the
        row's canonical columns and the row; else None."""
        if not isinstance(table, str):
            raise TypeError(f"table must be a str, not {type(table).__name__}")
        schema = self._tables.get(table) or self._schemas.get(table)
        kind = type(data)
        if kind is tuple and columns is None:
            resolved: tuple[str, ...] | None = schema.columns
        elif kind is dict and columns is None:
            # one dict lookup when the keys were seen before
            names = schema.checked.get(tuple(data))
            return None if names is None else (schema, names, tuple(data.values()))
        elif kind is tuple and not isinstance(columns, str):
            # the column list is resolved once per schema, then found again by one dict
            # lookup (as for dict rows above)
            columns = columns if type(columns) is tuple else tuple(columns or ())
            resolved = schema.checked.get(columns)
        else:
            return None
        if resolved is not None and len(resolved) == len(data):
            return schema, resolved, data
        # columns not seen yet, or a row of the wrong width: the general path
        return None

    def call(self, table: str, data: Any, columns: Sequence[str] | None) -> Call:
        """``data`` checked against ``table`` (in the caller) and wrapped for the writer;
        a call without rows comes back finished."""
        single = self.single(table, data, columns)
        if single is not None:
            return Call.single(*single)
        target = self._schemas.target(table)
        parts, nrows = to_parts(target, data, columns)
        if nrows == 0:
            return Call.empty(target.schema)
        return Call(target.schema, parts=parts, nrows=nrows)
