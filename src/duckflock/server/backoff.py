"""Back-off after failed authentication, one for both protocols (HTTP and Postgres).

Each failure from an address (and with a presented token, for that token too) pushes
the next attempt of that key further out: the first :attr:`Backoff.free` failures cost
nothing (typos), then each waits twice as long as the one before, up to ``cap`` seconds.
An attempt waits out its delay *before* its credential is checked, so a client cannot
learn the answer early by hanging up; attempts from one address queue one behind the
other (parallel connections do not multiply the rate), and one that would have to wait
longer than ``max_wait`` is refused at once, without a check. A key with no failure
for ``forget`` seconds starts afresh, so the back-off recovers by itself. A success
does not clear an address (a client holding one valid token could otherwise clear its
guesses of another after each one).

Per address first: the real user on another address is never slowed by an attacker.
A token key only slows that token's own failures: a token that is right never fails, so
guessing tokens cannot lock out the one that works. Tokens are kept as keyed digests
(a secret made at start), never as text. Memory is bounded: at most ``max_keys``
entries, the least recently failed dropped first.

Owner: one per server, shared by the HTTP app and the Postgres port; every method is
thread-safe (``_lock`` guards both maps and the counters).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

log = logging.getLogger("duckflock.server.auth")


class Door(StrEnum):
    """Which protocol an authentication came through (a metric label)."""

    HTTP = "http"
    POSTGRES = "postgres"


@dataclass
class _Entry:
    failures: int = 0
    last: float = 0.0  # when the last failure happened
    next_at: float = 0.0  # the earliest moment the next attempt is checked


class Refused(Exception):
    """Too many failures: the attempt is refused without a check (``retry_after`` s)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(
            "too many failed authentications from this address; "
            f"retry in {max(retry_after, 1):.0f} s"
        )
        self.retry_after = retry_after


class Backoff:
    """Exponential, bounded, self-healing delays per address and per token."""

    def __init__(
        self,
        *,
        free: int = 5,
        base: float = 0.1,
        cap: float = 2.0,
        max_wait: float = 5.0,
        forget: float = 60.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (free >= 0 and 0 < base <= cap <= max_wait and forget > 0 and max_keys > 0):
            raise ValueError("backoff needs free >= 0, 0 < base <= cap <= max_wait, forget > 0")
        self.free, self.base, self.cap, self.max_wait = free, base, cap, max_wait
        self.forget, self.max_keys, self.clock = forget, max_keys, clock
        self._secret = secrets.token_bytes(16)
        self._lock = threading.Lock()  # guards _entries and the counters below
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.failures: dict[Door, int] = dict.fromkeys(Door, 0)  # counted for /metrics
        self.refusals: dict[Door, int] = dict.fromkeys(Door, 0)

    def _keys(self, address: str, token: str | None) -> list[str]:
        keys = [f"a:{address}"]
        if token:
            digest = hmac.new(self._secret, token.encode("utf-8", "replace"), hashlib.sha256)
            keys.append(f"t:{digest.hexdigest()[:32]}")
        return keys

    def _entry(self, key: str, now: float) -> _Entry | None:
        """The live entry of ``key`` (None when it has none or it was forgotten)."""
        entry = self._entries.get(key)
        if entry is not None and now - entry.last > self.forget:
            del self._entries[key]
            return None
        return entry

    def _delay(self, failures: int) -> float:
        if failures < self.free:
            return 0.0
        return float(min(self.cap, self.base * 2 ** min(failures - self.free, 32)))

    def reserve(self, address: str, token: str | None, door: Door) -> float:
        """Seconds the caller must wait before checking this attempt (0 mostly);
        :class:`Refused` when that would be longer than ``max_wait``."""
        now = self.clock()
        with self._lock:
            if not self._entries:  # nobody failed lately: the common case costs a lock
                return 0.0
            entries = [e for k in self._keys(address, token) if (e := self._entry(k, now))]
            delays = [self._delay(e.failures) for e in entries]
            if not any(delays):
                return 0.0
            start = max(max(e.next_at for e in entries), now)
            wait = start - now
            if wait > self.max_wait:
                self.refusals[door] += 1
                raise Refused(wait)
            step = max(delays)
            for entry in entries:  # the next attempt queues behind this one
                entry.next_at = start + step
            return wait

    def failed(self, address: str, token: str | None, door: Door) -> None:
        """Count a failure of ``address`` (and ``token``) and log it, without the token."""
        now = self.clock()
        with self._lock:
            self.failures[door] += 1
            worst = 0
            for key in self._keys(address, token):
                entry = self._entry(key, now) or _Entry()
                entry.failures += 1
                entry.last = now
                entry.next_at = max(entry.next_at, now + self._delay(entry.failures))
                self._entries[key] = entry
                self._entries.move_to_end(key)
                worst = max(worst, entry.failures)
            # oldest failure first: drop what is forgotten, and past max_keys the oldest
            while self._entries and (
                len(self._entries) > self.max_keys
                or now - next(iter(self._entries.values())).last > self.forget
            ):
                self._entries.popitem(last=False)
        log.warning(
            "failed authentication over %s from %s (%d in a row); the next attempt waits %.2f s",
            door.value,
            address,
            worst,
            self._delay(worst),
        )

    @property
    def tracked(self) -> int:
        with self._lock:
            return len(self._entries)
