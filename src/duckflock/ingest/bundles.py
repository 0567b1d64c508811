"""Single rows inserted without waiting (``db.insert(row, wait=False)``), buffered into
one :class:`Bundle` the writer commits as one call.

One :class:`~duckflock.ingest.receipts.Call` per row cost its producer ~3 µs and the
writer a pass per call (gathering, planning, waking). Here the row is appended to the
open bundle (a list of row tuples for one table and column list) under one lock, and its
caller gets a :class:`RowReceipt` pointing at its place in the bundle. What each row
keeps from being a call of its own:

- **All-or-nothing, and its own error.** When a batch holding a bundle fails, the
  committer :func:`split`\\ s the bundle into one call per row before bisecting, so a bad
  row fails alone with the :class:`~duckflock.errors.RowRejectedError` (``row_index``
  0, the row) its own call would have got, and the other rows commit.
- **Order.** One bundle is open at a time, and it is in the writer's inbox from its
  first row on. Any other call the writer queues closes it to new rows
  (:meth:`duckflock.ingest.writer.Writer.submit`), and a row for another table or
  column list opens a new one: a thread's rows reach the writer in the order it
  inserted them, across tables and calls too.
- **Bounded memory.** Rows in bundles the writer has not taken (``pending``) count in
  the writer's queued rows; the buffer asks the writer for room once per
  :data:`ROOM_CHECK_ROWS` rows, never for more than is left, so buffered rows alone
  stop exactly at ``max_queued_rows`` (calls queued meanwhile may pass it by at most
  that many). A row that finds the queue full is not buffered: it is queued as a call
  of its own, which blocks for room (QueueFullError after its timeout).
- **close() flushes.** The open bundle is in the inbox ahead of the close sentinel, and
  a bundle the writer has taken is closed to new rows, so every accepted row commits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from duckflock.core.checks import seconds
from duckflock.errors import IngestError, IngestTimeoutError, QueueFullError
from duckflock.ingest.receipts import Call, Receipt
from duckflock.ingest.rows import Part
from duckflock.ingest.schema import TableSchema

# Rows buffered between two looks at the writer's queue: the bound may be passed by at
# most this many rows (asking for every row cost a tenth of the row's time).
ROOM_CHECK_ROWS = 256
_new = object.__new__


class Bundle(Call):
    """Single-row inserts to one table and column list, committed as one call.

    Owner: the :class:`RowBuffer` appends to ``rows`` under its lock while the bundle is
    its ``open`` one; the writer thread then seals it (:meth:`seal`) and owns it as any
    call. ``pieces`` (one call per row) exists once the committer has split it.
    """

    __slots__ = ("_buffer", "_whole", "pieces", "rows")
    bundled = True

    def __init__(
        self, target: TableSchema, columns: tuple[str, ...], row: tuple[Any, ...], buffer: RowBuffer
    ) -> None:
        rows = [row]
        super().__init__(target, columns=columns, parts=[Part(columns, rows=rows)], nrows=1)
        self.rows = rows  # the part's list: appended to until sealed
        self._buffer = buffer
        self.pieces: list[Call] | None = None

    def seal(self) -> int:
        """Close the bundle to new rows (the writer took it); its row count."""
        return self._buffer.seal(self)

    @property
    def committed(self) -> bool:
        """Committed whole, or (once split) at least one row committed: the table
        changed. Each row's own outcome is its piece's."""
        if self._whole:
            return True
        pieces = self.pieces
        return pieces is not None and any(piece.committed for piece in pieces)

    @committed.setter
    def committed(self, value: bool) -> None:
        self._whole = value

    def outcome(self, index: int) -> BaseException | None:
        """Row ``index``'s error once the bundle is finished (None: committed)."""
        pieces = self.pieces
        if pieces is None:
            return self.failure
        piece = pieces[index]
        if piece.committed:
            return None
        return (
            piece.failure
            or self.failure
            or IngestError(
                f"a row for {self.table!r} was not committed (the writer failed its batch)"
            )
        )


def split(calls: list[Call]) -> list[Call]:
    """``calls`` with each bundle replaced by one call per row (its ``pieces``), for the
    committer to bisect when their joint commit failed; the same list when none is a
    bundle."""
    if not any(call.bundled for call in calls):
        return calls
    out: list[Call] = []
    for call in calls:
        if isinstance(call, Bundle):
            if call.pieces is None:
                assert call.target is not None
                single = Call.single
                call.pieces = [single(call.target, call.columns, row) for row in call.rows]
            out.extend(call.pieces)
        else:
            out.append(call)
    return out


def each_row(calls: list[Call]) -> list[Call]:
    """``calls`` with each split bundle replaced by its pieces: one outcome per row, for
    counting and for failing the rows a storage fault left uncommitted."""
    if not any(call.bundled for call in calls):
        return calls
    return [p for c in calls for p in (c.pieces if isinstance(c, Bundle) and c.pieces else (c,))]


class RowReceipt(Receipt):
    """The receipt of one buffered row: its bundle's fate, narrowed to the row."""

    __slots__ = ("_index",)

    _call: Bundle
    _index: int  # the row's place in its bundle

    @property
    def rows(self) -> int:
        return 1

    @property
    def error(self) -> BaseException | None:
        call = self._call
        return call.outcome(self._index) if call.finished else None

    def wait(self, timeout: float | None = None) -> int:
        timeout = seconds(timeout, "timeout")
        call = self._call
        try:
            call.wait(timeout)
        except IngestTimeoutError:
            raise IngestTimeoutError(
                f"a row for {call.table!r} was accepted but not committed within "
                f"{timeout} s; it may still commit"
            ) from None
        except Exception as exc:
            if exc is not call.failure:
                raise
            # the bundle's failure: the row's own outcome says whether it applies
        error = call.outcome(self._index)
        if error is not None:
            raise error
        return 1

    def __repr__(self) -> str:
        call = self._call
        if not call.finished:
            state = "pending"
        else:
            state = "failed" if call.outcome(self._index) else "committed"
        return f"<Receipt 1 rows into {call.table!r} {state}>"


class RowBuffer:
    """The write path's buffer of single rows; one per writer.

    Owner: producer threads call :meth:`add`; the writer thread calls :meth:`seal` on a
    bundle it takes from its inbox; :meth:`duckflock.ingest.writer.Writer.submit`
    clears ``open`` (a plain store, no lock) after queueing any other call.
    ``submit`` queues a bundle as the writer queues any call; ``queued`` is the
    writer's count of queued rows (``pending`` included), ``limit`` its bound.
    """

    def __init__(
        self,
        submit: Callable[..., Call],
        queued: Callable[[], int],
        limit: int,
    ) -> None:
        self._submit = submit
        self._queued = queued
        self._limit = limit
        # guards the open bundle's rows, ``open`` when it is set, ``pending``
        self._lock = threading.Lock()
        self.open: Bundle | None = None  # the bundle rows are appended to, if any
        # rows in bundles the writer has not taken yet, but their first (each bundle
        # counts as one call in the inbox)
        self.pending = 0
        # ``pending`` at which the writer's queue is asked again whether there is room
        self._recheck = 0

    def add(
        self, target: TableSchema, columns: tuple[str, ...], row: tuple[Any, ...]
    ) -> RowReceipt | None:
        """Buffer ``row`` for ``target``'s ``columns``; its receipt, or None when the
        queue is full (the caller then queues the row as a call of its own, which
        waits for room). Raises ClosedError/WriterBrokenError as ``submit`` does."""
        lock = self._lock
        lock.acquire()
        try:
            bundle = self.open
            # (a bundle failed unsealed, by a writer that stopped, is left to _start:
            # rows joining it until then are told its error by their receipts)
            if (
                self.pending < self._recheck
                and bundle is not None
                and bundle.target is target
                and (bundle.columns is columns or bundle.columns == columns)
            ):
                rows = bundle.rows
                receipt: RowReceipt = _new(RowReceipt)
                receipt._call = bundle
                receipt._index = len(rows)
                rows.append(row)
                self.pending += 1  # a bundle's first row counts as the queued call
                return receipt
            return self._start(target, columns, row)
        finally:
            lock.release()

    def _start(
        self, target: TableSchema, columns: tuple[str, ...], row: tuple[Any, ...]
    ) -> RowReceipt | None:
        """``row``'s receipt after a look at the queue: in the open bundle, or in a new
        one (queued); None when the queue is full. The caller holds the lock."""
        room = self._limit - self._queued()
        if room <= 0:
            return None
        bundle = self.open
        if (
            bundle is not None
            and bundle.target is target
            and bundle.columns == columns
            and not bundle.finished
        ):
            rows = bundle.rows
            rows.append(row)
            self.pending += 1
            index = len(rows) - 1
        else:
            index = 0
            bundle = Bundle(target, columns, row, self)
            # open before it is queued: a call queued meanwhile by a thread that goes on
            # to buffer a row clears it again, so that row cannot land ahead of the call
            self.open = bundle
            try:
                self._submit(bundle, 0, wait=False)  # never blocks under the lock
            except BaseException as exc:
                self.open = None
                if isinstance(exc, QueueFullError):
                    return None
                raise
        # the rows this one left room for, before the queue is asked again
        self._recheck = self.pending + min(room - 1, ROOM_CHECK_ROWS)
        receipt: RowReceipt = _new(RowReceipt)
        receipt._call = bundle
        receipt._index = index
        return receipt

    def cut(self, call: Call) -> None:
        """The writer queued ``call``: unless it is the open bundle, that bundle takes no
        more rows, so rows buffered from now on land behind the call. A plain store,
        without the lock: a thread's own rows and calls follow each other in program
        order, and :meth:`_start` opens a bundle before queueing it."""
        if self.open is not call:
            self.open = None

    def seal(self, bundle: Bundle) -> int:
        """The writer took ``bundle``: no more rows join it; its row count."""
        with self._lock:
            if self.open is bundle:
                self.open = None
            n = len(bundle.rows)
            self.pending -= n - 1
            bundle.nrows = n
            self._recheck = 0  # the next row asks the queue again
            return n
