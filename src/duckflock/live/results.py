"""Analysis results and how they reach watchers.

A :class:`Result` is immutable: an Arrow table with its version and timing. Every
watcher, subscriber and async iterator reads from a :class:`Mailbox` of its own that
holds only the newest result: a slow reader skips to the newest version instead of
slowing the scheduler or anyone else, and its memory is one result at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import duckdb
import pyarrow as pa

from duckflock.core.checks import seconds
from duckflock.core.wide import python_rows
from duckflock.errors import QueryError
from duckflock.live.changes import Change, Touched, difference, signed

log = logging.getLogger("duckflock")
_LAZY = threading.Lock()  # computes a change not computed at publish, once


class Mode(StrEnum):
    """How an analysis ran (``Result.mode``, ``db.analyses()``, HTTP and the CLI)."""

    INCREMENTAL = "incremental"  # the kept state with the new rows folded in
    FULL = "full"  # the whole query, or the state rebuilt from the whole table
    REFUSED = "refused"  # a kept definition that was not defined again (never runs)


@dataclass(frozen=True)
class Result:
    """One version of an analysis's output. Reading it never runs a query — except
    :meth:`changes` of a version published while nobody followed the analysis's changes
    (one DuckDB comparison with the previous version, once)."""

    name: str
    table: pa.Table
    version: int
    refreshed_at: datetime
    duration: float  # seconds the refresh took
    watermark: int  # writer commits (batches) the result reflects at least
    mode: Mode  # INCREMENTAL or FULL
    error: QueryError | None = None  # set when the last run failed; table is the last good
    reason: str = ""  # why it ran in that mode (full: the first construct or event to blame)
    now: datetime | None = None  # a sliding window's instant: the value now() stood for
    change: Change | None = None  # what changed since the previous version (see changes())
    # the previous version's table, kept only when ``change`` was not computed at publish
    previous: pa.Table | None = field(default=None, repr=False, compare=False)
    touched: Touched | None = field(default=None, repr=False, compare=False)

    def changes(self) -> Change:
        """What changed since the previous version: the rows with ``__diff`` +1 / -1 and
        the version they are relative to (``since``); a snapshot (all +1) for a first
        version, a replaced analysis or changed columns (see :mod:`duckflock.live.changes`)."""
        if self.change is not None:
            return self.change
        if self.previous is None:
            return Change(self.name, 0, self.version, signed(self.table, 1), True, "")
        # published while nobody followed the analysis's changes: computed now, once
        with _LAZY:
            if self.change is None:
                with duckdb.connect() as scratch:
                    table, snapshot = difference(scratch, self.previous, self.table, self.touched)
                change = Change(self.name, self.version - 1, self.version, table, snapshot, "")
                object.__setattr__(self, "change", change)
                object.__setattr__(self, "previous", None)
                object.__setattr__(self, "touched", None)
        assert self.change is not None
        return self.change

    def df(self) -> Any:
        """The table as a pandas DataFrame (needs pandas)."""
        return self.table.to_pandas()

    def pl(self) -> Any:
        """The table as a polars DataFrame (needs polars)."""
        import polars

        return polars.from_arrow(self.table)

    def rows(self) -> list[tuple[Any, ...]]:
        """The table as a list of tuples, each value as DuckDB's Python API gives it
        (``datetime.max`` for TIMESTAMP 'infinity', text for the year 294000)."""
        return python_rows(self.table)

    def __repr__(self) -> str:
        state = f" error={self.error.message!r}" if self.error else ""
        return (
            f"<Result {self.name!r} v{self.version} {self.table.num_rows} rows {self.mode}{state}>"
        )


class Mailbox:
    """One reader's view of an analysis: the newest result, and whether it ended."""

    def __init__(
        self, on_put: Callable[[], object] | None = None, *, follows_changes: bool = False
    ) -> None:
        # whether its reader takes changes: while no mailbox of an analysis does, a
        # refresh computes its change only where that is cheap (see Result.changes)
        self.follows_changes = follows_changes
        # guards _latest and _closed
        self._cond = threading.Condition()
        self._latest: Result | None = None
        self._closed = False
        self._on_put = on_put

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, result: Result) -> None:
        with self._cond:
            if self._closed:
                return
            self._latest = result
            self._cond.notify_all()
        self._signal()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._signal()

    def _signal(self) -> None:
        if self._on_put is not None:
            # the event loop of an async reader may have closed: nobody left to wake
            with contextlib.suppress(RuntimeError):
                self._on_put()

    def newer(self, version: int) -> Result | None:
        """The newest result above ``version``, without waiting."""
        latest = self._latest
        return latest if latest is not None and latest.version > version else None

    def get(self, version: int, timeout: float | None = None) -> Result | None:
        """Wait for a result above ``version``; None when closed (or timed out)."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._closed or self.newer(version) is not None, timeout=timeout
            )
            return self.newer(version)


class Subscription:
    """A callback fed by a thread of its own; ``cancel()`` stops it."""

    def __init__(
        self,
        name: str,
        callback: Callable[[Any], Any],
        mailbox: Mailbox,
        on_cancel: Callable[[Mailbox], None],
        items: Iterator[Any] | None = None,
    ) -> None:
        """``items``: what to call ``callback`` with (default: each newest result in
        ``mailbox``); it must end once ``mailbox`` is closed."""
        self.name = name
        self.errors = 0  # callbacks that raised
        self._callback = callback
        self._mailbox = mailbox
        self._on_cancel = on_cancel
        self._items = items if items is not None else self._results()
        self._thread = threading.Thread(
            target=self._run, name=f"duckflock-subscriber-{name}", daemon=True
        )
        self._thread.start()

    @property
    def active(self) -> bool:
        return self._thread.is_alive()

    def _results(self) -> Iterator[Result]:
        seen = 0
        while (result := self._mailbox.get(seen)) is not None:
            seen = result.version
            yield result

    def _run(self) -> None:
        for item in self._items:
            try:
                self._callback(item)
            except Exception:
                self.errors += 1
                log.exception("subscriber of analysis %r raised; it stays subscribed", self.name)

    def cancel(self, timeout: float | None = 5.0) -> None:
        """Stop delivering results; waits (up to ``timeout`` seconds) for a running
        callback unless called from it."""
        timeout = seconds(timeout, "timeout")
        self._mailbox.close()
        self._on_cancel(self._mailbox)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)


def async_mailbox(follows_changes: bool = False) -> tuple[Mailbox, asyncio.Event]:
    """A mailbox that wakes the running event loop's reader through an asyncio.Event."""
    loop = asyncio.get_running_loop()
    event = asyncio.Event()
    on_put = lambda: loop.call_soon_threadsafe(event.set)  # noqa: E731
    return Mailbox(on_put=on_put, follows_changes=follows_changes), event
