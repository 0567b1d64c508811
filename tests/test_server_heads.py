"""The HTTP protocol's kept response heads and its one keep-alive timer per connection
(:mod:`duckflock.server.connections`): the same bytes and state as uvicorn's own cycle,
and the same keep-alive deadline."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
from uvicorn.server import ServerState

from duckflock.server.connections import Heads, HeadsCycle, http_protocol
from test_server_connections import Wire

DATE = [(b"date", b"Tue, 08 Dec 2026 00:00:00 GMT")]
REQUEST = b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n"


def _cycle(kept: Heads | None, wire: Wire, method: str = "POST") -> RequestResponseCycle:
    cycle = RequestResponseCycle(
        scope={"method": method},  # type: ignore[typeddict-item]
        transport=wire,
        flow=FlowControl(wire),
        logger=None,  # type: ignore[arg-type]
        access_logger=None,  # type: ignore[arg-type]
        access_log=False,
        default_headers=DATE,
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=True,
        on_response=lambda: None,
    )
    if kept is not None:

        class Kept(HeadsCycle):
            heads = kept

        cycle.__class__ = Kept
    return cycle


_STATE = ("response_started", "chunked_encoding", "expected_content_length", "keep_alive")

HEADS = [
    (200, [(b"content-length", b"40"), (b"content-type", b"application/json")]),
    (201, [(b"Content-Length", b"2"), (b"X-Duckflock-Replayed", b"true")]),
    (404, [(b"content-type", b"text/plain"), (b"content-length", b"0")]),
    (200, [(b"content-type", b"text/event-stream")]),  # no length: chunked
    (200, [(b"content-length", b"3"), (b"connection", b"close")]),
    (200, [(b"content-length", b"3"), (b"content-length", b"4")]),
    (200, [(b"transfer-encoding", b"chunked")]),
]


@pytest.mark.parametrize(("status", "headers"), HEADS)
def test_a_kept_head_is_the_head_uvicorn_writes(status: int, headers: Any) -> None:
    """Twice (rendered, then kept), and for a HEAD request: the same bytes and the same
    cycle state as uvicorn's own ``send``."""

    async def run() -> None:
        kept = Heads()
        for method in ("POST", "POST", "HEAD"):
            theirs, ours = Wire(), Wire()
            reference, cycle = _cycle(None, theirs, method), _cycle(kept, ours, method)
            message = {"type": "http.response.start", "status": status, "headers": headers}
            await reference.send(message)
            await cycle.send(dict(message))
            assert ours.sent == theirs.sent
            assert [getattr(cycle, k) for k in _STATE] == [getattr(reference, k) for k in _STATE]

    asyncio.run(run())


def test_a_head_uvicorn_refuses_is_refused_alike() -> None:
    async def run() -> None:
        bad = {"type": "http.response.start", "status": 200, "headers": [(b"x", b"a\nb")]}
        bad["headers"].append((b"content-length", b"0"))
        with pytest.raises(RuntimeError, match="Invalid HTTP header value"):
            await _cycle(Heads(), Wire()).send(bad)

    asyncio.run(run())


def test_a_head_is_rendered_again_when_the_date_changes() -> None:
    kept = Heads()
    headers = [(b"content-length", b"0")]
    first = kept.get(DATE, 200, headers)
    assert first is not None and first is kept.get(DATE, 200, headers)
    later = [(b"date", b"Tue, 08 Dec 2026 00:00:01 GMT")]
    second = kept.get(later, 200, headers)
    assert second is not None and b"00:00:01" in second[0] and b"00:00:00" not in second[0]


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_one_keep_alive_timer_per_connection_with_uvicorns_deadline() -> None:
    """Armed by the first answer and kept across requests (not one per request); when
    it fires it closes a connection idle for ``timeout_keep_alive``, waits out the rest
    for one that answered since, and leaves one that is serving a request; closing the
    connection cancels it."""

    async def run() -> None:
        protocol_class = http_protocol(
            header_timeout=5, max_header_bytes=16_384, max_connections=10, per_peer=10
        )
        config = uvicorn.Config(_app, lifespan="off", log_level="warning", timeout_keep_alive=5)
        loop = asyncio.get_running_loop()
        protocol: Any = protocol_class(  # type: ignore[call-arg]
            config=config, server_state=ServerState(), app_state={}, _loop=loop
        )
        wire = Wire()
        wire.protocol = protocol
        protocol.connection_made(wire)
        protocol.data_received(REQUEST)
        for _ in range(20):
            await asyncio.sleep(0)
        timer = protocol.timeout_keep_alive_task
        assert timer is not None and len(wire.sent) == 1
        protocol.data_received(REQUEST)
        assert protocol._idle_since is None  # busy
        protocol._keep_alive_ends()  # fires while the request is served: nothing
        assert not wire.closed and protocol.timeout_keep_alive_task is None
        for _ in range(20):
            await asyncio.sleep(0)
        timer = protocol.timeout_keep_alive_task
        assert timer is not None and len(wire.sent) == 2  # re-armed by the answer
        protocol.data_received(REQUEST)
        for _ in range(20):
            await asyncio.sleep(0)
        assert protocol.timeout_keep_alive_task is timer  # the same timer: none per request
        protocol._idle_since -= 4.0  # idle for 4 of its 5 s: it waits out the last second
        timer.cancel()
        protocol._keep_alive_ends()
        rest = protocol.timeout_keep_alive_task
        assert not wire.closed and rest is not None and 0.5 < rest.when() - rest._loop.time() <= 1
        protocol._idle_since -= 1.0  # and now idle for 5 s
        rest.cancel()
        protocol._keep_alive_ends()
        assert wire.closed  # closed, as uvicorn closes an idle keep-alive connection
        protocol.connection_lost(None)
        assert protocol.timeout_keep_alive_task is None

    asyncio.run(run())
