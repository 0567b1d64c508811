"""The time the live machinery reads: one seam instead of ``datetime.now``/``time.monotonic``.

The scheduler reads :meth:`Clock.monotonic` for due times, debounces and deadlines, and
:meth:`Clock.now` for the instant of a sliding window (``Result.now``) and a result's
``refreshed_at``. A Database's analyses use :data:`SYSTEM` unless another clock was
assigned to that Database before its first analysis (:func:`assign`, through
:func:`duckflock.live.internals.use_clock`): tests step a window's ``now()`` instead of
patching module paths.

Waits (``Condition.wait``) stay in real time: a clock that stands still does not stop
the scheduler thread from looking again.
"""

from __future__ import annotations

import time
import weakref
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """What the live machinery asks of time."""

    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC); microseconds, as DuckDB keeps them."""
        ...

    def monotonic(self) -> float:
        """Seconds that never go back (for due times and deadlines)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM: Clock = SystemClock()

# the clock of each owner (a Database) whose scheduler is not to use SYSTEM
_assigned: weakref.WeakKeyDictionary[object, Clock] = weakref.WeakKeyDictionary()


def assign(owner: object, clock: Clock) -> None:
    """Make ``owner``'s scheduler, when it is created, use ``clock``."""
    _assigned[owner] = clock


def of(owner: object | None) -> Clock:
    """The clock assigned to ``owner``, else :data:`SYSTEM`."""
    if owner is None:
        return SYSTEM
    return _assigned.get(owner, SYSTEM)
