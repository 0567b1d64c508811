"""DuckDB's function catalogue, as the planner reads it: which functions give the same
answer every time (a key, a filter or an argument may call them), which are aggregates,
and whether an expression is row-local (computed from one row alone)."""

from __future__ import annotations

import threading
from collections.abc import Callable
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
    scalar: DuckDB refuses it when it binds); which are macros (their bodies may read
    any table) and which are the database's own (not built in).

    One scan of ``duckdb_functions()`` (~17 ms of CPU: it lists every overload of every
    built-in) answers all of a definition's questions: read it once, after the query
    bound (binding may autoload an extension), and hand it down."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        rows = cursor.execute(
            "SELECT lower(function_name), "
            "bool_and(coalesce(stability = 'CONSISTENT', false)), "
            "bool_or(function_type = 'aggregate'), "
            "bool_or(function_type IN ('macro', 'table_macro')), "
            "bool_or(NOT internal) FROM duckdb_functions() GROUP BY 1"
        ).fetchall()
        self._table: dict[str, tuple[bool, bool]] = {
            str(name): (bool(repeatable), bool(aggregate))
            for name, repeatable, aggregate, _, _ in rows
        }
        # the lower-case names of macros, and of the functions that are not built in
        self.macros = frozenset(str(row[0]) for row in rows if row[3])
        self.own = frozenset(str(row[0]) for row in rows if row[4])
        self.absent: frozenset[str] = frozenset()  # names called that this reading lacked
        for name in MISLABELLED:  # the catalogue calls them CONSISTENT; they are not
            self._table[name] = (False, self._table.get(name, (False, False))[1])

    def lists(self, names: frozenset[str]) -> bool:
        """Whether this reading knows every one of ``names`` (lower case), or found it
        absent when it was made."""
        return all(name in self._table or name in self.absent for name in names)

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


_LOADED = "SELECT extension_name FROM duckdb_extensions() WHERE loaded ORDER BY 1"
# what stands for the loaded extensions where external access is off (a served
# database): duckdb_extensions() cannot list the extension directory then, and no
# extension can be loaded either ("Loading external extensions is disabled"), nor can
# access be turned back on while the database runs: the set stays as it is
_FIXED = ("(external access off: no extension can be loaded)",)


def _loaded(cursor: duckdb.DuckDBPyConnection) -> tuple[str, ...]:
    try:
        return tuple(str(name) for (name,) in cursor.execute(_LOADED).fetchall())
    except duckdb.PermissionException:
        return _FIXED


class Catalogue:
    """The function catalogue as one database's analyses last read it, kept between
    definitions: its scan is most of a definition's CPU.

    Owner: the scheduler's :class:`~duckflock.live.notices.Notices`, which calls
    :meth:`changed` whenever analyses plan again — DDL that changed a table, view or
    macro, ATTACH, LOAD, a result setting, the lake moved, the database reopened — so
    what makes a plan stale drops this too. A defining thread calls :meth:`functions`.
    The reading is made again, besides, where the loaded extensions differ (an
    autoloaded one may add overloads to a name it lists), and where a query calls a
    name it does not list: the query bound, so the name is in the catalogue now (a
    Python UDF or a macro made on a raw cursor, which duckflock does not see).
    """

    def __init__(self, raw_handed_out: Callable[[], bool] = lambda: False) -> None:
        self._lock = threading.Lock()  # guards _epoch and _kept
        self._epoch = 0  # how often the catalogue may have changed
        self._kept: tuple[int, tuple[str, ...], Functions] | None = None
        # asked of the Database's CursorPool, which owns the answer: once a raw cursor
        # was handed out, DDL may run where no notice sees it (a macro made there under
        # a name the kept reading lists, shadowing a built-in or replacing a macro,
        # changes what the name means), so every definition reads the catalogue again
        self._raw_handed_out = raw_handed_out

    def changed(self) -> None:
        """The catalogue may have changed: the next definition reads it again."""
        with self._lock:
            self._epoch += 1
            self._kept = None

    def functions(
        self, cursor: duckdb.DuckDBPyConnection, called: frozenset[str] = frozenset()
    ) -> Functions:
        """The catalogue as read on ``cursor``: the kept reading while it is current
        and lists ``called`` (the lower-case names a query calls), else a new one."""
        loaded = _loaded(cursor)
        with self._lock:
            epoch, kept = self._epoch, None if self._raw_handed_out() else self._kept
        if kept is not None and kept[:2] == (epoch, loaded) and kept[2].lists(called):
            return kept[2]
        fresh = Functions(cursor)
        fresh.absent = frozenset(name for name in called if not fresh.lists(frozenset([name])))
        with self._lock:
            if self._epoch == epoch:  # (else it changed meanwhile: not kept)
                self._kept = (epoch, loaded, fresh)
        return fresh
