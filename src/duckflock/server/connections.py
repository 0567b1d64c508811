"""Open connections, bounded per peer address, on both ports; uvicorn's missing limits.

:class:`PeerLimit` counts the connections each address holds (thread-safe: the
Postgres port's accept thread and uvicorn's event loop both use one). uvicorn's HTTP
protocol lacks a deadline for a request's headers (a connection that never sends a
request, or sends its headers a byte at a time, kept its socket for good), a cap on
their size (httptools buffers a header line however long it grows: 60 MB of one
header was held per connection), a cap on open connections and a cap per address;
:func:`http_protocol` adds the four to its httptools protocol, closing what is over a
cap at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

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


def http_protocol(
    *,
    header_timeout: float,
    max_header_bytes: int,
    max_connections: int,
    per_peer: int,
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a header deadline (armed as the connection
    opens, so one that never sends a request is closed too), a cap on the bytes a
    request's line and headers take (431 past it) and connection caps."""
    peers = PeerLimit(per_peer)
    max_header_bytes = positive_int(max_header_bytes, "max_header_bytes")

    class Protocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _peer: str | None = None
        # bytes received since the last request ended (or the connection opened) while its
        # successor's headers are incomplete; None while a request's body is being read
        _header_bytes: int | None = 0

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

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            self._header_bytes = None
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._header_bytes = 0

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._disarm()  # the keep-alive timeout takes over until the next request

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._peer is not None:
                peers.leave(self._peer)
                self._peer = None
            super().connection_lost(exc)

    return Protocol
