"""Analysis definitions kept in the database itself, so they outlive the process.

``db.analysis(…)`` on a database file writes the definition into
``duckflock.analyses`` (a schema and table of duckflock's own, left out of
``db.tables()``, that no caller's SQL may write: :mod:`duckflock.core.project`), with who
defined it (``library``, ``config``, or the server's role and token number);
``drop_analysis`` deletes it; opening the file defines them all again — on a served
database only after each passed the server's statement guard (``restore_analyses``).
The table is written on a cursor of its own, outside the commit notices: it is
duckflock's bookkeeping, not data any analysis reads.

What the file holds is not trusted: it may have been edited offline. On a served
database a row is only ever defined (and so run) after the same guard as at creation;
one that fails it, cannot be read or no longer binds is kept, listed as refused
(:class:`Ledger`), and never run.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

import duckdb

from duckflock.core.project import ANALYSES, SCHEMA
from duckflock.live.results import Mode
from duckflock.sql import quote_ident

LIBRARY = "library"  # who defined an analysis through the Python API
UNKNOWN = "unknown"  # a row without provenance: older files, or edited offline
_TABLE = f"{quote_ident(SCHEMA)}.{quote_ident(ANALYSES)}"
_CREATE = (
    f"CREATE SCHEMA IF NOT EXISTS {quote_ident(SCHEMA)}",
    f"CREATE TABLE IF NOT EXISTS {_TABLE} ("
    "name VARCHAR PRIMARY KEY, sql VARCHAR NOT NULL, every DOUBLE, "
    "on_change BOOLEAN NOT NULL, min_interval DOUBLE NOT NULL, timeout DOUBLE, "
    "params JSON, defined_at TIMESTAMP DEFAULT current_timestamp, defined_by VARCHAR)",
    # files written before definitions recorded who made them
    f"ALTER TABLE {_TABLE} ADD COLUMN IF NOT EXISTS defined_by VARCHAR",
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
    defined_by: str = LIBRARY

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
        "(name, sql, every, on_change, min_interval, timeout, params, defined_by) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            definition.name,
            definition.sql,
            definition.every,
            definition.on_change,
            definition.min_interval,
            definition.timeout,
            params_json(definition.params),
            definition.defined_by,
        ],
    )


def delete(cursor: duckdb.DuckDBPyConnection, name: str) -> None:
    """Forget the definition of ``name`` (nothing happens if there is none)."""
    if _exists(cursor):
        cursor.execute(f"DELETE FROM {_TABLE} WHERE name = ?", [name])


def load(cursor: duckdb.DuckDBPyConnection) -> list[Definition | Unreadable]:
    """Every kept definition, oldest first; a row that is not one (edited offline:
    a NULL, JSON that does not parse) is an :class:`Unreadable` naming what is wrong."""
    columns = _columns(cursor)
    if not columns:
        return []
    by = "defined_by" if "defined_by" in columns else "NULL"
    rows = cursor.execute(
        "SELECT name, sql, every, on_change, min_interval, timeout, params::VARCHAR, "
        f"{by} FROM {_TABLE} ORDER BY defined_at, name"
    ).fetchall()
    found: list[Definition | Unreadable] = []
    for name, sql, every, on_change, min_interval, timeout, params, defined_by in rows:
        try:
            if not isinstance(name, str) or not isinstance(sql, str):
                raise ValueError("its name or sql is not text")
            found.append(
                Definition(
                    name=name,
                    sql=sql,
                    every=every,
                    on_change=bool(on_change),
                    min_interval=min_interval,
                    timeout=timeout,
                    params=None if params is None else json.loads(params),
                    defined_by=UNKNOWN if defined_by is None else str(defined_by),
                )
            )
        except ValueError as exc:  # json.JSONDecodeError included
            found.append(Unreadable(str(name), str(sql), f"the kept row is not readable: {exc}"))
    return found


@dataclass(frozen=True)
class Unreadable:
    """A kept row that cannot be a definition: never defined, listed as refused."""

    name: str
    sql: str
    reason: str
    defined_by: str = UNKNOWN


def _columns(cursor: duckdb.DuckDBPyConnection) -> set[str]:
    """The columns of the definitions table (empty: there is none)."""
    rows = cursor.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = ? AND table_name = ?",
        [SCHEMA, ANALYSES],
    ).fetchall()
    return {str(row[0]) for row in rows}


def _exists(cursor: duckdb.DuckDBPyConnection) -> bool:
    return bool(_columns(cursor))


class Ledger:
    """Who defined each analysis of this process, and the kept definitions that were
    not defined again (refused by the guard, unreadable, or no longer binding), with why.

    Owner: the Database; any thread calls it; ``_lock`` guards both maps.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by: dict[str, str] = {}
        self._refused: dict[str, tuple[Definition | Unreadable, str]] = {}

    def defined(self, name: str, by: str) -> None:
        with self._lock:
            self._by[name] = by
            self._refused.pop(name, None)  # defined anew: no longer refused

    def refuse(self, kept: Definition | Unreadable, reason: str) -> None:
        with self._lock:
            self._refused[kept.name] = (kept, reason)

    def is_refused(self, name: str) -> bool:
        with self._lock:
            return name in self._refused

    def knows(self, name: str) -> bool:
        """True when ``name`` was defined (or refused) in this process already."""
        with self._lock:
            return name in self._by or name in self._refused

    def forget(self, name: str) -> None:
        with self._lock:
            self._by.pop(name, None)
            self._refused.pop(name, None)

    def annotate(self, statuses: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``statuses`` with ``defined_by`` and ``refused`` (None), then one entry per
        refused definition (``refused``: why; ``mode``: :attr:`Mode.REFUSED`)."""
        with self._lock:
            by = dict(self._by)
            refused = list(self._refused.values())
        out = [{**s, "defined_by": by.get(s["name"], LIBRARY), "refused": None} for s in statuses]
        for kept, reason in refused:
            options = kept.options() if isinstance(kept, Definition) else {}
            out.append(
                {
                    "name": kept.name,
                    "sql": kept.sql,
                    "every": options.get("every"),
                    "on_change": options.get("on_change", False),
                    "min_interval": options.get("min_interval"),
                    "timeout": options.get("timeout"),
                    "tables": [],
                    "version": 0,
                    "last_refresh": None,
                    "duration": None,
                    "rows": None,
                    "error": reason,
                    "mode": Mode.REFUSED,
                    "reason": reason,
                    "incremental": False,
                    "running": False,
                    "lake_snapshot": None,
                    "defined_by": kept.defined_by,
                    "refused": reason,
                }
            )
        return out
