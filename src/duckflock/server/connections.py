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
answer, a tenth of the event loop's time on one-row ingest).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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

    class Protocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _peer: str | None = None
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
            super().on_response_complete()
            self._disarm()  # the keep-alive timeout takes over until the next request

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            self._held = None
            if self._peer is not None:
                peers.leave(self._peer)
                self._peer = None
            super().connection_lost(exc)

    return Protocol
