"""One insert call on its way through the writer (:class:`Call`), and its public face,
the :class:`Receipt` its caller waits on.

A call is the only object made per insert (never one per row): a single row rides on it
as a tuple, anything larger as :class:`~duckflock.ingest.rows.Part` objects. A caller that
waits parks on a lock of its own, released once the call's batch is committed (by the
writer for the first callers of a commit, then by each woken caller for the next:
:class:`~duckflock.ingest.batches.Relay`); no woken caller re-acquires a shared lock,
so fifty callers wake without queueing behind one another.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from _thread import allocate_lock
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from duckflock.core.checks import seconds
from duckflock.errors import IngestTimeoutError
from duckflock.ingest.rows import Part
from duckflock.ingest.schema import TableSchema

if TYPE_CHECKING:
    from duckflock.ingest.batches import Relay, Tally

_log = logging.getLogger("duckflock")


class Call:
    """One insert call as the write path sees it: the ingest wing's internal record.

    Owner: the caller's thread until :meth:`duckflock.ingest.writer.Writer.submit`
    queues it; then the writer thread, which sets ``committed`` and ``failure`` and,
    under ``guard`` (the writer's lock), calls :meth:`finish`. ``on_done`` is set before
    queueing (``insert_async``); ``waiter`` by :meth:`park`. A keyed call (``key``,
    with its content's ``digest``: :mod:`duckflock.ingest.keys`) gets ``committed_at``
    from the writer, and ``replayed`` when its key was committed before.
    """

    __slots__ = (
        "back",
        "columns",
        "committed",
        "committed_at",
        "digest",
        "failure",
        "finished",
        "guard",
        "key",
        "left",
        "nrows",
        "on_done",
        "parts",
        "relay",
        "replayed",
        "row",
        "target",
        "waiter",
    )
    bundled = False  # True for a bundle of buffered rows (ingest/bundles.py)

    def __init__(
        self,
        target: TableSchema | None,
        *,
        columns: tuple[str, ...] = (),
        row: tuple[Any, ...] | None = None,
        parts: list[Part] | None = None,
        nrows: int = 1,
    ) -> None:
        self.target = target  # the resolved table; None: a flush marker
        self.columns = columns  # a single row's canonical columns
        self.row = row  # a single row (the hot path), else None and ``parts``
        self.parts = parts
        self.nrows = 1 if row is not None else nrows
        self.committed = False  # set by the writer once its rows are committed
        self.failure: BaseException | None = None  # the call's error, set by the writer
        self.finished = False  # committed or failed: set under ``guard`` by finish()
        self.guard: Any = None  # the writer's lock, set when queued
        self.waiter: Any = None  # the caller's own lock, released by finish()
        self.on_done: Callable[[], object] | None = None  # told once finished
        self.key: str | None = None  # the idempotency key, if any
        self.digest = ""  # the content's digest, for a keyed call
        self.committed_at: dt.datetime | None = None  # a keyed call's commit time
        self.replayed = False  # the key was committed before: nothing was written
        # the writer's tally of the callers its commit woke: a woken caller reports to it
        # once it runs again (ingest/batches.py Woken), None while nobody was woken
        self.back: Tally | None = None
        # the callers of the same commit still to wake, one after another: set with
        # ``back`` (ingest/batches.py Woken); ``left``: the caller stopped waiting first
        self.relay: Relay | None = None
        self.left = False

    def replay(self, rows: int, committed_at: dt.datetime | None) -> None:
        """The key was committed before (or earlier in this batch): take its facts."""
        self.nrows = rows
        self.committed_at = committed_at
        self.replayed = True
        self.committed = True

    @classmethod
    def single(cls, target: TableSchema, columns: tuple[str, ...], row: tuple[Any, ...]) -> Call:
        """``Call(target, columns=columns, row=row)`` for the hot path: the same slots,
        set without parsing keywords (half the cost, per insert of one row)."""
        call = cls.__new__(cls)
        call.target, call.columns, call.row, call.parts, call.nrows = target, columns, row, None, 1
        call.committed = call.finished = call.replayed = False
        call.failure = call.guard = call.waiter = call.on_done = call.key = None
        call.committed_at = call.back = call.relay = None
        call.left = False
        call.digest = ""
        return call

    def seal(self) -> int:
        """The writer took the call from its inbox: its row count (a bundle of buffered
        rows also stops taking rows here)."""
        return self.nrows

    @classmethod
    def empty(cls, target: TableSchema | None = None) -> Call:
        """A call with no rows (into ``target``): finished at once."""
        call = cls(target, nrows=0)
        call.finished = True
        return call

    @property
    def table(self) -> str:
        """The table as the caller named it ("" for a flush marker)."""
        return "" if self.target is None else self.target.name

    @property
    def open(self) -> bool:
        """Neither committed nor failed yet: what a writer's failure may still fail."""
        return self.failure is None and not self.committed

    @property
    def urgent(self) -> bool:
        """Somebody waits for it: the writer does not linger over its batch."""
        return self.waiter is not None or self.on_done is not None

    def park(self) -> None:
        """Prepare to wait: called before the call is queued, so no wake-up is lost."""
        waiter = allocate_lock()
        waiter.acquire()
        self.waiter = waiter

    def finish(self, *, wake: bool = True, settles: list[Settle] | None = None) -> None:
        """Mark done and wake the waiting caller (unless ``wake`` is False: the caller
        woken before it in a relay wakes it); the writer holds ``guard``. An ``on_done``
        that is a :class:`Settle` joins ``settles`` when given (the writer then wakes
        each event loop once for all of them: :func:`settle_all`)."""
        self.finished = True
        waiter = self.waiter
        if waiter is not None and wake:
            waiter.release()
        callback = self.on_done
        if settles is not None and type(callback) is Settle:
            settles.append(callback)
        elif callback is not None:
            try:
                callback()  # quick and non-blocking (loop.call_soon_threadsafe)
            except Exception:
                # the caller's callback fails the caller, never the writer: an event loop
                # that closed while its insert was pending raises RuntimeError here
                _log.warning("an insert's completion callback failed", exc_info=True)

    def all_parts(self) -> list[Part]:
        """The call's rows as parts (a single row becomes a one-row part)."""
        if self.parts is None:
            assert self.row is not None
            return [Part(self.columns, rows=[self.row])]
        return self.parts

    def wait(self, timeout: float | None = None) -> int:
        """Block until committed and return the row count; raise the call's error."""
        try:
            if not self.finished:
                self._block(timeout)
        except BaseException:  # timed out, or interrupted: not waiting any more
            guard = self.guard
            if guard is not None:
                with guard:  # the writer relays only to callers still waiting
                    self.left = self.left or not self.finished
            raise
        finally:
            relay = self.relay
            if relay is not None and self.finished:  # woken: wake the next one
                self.relay = None
                relay.next()
        back = self.back
        if back is not None:  # woken by the writer, and running again: it need not wait
            self.back = None
            back.back()
        if self.failure is not None:
            raise self.failure
        return self.nrows

    def _block(self, timeout: float | None) -> None:
        """Wait on the call's own lock until the writer finished it."""
        waiter = self.waiter
        if waiter is None:
            guard = self.guard
            assert guard is not None, "a call is waited on only after it is queued"
            with guard:
                if not self.finished and self.waiter is None:
                    self.park()
                waiter = self.waiter
        # finished between the first look and the guard: nothing was parked
        if waiter is None:
            assert self.finished
        elif not waiter.acquire(timeout=-1 if timeout is None else timeout):
            if not self.finished:
                raise IngestTimeoutError(
                    f"{self.nrows} rows for {self.table!r} were accepted but not "
                    f"committed within {timeout} s; they may still commit"
                )
        else:
            waiter.release()  # let later wait() calls through too


class Settle:
    """``insert_async``'s ``on_done``: completes its future on its event loop. Called
    alone it hands the loop one callback (``call_soon_threadsafe``); the writer hands
    each loop one for all the calls a commit finished (:func:`settle_all`): one
    wake-up of the loop per commit instead of one per request."""

    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        self.loop = loop
        self.future = future

    def __call__(self) -> None:
        settle_all([self])


def settle_all(settles: list[Settle]) -> None:
    """Complete the futures of ``settles``: one ``call_soon_threadsafe`` per event loop
    (any thread). A loop that closed (its ``asyncio.run`` gave up) is skipped: nobody
    waits on it."""
    by_loop: dict[int, list[asyncio.Future[None]]] = {}
    loops: list[asyncio.AbstractEventLoop] = []
    for settle in settles:
        futures = by_loop.get(id(settle.loop))
        if futures is None:
            futures = by_loop[id(settle.loop)] = []
            loops.append(settle.loop)
        futures.append(settle.future)
    for loop in loops:
        try:
            loop.call_soon_threadsafe(_complete, by_loop[id(loop)])
        except RuntimeError:
            pass  # the loop closed while its inserts were pending
        except Exception:  # never the writer's failure
            _log.warning("waking an event loop failed", exc_info=True)


def _complete(futures: list[asyncio.Future[None]]) -> None:
    """On the loop: complete each future not done yet (cancelled or timed out)."""
    for future in futures:
        if not future.done():
            future.set_result(None)


class Receipt:
    """The outcome of one ``insert`` call: wait for its commit, or ask whether it is done."""

    __slots__ = ("_call",)

    def __init__(self, call: Call) -> None:
        self._call = call

    @property
    def rows(self) -> int:
        """How many rows the call carried."""
        return self._call.nrows

    @property
    def table(self) -> str:
        """The table the rows go to ("" for a call without rows)."""
        return self._call.table

    @property
    def key(self) -> str | None:
        """The call's idempotency key (None: the call had none)."""
        return self._call.key

    @property
    def replayed(self) -> bool:
        """True when the key was committed before: this call wrote nothing, and
        ``rows`` and ``committed_at`` are the first call's."""
        return self._call.replayed

    @property
    def committed_at(self) -> dt.datetime | None:
        """When a keyed call's rows were committed (UTC); None for a call without a
        key, or before the commit."""
        return self._call.committed_at

    @property
    def done(self) -> bool:
        """True once the call's rows are committed, or it failed."""
        return self._call.finished

    @property
    def error(self) -> BaseException | None:
        """The call's error once done (None while pending or when committed)."""
        call = self._call
        return call.failure if call.finished else None

    def wait(self, timeout: float | None = None) -> int:
        """Block until committed and return the row count; raise the call's error."""
        return self._call.wait(seconds(timeout, "timeout"))

    def __repr__(self) -> str:
        call = self._call
        state = "pending" if not call.finished else ("failed" if call.failure else "committed")
        if call.replayed:
            state = "replayed"
        return f"<Receipt {call.nrows} rows into {call.table!r} {state}>"
