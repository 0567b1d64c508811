"""Analysis definitions kept in the database itself, so they outlive the process.

``db.analysis(…)`` on a database file writes the definition into
``duckflock.analyses`` (a schema and table of duckflock's own, left out of
``db.tables()``); ``drop_analysis`` deletes it; opening the file defines them all again.
The table is written on a cursor of its own, outside the commit notices: it is
duckflock's bookkeeping, not data any analysis reads.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import duckdb

SCHEMA = "duckflock"
_TABLE = f'"{SCHEMA}"."analyses"'
_CREATE = (
    f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"',
    f"CREATE TABLE IF NOT EXISTS {_TABLE} ("
    "name VARCHAR PRIMARY KEY, sql VARCHAR NOT NULL, every DOUBLE, "
    "on_change BOOLEAN NOT NULL, min_interval DOUBLE NOT NULL, timeout DOUBLE, "
    "params JSON, defined_at TIMESTAMP DEFAULT current_timestamp)",
)

log = logging.getLogger("duckflock")


@dataclass(frozen=True)
class Definition:
    """One analysis as ``db.analysis`` was called."""

    name: str
    sql: str
    every: float | None
    on_change: bool
    min_interval: float
    timeout: float | None
    params: Any

    def options(self) -> dict[str, Any]:
        return {
            "every": self.every,
            "on_change": self.on_change,
            "min_interval": self.min_interval,
            "timeout": self.timeout,
            "params": self.params,
        }


def params_json(params: Any) -> str | None:
    """``params`` as JSON, or ValueError saying how to define the analysis anyway."""
    if params is None:
        return None
    try:
        return json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"the analysis's params cannot be kept in the database ({exc}); pass JSON "
            "values (numbers, strings, booleans, None, lists, dicts), or persist=False"
        ) from None


def save(cursor: duckdb.DuckDBPyConnection, definition: Definition) -> None:
    """Write (or replace) ``definition``."""
    for statement in _CREATE:
        cursor.execute(statement)
    cursor.execute(
        f"INSERT OR REPLACE INTO {_TABLE} "
        "(name, sql, every, on_change, min_interval, timeout, params) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            definition.name,
            definition.sql,
            definition.every,
            definition.on_change,
            definition.min_interval,
            definition.timeout,
            params_json(definition.params),
        ],
    )


def delete(cursor: duckdb.DuckDBPyConnection, name: str) -> None:
    """Forget the definition of ``name`` (nothing happens if there is none)."""
    if _exists(cursor):
        cursor.execute(f"DELETE FROM {_TABLE} WHERE name = ?", [name])


def load(cursor: duckdb.DuckDBPyConnection) -> list[Definition]:
    """Every kept definition, oldest first."""
    if not _exists(cursor):
        return []
    rows = cursor.execute(
        f"SELECT name, sql, every, on_change, min_interval, timeout, params FROM {_TABLE} "
        "ORDER BY defined_at, name"
    ).fetchall()
    return [
        Definition(
            name=name,
            sql=sql,
            every=every,
            on_change=bool(on_change),
            min_interval=min_interval,
            timeout=timeout,
            params=None if params is None else json.loads(params),
        )
        for name, sql, every, on_change, min_interval, timeout, params in rows
    ]


def _exists(cursor: duckdb.DuckDBPyConnection) -> bool:
    row = cursor.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = ? AND table_name = 'analyses'",
        [SCHEMA],
    ).fetchone()
    return bool(row and row[0])
