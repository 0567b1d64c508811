"""When and how long the client tries a request again.

A request is tried again when the server could not answer it: the connection failed or
broke, it timed out, or the server said 503 (busy, shutting down, not ready: its
``Retry-After`` is honoured). Pauses grow exponentially with full jitter (a random pause
from 0 to ``min(cap, base * 2**n)``, so many clients retrying at once spread out), and
all the tries of one call stay within ``total`` seconds.

A request that may have run (the connection broke after sending it, or it timed out) is
tried again only when repeating it is harmless: reads, writes with an idempotency key
(the server answers a repeat with the first reply, docs/delivery.md), and ``PUT`` (which
defines the same thing again). Others are tried again only when they never reached the
server (the connection was refused) or the server refused them with 503 before running
them.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from duckflock.core.checks import count, seconds

DEFAULT_RETRIES = 5
DEFAULT_TOTAL = 60.0  # seconds all the tries of one call may take
BASE = 0.1  # the first pause's ceiling, in seconds
CAP = 5.0  # no pause's ceiling grows past this (Retry-After may ask for longer)

# errors raised before the request left: repeating it cannot run it twice
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass
class Retries:
    """The retry policy of one client: at most ``retries`` more tries per call, within
    ``total`` seconds. ``sleep`` and ``clock`` are seams for tests."""

    retries: int = DEFAULT_RETRIES
    total: float = DEFAULT_TOTAL
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        self.retries = count(self.retries, "retries", maximum=100)
        total = seconds(self.total, "retry_seconds", optional=False)
        assert total is not None
        self.total = total

    def run(self, send: Callable[[], httpx.Response], *, harmless: bool) -> httpx.Response:
        """``send()``, tried again as the module says; the last failure is raised (an
        ``httpx.TransportError``) or the last 503 returned once tries or time run out."""
        deadline = self.clock() + self.total
        tries = 0
        while True:
            try:
                response = send()
            except httpx.TransportError as exc:
                if not (harmless or isinstance(exc, _NOT_SENT)):
                    raise
                pause = self._pause(tries, None, deadline)
                if pause is None:
                    raise
            else:
                if response.status_code != 503:
                    return response
                pause = self._pause(tries, retry_after(response), deadline)
                if pause is None:
                    return response
            tries += 1
            self.sleep(pause)

    def _pause(self, tries: int, asked: float | None, deadline: float) -> float | None:
        """The pause before the next try, or None: no tries or no time left."""
        if tries >= self.retries:
            return None
        pause = random.uniform(0.0, min(CAP, BASE * 2.0**tries))
        if asked is not None:
            pause = max(pause, asked)
        if self.clock() + pause > deadline:
            return None
        return pause


def retry_after(response: httpx.Response) -> float | None:
    """The response's ``Retry-After`` in seconds (delta-seconds or an HTTP date);
    None when absent or unreadable."""
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        value = when.timestamp() - time.time()
    if not math.isfinite(value):
        return None
    return max(0.0, value)
