"""(f) The port itself: the big result read by clients that only read bytes.

Each Postgres form of ``benchmarks/pgwire.py``'s (b) sent by the server as psycopg asks
for it, but read by a raw socket that does nothing with the bytes (start-up, one query,
``recv_into`` one buffer until ReadyForQuery), and the HTTP Arrow fetch likewise (the
response body read into one buffer, no Arrow decode). The client's CPU is then next to
nothing, so the rate is what the server sustains and the server's CPU is the port's own
cost per million rows: set beside (b), it splits a psycopg fetch's time into the
server's part and the client's.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import struct
from collections.abc import Callable
from functools import partial
from typing import Any

READY = b"Z\x00\x00\x00\x05I"  # ReadyForQuery, idle
_TAG = re.compile(rb"C\x00\x00\x00.(?:SELECT|COPY) (\d+)\x00", re.S)
_CHUNK = 1 << 20
_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # an Arrow IPC stream's end
_BATCHED = "SET duckflock.copy_messages = batch"


def _message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _drain(sock: socket.socket, buffer: bytearray) -> bytes:
    """Read until ReadyForQuery; the last bytes (the CommandComplete tag is there)."""
    tail = b""
    while not tail.endswith(READY):
        size = sock.recv_into(buffer)
        if not size:
            raise ConnectionError(f"the server closed the connection: {tail!r}")
        tail = (tail + bytes(buffer[max(0, size - 64) : size]))[-64:]
    if b"E\x00" in tail and _TAG.search(tail) is None:
        raise RuntimeError(f"the server answered with an error: {tail!r}")
    return tail


def _query(sql: str, binary: bool) -> bytes:
    if not binary:
        return _message(b"Q", sql.encode() + b"\x00")
    return (  # psycopg's binary fetch: unnamed statement and portal, every column binary
        _message(b"P", b"\x00" + sql.encode() + b"\x00\x00\x00")
        + _message(b"B", b"\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01")
        + _message(b"D", b"P\x00")
        + _message(b"E", b"\x00\x00\x00\x00\x00")
        + _message(b"S")
    )


def raw_rows(sql: str, binary: bool, port: int) -> int:
    """The rows of ``sql`` sent over the port, the bytes dropped as they arrive."""
    buffer = bytearray(_CHUNK)
    with socket.create_connection(("127.0.0.1", port), timeout=300) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        options = b"user\x00bench\x00database\x00bench\x00\x00"
        sock.sendall(struct.pack("!ii", 8 + len(options), 196608) + options)
        _drain(sock, buffer)
        sock.sendall(_query(sql, binary))
        found = _TAG.search(_drain(sock, buffer))
        sock.sendall(_message(b"X"))
    if found is None:
        raise RuntimeError("no row count in the server's CommandComplete")
    return int(found.group(1))


def raw_http_rows(url: str, sql: str, rows: int) -> int:
    """The HTTP Arrow fetch of ``sql``, the body read and dropped (``rows``: what a
    whole stream holds; the stream's end marker is checked, not decoded)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=300)
    try:
        body = json.dumps({"sql": sql, "params": None})
        headers = {"Accept": "application/vnd.apache.arrow.stream"}
        conn.request("POST", "/v1/query", body, {"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {response.read()[:200]!r}")
        buffer, tail = bytearray(_CHUNK), b""
        while size := response.readinto(buffer):
            tail = (tail + bytes(buffer[max(0, size - 8) : size]))[-8:]
    finally:
        conn.close()
    if tail != _EOS:
        raise RuntimeError(f"the Arrow stream did not end: {tail!r}")
    return rows


def forms(sql: str) -> dict[str, Callable[[int], int]]:
    """Each form of (b), read raw: the same query and result format psycopg asks for."""
    return {
        "text (raw socket)": partial(raw_rows, sql, False),
        "binary (raw socket)": partial(raw_rows, sql, True),
        "COPY text (raw socket)": partial(raw_rows, f"COPY ({sql}) TO STDOUT", False),
        "COPY csv (raw socket)": partial(raw_rows, f"COPY ({sql}) TO STDOUT (FORMAT CSV)", False),
        "COPY binary (raw socket)": partial(
            raw_rows, f"COPY ({sql}) TO STDOUT (FORMAT BINARY)", False
        ),
        # a batch a CopyData message (duckflock's opt-in), set in the same simple query
        "COPY text (raw, batch msgs)": partial(
            raw_rows, f"{_BATCHED}; COPY ({sql}) TO STDOUT", False
        ),
        "COPY binary (raw, batch msgs)": partial(
            raw_rows, f"{_BATCHED}; COPY ({sql}) TO STDOUT (FORMAT BINARY)", False
        ),
    }


def port_alone(
    pg_port: int,
    http_fetch: Callable[[], int],
    rounds: int,
    measure: Callable[[Callable[[], int]], Any],
    sql: str,
) -> None:
    """(f): each form read raw beside a raw HTTP Arrow fetch (``measure``: a fetch's
    ``rate``, ``client_cpu`` and ``server_cpu``), then the median round's ratio."""
    taken: dict[str, list[tuple[float, float, float, float]]] = {}
    for _ in range(rounds):
        for label, fetch in forms(sql).items():
            http = measure(http_fetch)
            http_rate, http_client, http_server = http.rate, http.client_cpu, http.server_cpu
            pg = measure(partial(fetch, pg_port))
            rate, client, served = pg.rate, pg.client_cpu, pg.server_cpu
            taken.setdefault(label, []).append((rate / http_rate, rate, served, http_server))
            print(
                f"(f) {label:26s} {rate:>10,.0f} rows/s | http arrow raw {http_rate:>10,.0f} "
                f"rows/s | ratio {rate / http_rate:4.2f} | CPU s server/client: postgres "
                f"{served:.2f}/{client:.2f}, http {http_server:.2f}/{http_client:.2f}",
                flush=True,
            )
    for label, rows in taken.items():
        ratio, rate, served, http_served = sorted(rows)[len(rows) // 2]
        print(  # on a busy machine the CPU seconds hold where the rates do not
            f"(f) median, postgres {label:26s} {rate:>10,.0f} rows/s | ratio to raw http "
            f"arrow {ratio:4.2f} | server CPU s {served:.2f} vs http's {http_served:.2f}",
            flush=True,
        )
