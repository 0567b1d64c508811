"""DuckDB's function catalogue, as the planner reads it: which functions give the same
answer every time (a key, a filter or an argument may call them), which are aggregates,
and whether an expression is row-local (computed from one row alone)."""

from __future__ import annotations

from typing import Any

import duckdb

from duckflock.core.syntax import walk
from duckflock.live.fold.states import NotIncremental

# expression classes computed from one row alone (given repeatable functions)
ROW_LOCAL_CLASSES = {
    "COLUMN_REF",
    "CONSTANT",
    "FUNCTION",
    "OPERATOR",
    "CAST",
    "CASE",
    "COMPARISON",
    "CONJUNCTION",
    "BETWEEN",
}

# CONSISTENT in duckdb_functions() yet not the same answer every time: the local clock
# (WHERE ts > current_localtimestamp() - INTERVAL 1 HOUR folded rows in and never let
# them go), and session state that SET changes
MISLABELLED = ("current_localtimestamp", "current_localtime", "getvariable", "current_setting")


class Functions:
    """Every function name DuckDB knows: whether all its overloads are repeatable, and
    whether any is an aggregate (a name DuckDB does not list counts as a repeatable
    scalar: DuckDB refuses it when it binds)."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self._table: dict[str, tuple[bool, bool]] = {
            str(name): (bool(repeatable), bool(aggregate))
            for name, repeatable, aggregate in cursor.execute(
                "SELECT lower(function_name), "
                "bool_and(coalesce(stability = 'CONSISTENT', false)), "
                "bool_or(function_type = 'aggregate') FROM duckdb_functions() GROUP BY 1"
            ).fetchall()
        }
        for name in MISLABELLED:  # the catalogue calls them CONSISTENT; they are not
            self._table[name] = (False, self._table.get(name, (False, False))[1])

    def repeatable(self, name: str) -> bool:
        """Whether the function ``name`` (lower case) gives the same answer every time."""
        return self._table.get(name, (True, False))[0]

    def is_aggregate(self, name: str) -> bool:
        """Whether the function ``name`` (lower case) is an aggregate."""
        return self._table.get(name, (True, False))[1]

    def volatile(self) -> set[str]:
        """The lower-case names of the functions that are not repeatable."""
        return {name for name, (repeatable, _) in self._table.items() if not repeatable}

    def check_row_local(self, expr: dict[str, Any], where: str, names: frozenset[str]) -> None:
        """Raise NotIncremental, naming ``where`` in the query, unless ``expr`` is
        computed from one row alone: columns among ``names`` (lower case), constants and
        repeatable scalar functions."""
        for sub in walk(expr):
            cls = sub.get("class")
            if cls is None:
                continue
            if cls not in ROW_LOCAL_CLASSES:
                raise NotIncremental(f"{where} uses {cls.lower()}")
            if cls == "FUNCTION":
                name = sub.get("function_name", "").lower()
                if not self.repeatable(name):
                    raise NotIncremental(f"{where} calls {name}(), which is not repeatable")
                if self.is_aggregate(name):
                    raise NotIncremental(f"{where} contains an aggregate")
            if cls == "COLUMN_REF":
                parts = [str(part).lower() for part in sub.get("column_names", [""])]
                if parts[-1] == "rowid":
                    raise NotIncremental(f"{where} reads rowid")
                if not any(part in names for part in parts):
                    # current_timestamp, current_date… parse as column names
                    raise NotIncremental(
                        f"{where} reads {'.'.join(parts)}, which is not a column "
                        "(a special value such as current_timestamp is not repeatable)"
                    )
