"""The outermost ASGI layer: arrival time, request counts, and the last line of defence.

Anything that escapes the routes becomes a 500 with the error body and is not re-raised
(uvicorn resets a keep-alive connection when the app raises); a client that leaves
mid-request is counted as 499 and logged at debug level, never as a 500 or a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from duckflock.errors import DuckflockError
from duckflock.server.metrics import Metrics

log = logging.getLogger("duckflock.server")
_COUNTERS_KEPT = 1024  # request counters kept at hand (the rest are looked up each time)


class Edge:
    """The outermost layer: stamps the arrival time, counts finished requests by method,
    route template and status, and turns anything that escaped the routes into a 500
    with the error body (the connection stays usable) — or, when the client went away
    mid-request, into nothing at all (counted as 499, logged at debug level)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, render: Any) -> None:
        self.app = app
        self.metrics = metrics
        self.render = render
        # (method, route, status) -> its counter: labels() takes a lock and builds the
        # key each time; bounded (methods, route templates and statuses are few)
        self._counters: dict[tuple[str, str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["duckflock.arrived"] = time.monotonic()
        status = 0

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except ClientDisconnect:
            status = 499  # the client closed the connection before its answer
            log.debug("client went away during %s %s", scope["method"], scope["path"])
        except OSError as exc:  # writing to a connection that is gone
            status = status or 499
            log.debug("connection lost during %s %s: %s", scope["method"], scope["path"], exc)
        except Exception as exc:
            log.exception("unexpected error in %s %s", scope["method"], scope["path"])
            if status == 0:
                error = DuckflockError(f"internal error: {type(exc).__name__}")
                response = self.render(error)
                with contextlib.suppress(OSError, RuntimeError):
                    await response(scope, receive, counting_send)
                status = 500
        finally:
            # the router leaves the matched route in the scope
            route = getattr(scope.get("route"), "path", "unmatched")
            self._count(scope["method"], route, str(status or 499))

    def _count(self, method: str, route: str, status: str) -> None:
        key = (method, route, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self.metrics.requests.labels(method, route, status)
            if len(self._counters) < _COUNTERS_KEPT:
                self._counters[key] = counter
        counter.inc()
