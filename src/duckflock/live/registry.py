"""The analyses of one Database by name, and the one lock that guards them.

The scheduler (:mod:`duckflock.live.scheduler`), the change notices
(:mod:`duckflock.live.notices`) and the readers (:mod:`duckflock.live.subscriptions`)
share one :class:`Registry`: they are three views of the same analyses, and every
decision that involves more than one of them (a definition change and the capture set,
a commit and the deltas, a publish and its waiters) is taken under its one lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from duckflock.errors import ClosedError, ResultTimeoutError, UnknownAnalysisError
from duckflock.live.record import Analysis
from duckflock.live.results import Result


class Registry:
    """Analyses by name.

    ``lock`` guards ``analyses``, ``stopping``, and the :class:`Schedule` and
    :class:`Changes` of every analysis (see :mod:`duckflock.live.record`), plus what the
    scheduler keeps beside them (its running set, busy count, next wake-up). ``wake``
    wakes the scheduler thread (and ``close()``); ``published`` wakes ``result()`` and
    ``refresh()`` waiters. Any thread calls it.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.published = threading.Condition(self.lock)
        self.analyses: dict[str, Analysis] = {}
        self.stopping = False

    def __iter__(self) -> Iterator[Analysis]:
        """The analyses now registered (caller holds the lock)."""
        return iter(self.analyses.values())

    def get(self, name: str) -> Analysis:
        """The analysis called ``name``, or UnknownAnalysisError (caller holds the lock)."""
        analysis = self.analyses.get(name)
        if analysis is None:
            raise UnknownAnalysisError(name)
        return analysis

    def check_open(self) -> None:
        """ClosedError once the scheduler is stopping (caller holds the lock)."""
        if self.stopping:
            raise ClosedError("the database is closed")

    def wait(
        self, name: str, done: Callable[[Analysis], bool], timeout: float | None, wanted: str
    ) -> Result:
        """Wait (holding the lock) until the analysis now called ``name`` is ``done``;
        its result then. Follows the name across a replacement; ends early on drop
        (UnknownAnalysisError) or close (ClosedError)."""

        def ready() -> bool:
            current = self.analyses.get(name)
            return self.stopping or current is None or done(current)

        self.published.wait_for(ready, timeout=timeout)
        self.check_open()
        current = self.get(name)  # dropped meanwhile: UnknownAnalysisError
        if done(current):
            result = current.schedule.result
            assert result is not None
            return result
        raise ResultTimeoutError(
            f"analysis {name!r} had no result of {wanted} within {timeout} s "
            f"(it is at version {current.schedule.version})"
        )
