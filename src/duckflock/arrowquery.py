"""DuckDB queries over Arrow tables that the refresh keeps in Python (no copy into DuckDB)."""

from __future__ import annotations

import duckdb
import pyarrow as pa


def over_arrow(
    cursor: duckdb.DuckDBPyConnection,
    sql: str,
    __duckflock_state: pa.Table,
    __duckflock_delta: pa.Table | None = None,
    __duckflock_keys: pa.Table | None = None,
) -> pa.Table:
    """Run ``sql`` over the state, delta and (retention's) keys Arrow tables.

    DuckDB finds them by their names among this frame's locals (its Python replacement
    scan): 0.6 ms cheaper per query than register + unregister, which matters when the
    whole refresh takes a few milliseconds. If replacement scans are switched off in the
    database's config, registering them is the fallback.
    """
    try:
        return cursor.execute(sql).to_arrow_table()
    except duckdb.CatalogException:
        tables = {
            "__duckflock_state": __duckflock_state,
            "__duckflock_delta": __duckflock_delta,
            "__duckflock_keys": __duckflock_keys,
        }
        present = {name: table for name, table in tables.items() if table is not None}
        for name, table in present.items():
            cursor.register(name, table)
        try:
            return cursor.execute(sql).to_arrow_table()
        finally:
            for name in present:
                cursor.unregister(name)
