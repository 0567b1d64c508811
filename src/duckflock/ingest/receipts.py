"""Receipt: one insert call on its way through the writer, and how its caller waits.

A receipt is the only object made per call (never one per row): a single row rides on it
as a tuple, anything larger as :class:`~duckflock.ingest.rows.Part` objects. A caller that
waits parks on a lock of its own, which the writer releases once the call's batch is
committed; no woken caller re-acquires a shared lock, so fifty callers wake without
queueing behind one another.
"""

from __future__ import annotations

import logging
import threading
from _thread import allocate_lock
from collections.abc import Callable
from typing import Any

from duckflock.errors import IngestTimeoutError
from duckflock.ingest.rows import Part
from duckflock.ingest.schema import TableSchema

_log = logging.getLogger("duckflock")


class Receipt:
    """The outcome of one ``insert`` call: wait for its commit, or ask whether it is done."""

    __slots__ = (
        "_columns",
        "_committed",
        "_error",
        "_finished",
        "_guard",
        "_nrows",
        "_on_done",
        "_parts",
        "_row",
        "_schema",
        "_waiter",
    )

    def __init__(
        self,
        schema: TableSchema | None,
        *,
        columns: tuple[str, ...] = (),
        row: tuple[Any, ...] | None = None,
        parts: list[Part] | None = None,
        nrows: int = 1,
    ) -> None:
        self._schema = schema  # None: a call without rows, or a flush marker
        self._columns = columns
        self._row = row
        self._parts = parts
        self._nrows = 1 if row is not None else nrows
        self._committed = False
        self._error: BaseException | None = None
        # set by the writer under _guard (the writer's lock); _waiter is released then
        self._finished = False
        self._guard: threading.Lock | None = None
        self._waiter: Any = None
        self._on_done: Callable[[], object] | None = None

    @classmethod
    def empty(cls, schema: TableSchema | None = None) -> Receipt:
        """The receipt of a call with no rows (into ``schema``'s table): done at once."""
        receipt = cls(schema, nrows=0)
        receipt._finished = True
        return receipt

    def park(self) -> None:
        """Prepare to wait: called before the receipt is queued, so no wake-up is lost."""
        waiter = allocate_lock()
        waiter.acquire()
        self._waiter = waiter

    def finish(self) -> None:
        """Mark done and wake the waiting caller; the writer holds ``_guard``."""
        self._finished = True
        waiter = self._waiter
        if waiter is not None:
            waiter.release()
        callback = self._on_done  # set before queueing by Database.insert_async
        if callback is not None:
            try:
                callback()  # quick and non-blocking (loop.call_soon_threadsafe)
            except Exception:
                # the caller's callback fails the caller, never the writer: an event loop
                # that closed while its insert was pending raises RuntimeError here
                _log.warning("an insert's completion callback failed", exc_info=True)

    def parts(self) -> list[Part]:
        """The call's rows as parts (a single row becomes a one-row part)."""
        if self._parts is None:
            assert self._row is not None
            return [Part(self._columns, rows=[self._row])]
        return self._parts

    @property
    def rows(self) -> int:
        """How many rows the call carried."""
        return self._nrows

    @property
    def table(self) -> str:
        """The table the rows go to ("" for a call without rows)."""
        return "" if self._schema is None else self._schema.name

    @property
    def done(self) -> bool:
        """True once the call's rows are committed, or it failed."""
        return self._finished

    @property
    def error(self) -> BaseException | None:
        """The call's error once done (None while pending or when committed)."""
        return self._error if self._finished else None

    def wait(self, timeout: float | None = None) -> int:
        """Block until committed and return the row count; raise the call's error."""
        if not self._finished:
            waiter = self._waiter
            if waiter is None:
                guard = self._guard
                assert guard is not None, "a receipt is waited on only after it is queued"
                with guard:
                    if not self._finished and self._waiter is None:
                        self.park()
                    waiter = self._waiter
            # finished between the first look and the guard: nothing was parked
            if waiter is None:
                assert self._finished
            elif not waiter.acquire(timeout=-1 if timeout is None else timeout):
                if not self._finished:
                    raise IngestTimeoutError(
                        f"{self._nrows} rows for {self.table!r} were accepted but not "
                        f"committed within {timeout} s; they may still commit"
                    )
            else:
                waiter.release()  # let later wait() calls through too
        if self._error is not None:
            raise self._error
        return self._nrows

    def __repr__(self) -> str:
        state = "pending" if not self._finished else ("failed" if self._error else "committed")
        return f"<Receipt {self._nrows} rows into {self.table!r} {state}>"
