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
from duckflock.ingest.schema import SchemaCache


class Intake:
    """Checks insert calls against the tables' schemas; any producer thread calls it.

    The schema cache reads on a cursor of its own (no caller's USE or SET changes what
    a name means) and is emptied by :meth:`invalidate` after anything that may change
    the catalog."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self._schemas = SchemaCache(cursor)

    def invalidate(self) -> None:
        """Tables may have changed: read their schemas again on next use."""
        self._schemas.invalidate()

    def call(self, table: str, data: Any, columns: Sequence[str] | None) -> Call:
        """``data`` checked against ``table`` (in the caller) and wrapped for the writer;
        a call without rows comes back finished."""
        if not isinstance(table, str):
            raise TypeError(f"table must be a str, not {type(table).__name__}")
        schema = self._schemas.get(table)
        if type(data) is dict and columns is None:
            # the hot path, one dict row: one dict lookup when the keys were seen before
            names = schema.checked.get(tuple(data))
            if names is not None:
                return Call.single(schema, names, tuple(data.values()))
        elif type(data) is tuple and not isinstance(columns, str):
            # the hot path, one tuple row: the column list is resolved once per schema,
            # then found again by one dict lookup (as for dict rows above)
            if columns is None:
                resolved: tuple[str, ...] | None = schema.columns
            else:
                columns = columns if type(columns) is tuple else tuple(columns)
                resolved = schema.checked.get(columns)
            if resolved is not None and len(resolved) == len(data):
                return Call.single(schema, resolved, data)
            # columns not seen yet, or a row of the wrong width: the general path
        target = self._schemas.target(table, schema)
        parts, nrows = to_parts(target, data, columns)
        if nrows == 0:
            return Call.empty(target.schema)
        return Call(target.schema, parts=parts, nrows=nrows)
