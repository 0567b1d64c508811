"""Open connections, bounded per peer address, on both ports; uvicorn's missing limits.

:class:`PeerLimit` counts the connections each address holds (thread-safe: the
Postgres port's accept thread and uvicorn's event loop both use one). uvicorn's HTTP
protocol lacks a deadline for a request's headers (a connection that never sends a
request, or sends its headers a byte at a time, kept its socket for good), a cap on
their size (httptools buffers a header line however long it grows: 60 MB of one
header was held per connection), a cap on open connections and a cap per address;
:func:`http_protocol` adds the four to its httptools protocol, closing what is over a
cap at once. It also sends a response's head with the first piece of its body in one
write (uvicorn writes them apart: two ``send`` calls and two wake-ups of the client per
answer, a tenth of the event loop's time on one-row ingest), renders a response head
once per (status, headers) and second (:class:`Heads`: uvicorn checks and lowers every
header of every answer) and keeps one keep-alive timer per connection, re-armed when it
fires, instead of arming and cancelling one per request.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from duckflock.server.policy import positive_int


class PeerLimit:
    """At most ``per_peer`` open connections from one address."""

    def __init__(self, per_peer: int) -> None:
        self.per_peer = positive_int(per_peer, "connections per peer address")
        self._lock = threading.Lock()  # guards _open
        self._open: Counter[str] = Counter()

    def enter(self, peer: str) -> bool:
        """Count a new connection from ``peer``; False (not counted) when it has its
        ``per_peer`` already."""
        with self._lock:
            if self._open[peer] >= self.per_peer:
                return False
            self._open[peer] += 1
            return True

    def leave(self, peer: str) -> None:
        with self._lock:
            self._open[peer] -= 1
            if self._open[peer] <= 0:
                del self._open[peer]

    def held(self, peer: str) -> int:
        with self._lock:
            return self._open[peer]


class _CycleTransport:
    """What one request's cycle writes through: its first write (the response head, or
    a ``100 Continue``) is held by the protocol until the next write, the response's end
    or the end of this turn of the loop, whichever comes first; the rest goes on at
    once, after whatever is held. Everything else is the connection's transport."""

    __slots__ = ("_first", "_protocol", "_transport")

    def __init__(self, protocol: Any, transport: asyncio.Transport) -> None:
        self._protocol = protocol
        self._transport = transport
        self._first = True

    def write(self, data: bytes) -> None:
        if self._first:
            self._first = False
            self._protocol.hold(data)
        else:
            self._protocol.send_after_held(data)

    def close(self) -> None:
        self._protocol.flush_held()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


_HEADS_KEPT = 256  # response heads Heads keeps per second (further ones are rendered)


class Heads:
    """Response heads as uvicorn's cycle writes them (its status line, its default
    headers — the date — then the app's, each name lower-cased), rendered once per
    (status, headers) while the default headers stay the same list (uvicorn makes a new
    one each second, for the date). Only heads with one ``content-length`` and no
    ``transfer-encoding`` or ``connection`` header are kept: for those uvicorn's only
    other effect is the body's expected length; the rest, and every header its checks
    refuse, go through uvicorn's own ``send``."""

    def __init__(self) -> None:
        self._defaults: object = None
        self._kept: dict[tuple[Any, ...], tuple[bytes, int] | None] = {}

    def get(self, defaults: list[tuple[bytes, bytes]], status: int, headers: Any) -> Any:
        """(head, content length), or None: uvicorn's ``send`` renders this one."""
        if defaults is not self._defaults:
            self._defaults = defaults
            self._kept = {}
        try:
            key = (status, *headers)
            return self._kept[key]
        except KeyError:
            pass
        except TypeError:  # headers as lists, not tuples: not kept
            return None
        found = self._render(defaults, status, key[1:])
        if len(self._kept) < _HEADS_KEPT:
            self._kept[key] = found
        return found

    @staticmethod
    def _render(
        defaults: list[tuple[bytes, bytes]], status: int, headers: tuple[Any, ...]
    ) -> tuple[bytes, int] | None:
        content = [STATUS_LINE[status]]
        length = None
        for name, value in (*defaults, *headers):
            if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
                return None  # uvicorn raises its own error
            name = name.lower()
            if name in (b"transfer-encoding", b"connection") or (
                name == b"content-length" and length is not None
            ):
                return None
            if name == b"content-length":
                length = int(value.decode())
            content.extend((name, b": ", value, b"\r\n"))
        if length is None:
            return None  # chunked: uvicorn decides
        content.append(b"\r\n")
        return b"".join(content), length


class HeadsCycle(RequestResponseCycle):
    """uvicorn's request-response cycle, whose response head comes from :class:`Heads`
    when it is one of the kept kind (keep-alive, not HEAD, no access log)."""

    heads: Heads

    async def send(self, message: Any) -> None:
        if (
            not self.response_started
            and message["type"] == "http.response.start"
            and self.keep_alive
            and not self.access_log
            and not self.disconnected
            and not self.flow.write_paused
            and self.scope["method"] != "HEAD"
        ):
            found = self.heads.get(self.default_headers, message["status"], message["headers"])
            if found is not None:
                self.response_started = True
                self.waiting_for_100_continue = False
                self.chunked_encoding = False
                head, self.expected_content_length = found
                self.transport.write(head)
                return
        await super().send(message)


def http_protocol(
    *,
    header_timeout: float,
    max_header_bytes: int,
    max_connections: int,
    per_peer: int,
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a header deadline (armed as the connection
    opens, so one that never sends a request is closed too, and when a request's
    headers did not all come in one read: most do, and take no timer), a cap on the bytes a
    request's line and headers take (431 past it) and connection caps."""
    peers = PeerLimit(per_peer)
    max_header_bytes = positive_int(max_header_bytes, "max_header_bytes")

    class Cycle(HeadsCycle):
        heads = Heads()

    class Protocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _peer: str | None = None
        # since when (loop time) the connection has waited for its next request; None
        # while a request is being served (the keep-alive timer then does nothing)
        _idle_since: float | None = None
        # bytes received since the last request ended (or the connection opened) while its
        # successor's headers are incomplete; None while a request's body is being read
        _header_bytes: int | None = 0
        # a response head waiting to go out with its body (one write): see _CycleTransport
        _held: bytes | None = None

        def hold(self, data: bytes) -> None:
            self.flush_held()
            self._held = data
            self.loop.call_soon(self.flush_held)  # a body that is slow to come

        def send_after_held(self, data: bytes) -> None:
            held, self._held = self._held, None
            if held is None:
                self.transport.write(data)
            else:
                self.transport.writelines((held, data))

        def flush_held(self) -> None:
            held, self._held = self._held, None
            if held is not None and not self.transport.is_closing():
                self.transport.write(held)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                self.logger.warning("over %d open connections: closing a new one", max_connections)
                transport.close()
                return
            peer = str(self.client[0]) if self.client else "unknown"
            if not peers.enter(peer):
                self.logger.warning(
                    "%s holds %d connections, the most one address may: closing a new one",
                    peer,
                    per_peer,
                )
                transport.close()
                return
            self._peer = peer
            self._arm()

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _refuse(self, status: bytes, text: bytes) -> None:
            """Answer ``status`` (unless an earlier, pipelined response is still being
            written: it would be cut into) and close."""
            if self.transport.is_closing():
                return
            self.flush_held()
            if self.cycle is None or self.cycle.response_complete:
                self.transport.write(
                    b"HTTP/1.1 %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
                    b"connection: close\r\n\r\n%s" % (status, len(text), text)
                )
            self.transport.close()

        def _too_slow(self) -> None:
            self._header_timer = None
            self._refuse(b"408 Request Timeout", b"request headers came too slow")

        def data_received(self, data: bytes) -> None:
            # fed in pieces no longer than the room left under the cap, so the parser
            # never holds more than max_header_bytes of one request's headers
            while data and self._header_bytes is not None:
                room = max_header_bytes - self._header_bytes
                if room <= 0:
                    self.logger.warning(
                        "request headers over %d bytes: closing the connection", max_header_bytes
                    )
                    self._refuse(
                        b"431 Request Header Fields Too Large",
                        b"request headers over %d bytes" % max_header_bytes,
                    )
                    return
                piece, data = data[:room], data[room:]
                self._header_bytes += len(piece)
                super().data_received(piece)
                if self.transport.is_closing() or self.transport.get_protocol() is not self:
                    return  # refused (400), or upgraded to another protocol
            if data:  # the rest of a body (and perhaps the start of the next request)
                super().data_received(data)
            if self._header_bytes and self._header_timer is None:  # headers still to come
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            self._header_bytes = None
            before = self.cycle
            super().on_headers_complete()
            if self.cycle is not before:  # a new request (not an upgrade): not yet run
                self.cycle.__class__ = Cycle
                self.cycle.transport = cast(
                    asyncio.Transport, _CycleTransport(self, self.transport)
                )

        def send_400_response(self, msg: str) -> None:
            self.flush_held()
            super().send_400_response(msg)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._header_bytes = 0

        def on_response_complete(self) -> None:
            self.flush_held()  # a head without a body (HEAD, 204, 304) goes out now
            # uvicorn's, but the keep-alive timer is armed once per connection (_idle)
            self.server_state.total_requests += 1
            if not self.transport.is_closing():
                self.flow.resume_reading()
                if self.pipeline:  # pipelined requests: the next one starts
                    cycle, app = self.pipeline.pop()
                    self._start_asgi_task(cycle, app)
                else:
                    self._idle()
            self._disarm()  # the keep-alive timeout takes over until the next request

        def _unset_keepalive_if_required(self) -> None:
            self._idle_since = None  # busy: the keep-alive timer, if armed, lets it be

        def _idle(self) -> None:
            """Waiting for the next request, at most ``timeout_keep_alive`` seconds."""
            self._idle_since = self.loop.time()
            if self.timeout_keep_alive_task is None:
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self._keep_alive_ends
                )

        def _keep_alive_ends(self) -> None:
            self.timeout_keep_alive_task = None
            if self._idle_since is None:
                return  # serving a request: its response arms the timer again
            left = self._idle_since + self.timeout_keep_alive - self.loop.time()
            if left > 0:  # requests came and went since it was armed
                self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_ends)
            else:
                self.timeout_keep_alive_handler()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            self._held = None
            self._idle_since = None
            if self.timeout_keep_alive_task is not None:
                self.timeout_keep_alive_task.cancel()
                self.timeout_keep_alive_task = None
            if self._peer is not None:
                peers.leave(self._peer)
                self._peer = None
            super().connection_lost(exc)

    return Protocol
