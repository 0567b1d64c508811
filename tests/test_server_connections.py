"""The HTTP protocol's own additions over a transport that records what is written:
a response's head and the first piece of its body leave in one write; a head whose body
is slow to come, or that has no body, still leaves at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from duckflock.server.connections import http_protocol

REQUEST = b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n"


class Wire(asyncio.Transport):
    """A connection's transport: each write (or writelines) is one entry of ``sent``."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.closed = False
        self.protocol: asyncio.BaseProtocol | None = None

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sent.append(bytes(data))

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.sent.append(b"".join(list_of_data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        peers = {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8765)}
        return peers.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


App = Callable[[Any, Any, Any], Awaitable[None]]


async def _exchange(app: App, request: bytes, turns: Callable[[Wire], Awaitable[None]]) -> Wire:
    protocol_class = http_protocol(
        header_timeout=5, max_header_bytes=16_384, max_connections=10, per_peer=10
    )
    config = uvicorn.Config(app, lifespan="off", log_level="warning")
    protocol = protocol_class(  # type: ignore[call-arg]
        config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop()
    )
    wire = Wire()
    wire.protocol = protocol
    protocol.connection_made(wire)
    protocol.data_received(request)
    await turns(wire)
    protocol.connection_lost(None)
    return wire


async def _settle(wire: Wire) -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def _start(status: int = 200, length: int | None = None) -> dict[str, Any]:
    headers = [] if length is None else [(b"content-length", str(length).encode())]
    return {"type": "http.response.start", "status": status, "headers": headers}


def test_a_head_and_its_body_leave_in_one_write() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(_start(length=5))
        await send({"type": "http.response.body", "body": b"hello"})

    wire = asyncio.run(_exchange(app, REQUEST, _settle))
    assert len(wire.sent) == 1, wire.sent
    assert wire.sent[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert wire.sent[0].endswith(b"\r\n\r\nhello")


def test_a_head_without_a_body_leaves_when_the_response_ends() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(_start(length=5))  # HEAD: the length of what GET would send
        await send({"type": "http.response.body", "body": b""})

    head_request = REQUEST.replace(b"GET", b"HEAD")
    wire = asyncio.run(_exchange(app, head_request + head_request, _settle))
    assert len(wire.sent) == 2, wire.sent  # both answers, in order, each whole
    assert all(sent.startswith(b"HTTP/1.1 200 OK\r\n") for sent in wire.sent)
    assert all(sent.endswith(b"\r\n\r\n") for sent in wire.sent)


def test_a_head_whose_body_is_slow_leaves_at_once() -> None:
    """An event stream's head reaches the client before its first event."""
    body_may_come = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(_start())
        await body_may_come.wait()
        await send({"type": "http.response.body", "body": b"event", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def turns(wire: Wire) -> None:
        await _settle(wire)
        assert len(wire.sent) == 1  # the head alone, before any body
        assert wire.sent[0].startswith(b"HTTP/1.1 200 OK\r\n")
        assert wire.sent[0].endswith(b"\r\n\r\n")
        body_may_come.set()
        await _settle(wire)

    wire = asyncio.run(_exchange(app, REQUEST, turns))
    assert wire.sent[1:] == [b"5\r\nevent\r\n", b"0\r\n\r\n"]  # chunked, in order


def test_the_header_deadline_is_armed_only_while_headers_are_incomplete() -> None:
    """A request whose headers come in one read takes no timer; the next request's
    headers trickled on the same keep-alive connection still get 408 at the deadline."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(_start(length=2))
        await send({"type": "http.response.body", "body": b"ok"})

    async def run() -> Wire:
        protocol_class = http_protocol(
            header_timeout=0.2, max_header_bytes=16_384, max_connections=10, per_peer=10
        )
        config = uvicorn.Config(app, lifespan="off", log_level="warning")
        protocol: Any = protocol_class(  # type: ignore[call-arg]
            config=config,
            server_state=ServerState(),
            app_state={},
            _loop=asyncio.get_running_loop(),
        )
        closed = asyncio.get_running_loop().create_future()

        class Watched(Wire):
            def close(self) -> None:
                super().close()
                if not closed.done():
                    closed.set_result(None)

        wire = Watched()
        wire.protocol = protocol
        armed = []
        arm = protocol._arm
        protocol._arm = lambda: armed.append(1) or arm()
        protocol.connection_made(wire)
        assert protocol._header_timer is not None  # no request yet: the deadline runs
        for _ in range(3):
            protocol.data_received(REQUEST)
            assert protocol._header_timer is None
            await _settle(wire)
        assert len(armed) == 1  # at the start only: whole headers in one read take no timer
        assert len(wire.sent) == 3 and not closed.done()
        protocol.data_received(REQUEST[:10])  # the 4th request's headers trickle
        assert protocol._header_timer is not None
        await asyncio.wait_for(closed, 10)  # closed at the 0.2 s deadline
        protocol.connection_lost(None)
        return wire

    wire = asyncio.run(run())
    assert wire.sent[-1].startswith(b"HTTP/1.1 408 Request Timeout"), wire.sent
