"""``Results``: what ``Database.execute`` returns, and the cursor lease it holds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import duckdb

from .cursors import Slot

if TYPE_CHECKING:
    from .database import Database

# Results methods that read the result to its end (the cursor can take the next
# statement afterwards), and those that hand the pending result to an Arrow reader
_DRAINING = frozenset(
    {"fetchall", "fetchdf", "df", "fetch_df", "arrow", "fetch_arrow_table", "to_arrow_table"}
    | {"pl", "fetchnumpy", "torch", "tf"}
)
_HANDING_OFF = frozenset({"to_arrow_reader", "fetch_record_batch"})


class Results:
    """What ``execute`` returns: a DuckDB cursor of this thread, holding the statement's
    result for as long as this object lives (see :mod:`duckflock.cursors`).

    Every DuckDB method works as usual (``fetchall``, ``fetchone``, ``df``, ``arrow``,
    ``pl``, ``description``…); calls count as running statements, so ``close()`` waits
    for them, and after close they raise :class:`ClosedError` like everything else.
    """

    __slots__ = ("_cursor", "_db", "_drained", "_reader", "_slot", "_sql")

    def __init__(
        self, db: Database, slot: Slot, cursor: duckdb.DuckDBPyConnection, sql: str
    ) -> None:
        self._db = db
        self._slot = slot
        self._cursor = cursor
        self._sql = sql
        self._drained = False
        self._reader: object | None = None

    def __del__(self) -> None:
        if self._reader is not None:
            self._slot.release_with(self._cursor, self._reader)
        else:
            self._slot.release(self._cursor, drained=self._drained)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._cursor, name)
        if not callable(attribute):
            return attribute
        db, sql = self._db, self._sql

        def call(*args: Any, **kwargs: Any) -> Any:
            db._enter()
            try:
                value = attribute(*args, **kwargs)
            except duckdb.Error as exc:
                raise db._fail(exc, sql) from exc
            finally:
                db._leave()
            if name in _DRAINING or (name in ("fetchone", "fetchmany") and not value):
                self._drained = True
            elif name in _HANDING_OFF:
                self._reader = value
            return value

        return call

    def __repr__(self) -> str:
        return f"<duckflock.Results of {self._sql[:60]!r}>"
