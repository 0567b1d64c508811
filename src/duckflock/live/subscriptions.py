"""Reading analyses: the latest result, waiting for a version, watch and subscribe.

Every reader has a :class:`~duckflock.live.results.Mailbox` of its own, attached to the
analysis's :class:`~duckflock.live.record.Schedule` under the registry's lock; the
scheduler puts each published result into every mailbox of the analysis. A slow reader
skips versions and never slows the scheduler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from duckflock.core.checks import count, seconds
from duckflock.live.changes import Change, signed
from duckflock.live.record import Analysis
from duckflock.live.registry import Registry
from duckflock.live.results import Mailbox, Result, Subscription, async_mailbox


class Readers:
    """The readers of one scheduler's analyses. Any thread calls it; the subscriptions
    (for ``close()``) are guarded by the registry's lock."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._subscriptions: dict[Mailbox, Subscription] = {}

    def result(
        self, name: str, min_version: int | None = None, timeout: float | None = None
    ) -> Result | None:
        """The latest result; with ``min_version``, wait for a result at least that new.

        Waiting follows the name: after a replacement only the replacement's results
        count (its versions continue the old numbers). Ends early on drop or close.
        """
        wanted = None if min_version is None else count(min_version, "min_version")
        limit = seconds(timeout, "timeout")
        registry = self._registry
        with registry.lock:
            analysis = registry.get(name)
            if wanted is None:
                return analysis.schedule.result

            def reached(current: Analysis) -> bool:
                result = current.schedule.result
                return result is not None and result.version >= wanted

            return registry.wait(name, reached, limit, f"version {wanted} or later")

    def attach(self, name: str, mailbox: Mailbox) -> None:
        """Deliver ``name``'s results to ``mailbox``: the current one (if any) at once,
        on this thread, then each new version."""
        registry = self._registry
        with registry.lock:
            registry.check_open()
            schedule = registry.get(name).schedule
            schedule.mailboxes.add(mailbox)
            if mailbox.follows_changes:  # changes are computed from here on, and a while after
                schedule.history.followed(schedule.version, True)
            if schedule.result is not None:
                mailbox.put(schedule.result)

    def detach(self, mailbox: Mailbox) -> None:
        with self._registry.lock:
            for analysis in self._registry:
                analysis.schedule.mailboxes.discard(mailbox)

    def watch(self, name: str) -> Iterator[Result]:
        """The current result (if any), then each new version; ends on drop or close."""
        mailbox = Mailbox()
        self.attach(name, mailbox)
        return self._iterate(mailbox)

    def _iterate(self, mailbox: Mailbox) -> Iterator[Result]:
        try:
            seen = 0
            while (result := mailbox.get(seen)) is not None:
                seen = result.version
                yield result
        finally:
            self.detach(mailbox)

    async def watch_async(self, name: str, *, changes: bool = False) -> AsyncIterator[Result]:
        """``watch`` for asyncio: ``async for result in db.watch_async(name)``
        (``changes``: its reader follows the changes, see :meth:`changes_async`)."""
        mailbox, event = async_mailbox(follows_changes=changes)
        self.attach(name, mailbox)
        try:
            seen = 0
            while True:
                result = mailbox.newer(seen)
                if result is not None:
                    seen = result.version
                    yield result
                    continue
                if mailbox.closed:
                    return
                await event.wait()
                event.clear()
        finally:
            self.detach(mailbox)

    def subscribe(
        self, name: str, callback: Callable[[Any], Any], *, changes: bool = False
    ) -> Subscription:
        """Call ``callback`` with each new result — or, with ``changes``, with each
        :class:`~duckflock.live.changes.Change` (a snapshot first)."""
        if not callable(callback):
            raise TypeError("callback must be callable")
        if not isinstance(changes, bool):
            raise TypeError(f"changes must be True or False, not {changes!r}")
        mailbox = Mailbox(follows_changes=changes)
        self.attach(name, mailbox)
        items = self._follow(name, mailbox, None, None) if changes else None
        subscription = Subscription(name, callback, mailbox, self._unsubscribe, items)
        with self._registry.lock:
            self._subscriptions[mailbox] = subscription
        return subscription

    def _unsubscribe(self, mailbox: Mailbox) -> None:
        self.detach(mailbox)
        with self._registry.lock:
            self._subscriptions.pop(mailbox, None)

    def subscriptions(self) -> list[Subscription]:
        """The subscriptions not cancelled yet (caller holds the registry's lock)."""
        return list(self._subscriptions.values())

    # -- changes ----------------------------------------------------------------------------

    def changes(
        self, name: str, since: int | str | None = None, timeout: float | None = None
    ) -> Iterator[Change]:
        """Each change after ``since`` (a version, or a change's ``id``), then each new
        one as it lands; a snapshot first when ``since`` is None or its changes are no
        longer kept. Ends on drop, close, or ``timeout`` seconds without a new version."""
        limit = seconds(timeout, "timeout")
        seen = self._resume_point(name, since)
        mailbox = Mailbox(follows_changes=True)
        self.attach(name, mailbox)
        return self._follow(name, mailbox, seen, limit)

    def _resume_point(self, name: str, since: int | str | None) -> int | None:
        with self._registry.lock:
            return self._registry.get(name).schedule.history.resume_point(since)

    def _catch_up(self, name: str, seen: int | None, result: Result) -> list[Change]:
        """The kept changes after ``seen``; a snapshot of ``result`` when they are not all
        kept (or ``seen`` is None)."""
        with self._registry.lock:
            analysis = self._registry.analyses.get(name)
            if analysis is None:
                return []  # dropped: its mailbox is closed too
            history = analysis.schedule.history
            found = None if seen is None else history.since(seen)
            lineage = history.lineage
        if found is not None:
            return found
        table = signed(result.table, 1)
        return [Change(name, seen or 0, result.version, table, True, lineage)]

    def _follow(
        self, name: str, mailbox: Mailbox, seen: int | None, timeout: float | None
    ) -> Iterator[Change]:
        try:
            at = 0  # the newest version taken from the mailbox
            while (result := mailbox.get(at, timeout)) is not None:
                at = result.version
                for change in self._catch_up(name, seen, result):
                    seen = change.version
                    at = max(at, seen)
                    yield change
        finally:
            self.detach(mailbox)

    async def changes_async(
        self, name: str, since: int | str | None = None
    ) -> AsyncIterator[Change]:
        """``changes`` for asyncio (catching up is a lookup under the registry's lock:
        no query runs)."""
        seen = self._resume_point(name, since)
        async for result in self.watch_async(name, changes=True):
            for change in self._catch_up(name, seen, result):
                seen = change.version
                yield change
