"""Open, closing, closed: the life of a Database, and the statements it waits for.

Every statement, fetch and bookkeeping call is bracketed by :meth:`Lifecycle.enter` and
:meth:`Lifecycle.leave` (or :meth:`Lifecycle.running`): once the Database is closed they
raise :class:`ClosedError`, and ``close()`` waits (:meth:`Lifecycle.drain`) until the
statements already running have left. The Database owns one; the results it hands out
(:class:`duckflock.core.statements.Results`) hold it rather than the Database, so the
arrows point down.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from duckflock.errors import ClosedError, translate

# seconds a writer's close waits for it to commit what it accepted; also how long a file
# stays claimed by a dropped Database whose writer still drains (core/opening.py), and
# how long exit waits for the closes of dropped Databases (reaped)
CLOSE_SECONDS = 60.0


class Lifecycle:
    """Whether a Database is closed, and how many of its statements are running.

    Any thread calls it. ``guard`` (a condition) guards ``closed`` and the running count;
    the Database also holds it while it starts its writer or scheduler, so neither is
    started after close() began.
    """

    def __init__(self, shown: str) -> None:
        self.shown = shown  # the database as messages name it (a lake's password redacted)
        self.guard = threading.Condition()
        self._closed = False
        self._active = 0
        self._on_drop: list[Callable[[], None]] = []  # see drop_with
        self._owner: weakref.ref[object] | None = None  # the Database, once drop_with ran
        self._reaped = threading.Event()  # set once a dropped Database's closers ran

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<duckflock.Database {self.shown!r} {state}>"

    def drop_with(self, owner: object, close: Callable[[], None]) -> None:
        """Run ``close`` (a writer's, scheduler's or lake watch's) once ``owner`` (the
        Database, which its threads hold only :func:`weakly`) is collected unclosed.
        Closers run last-added first, on the reaper thread: the collector may run a
        finalizer on any thread holding any lock, so the finalizer only hands them over
        (``SimpleQueue.put`` is safe there). Called before the thread starts."""
        if not self._on_drop:
            self._owner = weakref.ref(owner)
            _start_reaper()
            weakref.finalize(owner, _DROPPED.put, self._dropped).atexit = False
        self._on_drop.append(close)

    def _dropped(self) -> None:
        try:
            for close in reversed(self._on_drop):
                try:
                    close()
                except Exception:  # one failing closer does not keep the others' threads
                    logging.getLogger("duckflock").exception("closing a dropped database failed")
        finally:
            self._reaped.set()

    def holds(self, timeout: float) -> bool:
        """Whether its Database still holds its file: open, or dropped unclosed with
        its closers (its writer still committing what it accepted) not all run after
        waiting ``timeout`` seconds for them."""
        if self._owner is None or self._owner() is not None:
            return True
        return not self._reaped.wait(timeout)

    @property
    def closed(self) -> bool:
        """True once close() began; never False again."""
        return self._closed

    def closed_error(self, how: str = "is closed") -> ClosedError:
        """The error for a use of the closed database."""
        return ClosedError(f"database {self.shown!r} {how}")

    def check(self) -> None:
        """Raise :class:`ClosedError` if closed."""
        if self._closed:
            raise self.closed_error()

    def enter(self) -> None:
        """A statement starts: counted until :meth:`leave`; ClosedError if closed."""
        with self.guard:
            if self._closed:
                raise self.closed_error()
            self._active += 1

    def leave(self) -> None:
        """A statement counted by :meth:`enter` is over."""
        with self.guard:
            self._active -= 1
            if self._active == 0 and self._closed:
                self.guard.notify_all()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Count a statement as running (close() waits for it); ClosedError if closed."""
        self.enter()
        try:
            yield
        finally:
            self.leave()

    def fail(self, exc: BaseException, sql: str | None, params: Any = None) -> Exception:
        """The error to raise for DuckDB's ``exc``: ClosedError when close() interrupted
        the statement, else the translated error."""
        if self._closed:
            return self.closed_error("was closed during the call")
        return translate(exc, sql=sql, params=params)

    def close(self) -> bool:
        """Mark closed; False when it was already (close() is idempotent). Call
        ``guard``-free: it takes the guard itself."""
        with self.guard:
            if self._closed:
                return False
            self._closed = True
            return True

    def drain(self, timeout: float) -> bool:
        """Wait until no statement runs (at most ``timeout`` seconds); False if some do."""
        with self.guard:
            return self.guard.wait_for(lambda: self._active == 0, timeout=timeout)


def weakly(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` (a bound method of a Database) called through a weak reference, for
    the callbacks a Database hands its threads: a thread that holds one does not keep a
    dropped Database alive (:meth:`Lifecycle.drop_with` stops the thread). Once the
    Database is gone, a call does nothing."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any, **kwargs: Any) -> Any:
        bound = ref()
        return None if bound is None else bound(*args, **kwargs)

    return call


# what the finalizers of dropped Databases hand the reaper thread
_DROPPED: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
_REAPER_LOCK = threading.Lock()  # guards _reaper
_reaper: threading.Thread | None = None


def _start_reaper() -> None:
    global _reaper
    with _REAPER_LOCK:
        # not alive: a child after fork inherits the parent's Thread, not its thread
        if _reaper is None or not _reaper.is_alive():
            _reaper = threading.Thread(target=_reap, name="duckflock-reaper", daemon=True)
            _reaper.start()


def _reap() -> None:
    while True:
        _DROPPED.get()()


def reaped() -> None:
    """Return once the closers of the Databases dropped so far have run: at exit, the
    interpreter must not tear down DuckDB's objects under a reaper mid-close (DuckDB
    aborts the process, and the rows the writer had accepted are lost). Waits as long as
    a writer's close does (:data:`CLOSE_SECONDS`): a close that hangs does not hang the
    exit. Without a living reaper (none started, or a forked child's) they run on this
    thread (each writer's close bounded by its own timeout)."""
    with _REAPER_LOCK:
        alive = _reaper is not None and _reaper.is_alive()
    if alive:
        done = threading.Event()
        _DROPPED.put(done.set)
        if not done.wait(CLOSE_SECONDS):
            logging.getLogger("duckflock").warning(
                "exit: the closes of dropped databases did not finish within %s s", CLOSE_SECONDS
            )
        return
    while True:
        try:
            _DROPPED.get_nowait()()
        except queue.Empty:
            return
