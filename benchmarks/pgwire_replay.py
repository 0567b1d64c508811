"""The client's own ceiling on a Postgres-port fetch: the server's bytes of one fetch,
recorded once, then replayed to the same client by a process that does nothing else.

:func:`record` runs a fetch through a recording proxy in front of the real server;
the conversation is kept as turns (the client's bytes, then the server's answer).
:class:`Replay` serves those turns from a forked process: it reads as many bytes as the
client sent in each turn and answers with the recorded bytes at once. A fetch against
it costs the server nothing, so its rate is what the client alone reaches: no server
can make that client read the same rows faster.
"""

from __future__ import annotations

import multiprocessing as mp
import selectors
import socket
import threading
from collections.abc import Callable
from types import TracebackType

Turn = tuple[int, bytes]  # bytes the client sends, then the server's recorded answer
SECONDS = 120.0  # every wait here is bounded by this


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    sock.settimeout(SECONDS)
    return sock


def _proxy(listener: socket.socket, upstream_port: int, turns: list[Turn]) -> None:
    """One connection relayed to the server, its turns appended to ``turns``."""
    client, _ = listener.accept()
    server = socket.create_connection(("127.0.0.1", upstream_port), timeout=SECONDS)
    sent, answer = 0, bytearray()
    with client, server, selectors.DefaultSelector() as selector:
        selector.register(client, selectors.EVENT_READ, server)
        selector.register(server, selectors.EVENT_READ, client)
        open_ = 2
        while open_:
            events = selector.select(SECONDS)
            if not events:
                raise TimeoutError("the recorded fetch stalled")
            for key, _ in events:
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                data = source.recv(1 << 20)
                if not data:
                    selector.unregister(source)
                    key.data.shutdown(socket.SHUT_WR)
                    open_ -= 1
                    continue
                key.data.sendall(data)
                if source is client:
                    if answer:  # the client speaks again: the last turn is complete
                        turns.append((sent, bytes(answer)))
                        sent, answer = 0, bytearray()
                    sent += len(data)
                else:
                    answer += data
    turns.append((sent, bytes(answer)))


def record(fetch: Callable[[int], int], upstream_port: int) -> list[Turn]:
    """The turns of ``fetch`` (given the port to connect to) against the real server."""
    turns: list[Turn] = []
    with _listener() as listener:
        relay = threading.Thread(target=_proxy, args=(listener, upstream_port, turns))
        relay.start()
        fetch(listener.getsockname()[1])
        relay.join(SECONDS)
    if relay.is_alive():
        raise TimeoutError("the recording proxy did not finish")
    return turns


def _exactly(sock: socket.socket, count: int) -> None:
    while count > 0:
        data = sock.recv(min(count, 1 << 20))
        if not data:
            raise ConnectionError("the client left in the middle of a turn")
        count -= len(data)


def _serve(listener: socket.socket, turns: list[Turn], connections: int) -> None:
    for _ in range(connections):
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(SECONDS)
            for sent, answer in turns:
                _exactly(conn, sent)
                if answer:
                    conn.sendall(answer)


class Replay:
    """A forked process answering ``connections`` connections with ``turns``."""

    def __init__(self, turns: list[Turn], connections: int) -> None:
        self.listener = _listener()
        self.port: int = self.listener.getsockname()[1]
        ctx = mp.get_context("fork")  # the recorded bytes are shared, not pickled
        self.process = ctx.Process(target=_serve, args=(self.listener, turns, connections))

    def __enter__(self) -> Replay:
        self.process.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.listener.close()
        self.process.join(SECONDS)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(SECONDS)
