"""``Results``: what ``Database.execute`` returns, and what becomes of it when its thread
runs the next statement.

A DuckDB cursor holds one pending result. Every statement of a thread runs on the
thread's cursor (its transaction, temp tables and variables carry over), so before the
next one runs, a result the caller still holds is settled: one not read at all is
*kept* — its rows fetched into an Arrow table it goes on serving — and one read partly
cannot be resumed (DuckDB has already buffered part of it) and raises a ``ValueError``
that says so. A result read to its end, or dropped, costs nothing.

A result read partly and then dropped would leave its transaction open until the thread's
next statement — holding back ``CHECKPOINT`` on an idle thread — so on drop its thread
reads the rest when there is little left.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import duckdb
import pyarrow as pa

from duckflock.core.cursors import Slot
from duckflock.core.lifecycle import Lifecycle
from duckflock.core.wide import python_rows, repair

# what a result offers; anything else (execute, cursor, query, begin…) would run SQL
# past duckflock and is refused
_FETCHING = frozenset(
    {"fetchone", "fetchmany", "fetchall", "fetchdf", "df", "fetch_df", "fetch_df_chunk"}
    | {"arrow", "fetch_arrow_table", "to_arrow_table", "pl", "fetchnumpy", "torch", "tf"}
    | {"to_arrow_reader", "fetch_record_batch"}
)
_ATTRIBUTES = frozenset({"description", "rowcount"})
# methods that read the result to its end, and those that hand it to an Arrow reader
_DRAINING = (
    _FETCHING
    - {"fetchone", "fetchmany", "fetch_df_chunk"}
    - {
        "to_arrow_reader",
        "fetch_record_batch",
    }
)
_HANDING_OFF = frozenset({"to_arrow_reader", "fetch_record_batch"})
_DRAIN_ON_DROP = 2048  # rows a dropped, partly read result may still have to be finished


class Results:
    """What ``execute`` returns: the statement's result on this thread's cursor.

    DuckDB's result methods work as usual (``fetchall``, ``fetchone``, ``fetchmany``,
    ``df``, ``arrow``, ``pl``, ``fetchnumpy``, ``to_arrow_reader``, ``description``…);
    calls count as running statements, so ``close()`` waits for them, and after close
    they raise :class:`ClosedError` like everything else. Methods that run SQL are not
    offered: run statements with the Database.
    """

    __slots__ = (
        "__weakref__",
        "_cursor",
        "_description",
        "_drained",
        "_kept",
        "_life",
        "_reader",
        "_slot",
        "_spare",
        "_sql",
        "_stale",
        "_touched",
    )

    def __init__(
        self,
        life: Lifecycle,
        slot: Slot,
        cursor: duckdb.DuckDBPyConnection,
        sql: str,
        *,
        spare: bool = False,
    ) -> None:
        self._life = life  # the Database's: its closing, and what fetches count as
        self._slot = slot
        self._cursor = cursor
        self._sql = sql
        self._spare = spare  # a cursor of its own (an Arrow reader held the thread's)
        self._drained = False
        self._touched = False
        self._stale = False
        self._kept: _Kept | None = None
        self._reader: object | None = None
        self._description: Any = None
        if not spare:
            slot.statements += 1
            slot.current = weakref.ref(self)

    # -- the thread's next statement ------------------------------------------------

    @property
    def pending(self) -> bool:
        """True while this result still needs the cursor (not read to its end)."""
        return not (self._drained or self._stale or self._kept is not None)

    def settle(self) -> None:
        """The thread runs another statement: keep this result's rows if it was not read
        at all, else it can no longer be read."""
        if not self.pending:
            return
        if self._touched:
            self._stale = True
            return
        self._description = self._cursor.description
        table = None
        if self._description is not None:  # UHUGEINT, BIGNUM: see wide.py
            types = [column[1] for column in self._description]
            table = repair(self._cursor.to_arrow_table(), types)
        self._kept = _Kept(table)

    def __del__(self) -> None:
        if self._spare:
            if self._reader is not None:
                self._slot.release_with(self._cursor, self._reader)
            else:
                self._slot.retire(self._slot, self._cursor)
            return
        slot = self._slot
        if (
            self._touched
            and self.pending
            and self._reader is None  # (pending: no later statement settled it)
            and slot.owner == threading.get_ident()
            and not self._life.closed
        ):
            # finish a result read partly, when little is left: its transaction ends
            try:
                self._cursor.fetchmany(_DRAIN_ON_DROP)
            except Exception:  # only housekeeping: never fail a destructor
                return

    # -- reading --------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        if name not in _FETCHING and name not in _ATTRIBUTES:
            raise AttributeError(
                f"a result has no {name!r}: it offers {', '.join(sorted(_FETCHING))} and "
                f"{', '.join(sorted(_ATTRIBUTES))}; run statements with the Database"
            )
        if self._stale:
            raise ValueError(
                f"the result of {self._sql[:60]!r} was read in part, then this thread ran "
                "another statement on its cursor: read a result to its end first (or "
                "fetch it whole with fetchall/arrow/df) before the next statement"
            )
        if self._kept is not None:
            return self._kept.attribute(name, self._description)
        attribute = getattr(self._cursor, name)
        if not callable(attribute):
            return attribute
        life, sql = self._life, self._sql

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._kept is not None or self._stale:  # settled since it was looked up
                return getattr(self, name)(*args, **kwargs)
            life.enter()
            try:
                self._touched = True
                value = attribute(*args, **kwargs)
            except duckdb.Error as exc:
                raise life.fail(exc, sql) from exc
            finally:
                life.leave()
            if name in _DRAINING or (name in ("fetchone", "fetchmany") and not value):
                self._drained = True
            elif name in _HANDING_OFF:
                self._reader = value
                if not self._spare:  # the thread's cursor is the reader's until it goes
                    self._slot.reader = weakref.ref(value)
            return value

        return call

    def __repr__(self) -> str:
        return f"<duckflock.Results of {self._sql[:60]!r}>"


class _Kept:
    """A result's rows, fetched before its thread ran another statement."""

    def __init__(self, table: pa.Table | None) -> None:
        self.table = table
        self.position = 0

    def attribute(self, name: str, description: Any) -> Any:
        if name == "description":
            return description
        if name == "rowcount":
            return -1
        if self.table is None:
            raise ValueError("the statement returned no result set")
        return getattr(self, "_" + name, None) or self._whole(name)

    def _rest(self) -> pa.Table:
        assert self.table is not None
        rest = self.table.slice(self.position)
        self.position = self.table.num_rows
        return rest

    def _fetchone(self) -> tuple[Any, ...] | None:
        rows = self._fetchmany(1)
        return rows[0] if rows else None

    def _fetchmany(self, size: int = 1) -> list[tuple[Any, ...]]:
        assert self.table is not None
        part = self.table.slice(self.position, size)
        self.position += part.num_rows
        return _tuples(part)

    def _fetchall(self) -> list[tuple[Any, ...]]:
        return _tuples(self._rest())

    def _whole(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            rest = self._rest()
            if name in ("arrow", "fetch_arrow_table", "to_arrow_table"):
                return rest
            if name in ("df", "fetchdf", "fetch_df", "fetch_df_chunk"):
                return rest.to_pandas()
            if name == "pl":
                import polars

                return polars.from_arrow(rest)
            if name == "fetchnumpy":
                return {column: rest[column].to_numpy() for column in rest.column_names}
            if name in ("to_arrow_reader", "fetch_record_batch"):
                return pa.RecordBatchReader.from_batches(rest.schema, rest.to_batches())
            raise ValueError(f"{name}() is not available on a result kept by duckflock")

        return call


def _tuples(table: pa.Table) -> list[tuple[Any, ...]]:
    return python_rows(table)
