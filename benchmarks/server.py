"""Server benchmark: 4 client processes against a real `duckflock serve`, vs embedded.

Run: .venv/bin/python benchmarks/server.py [--quick] [--app | --protocol]

(a) one row per request, each waiting for its acknowledgement;
(b) 1,000-row JSON batches;
(c) 100,000-row Arrow IPC batches.
Each is compared with the same work done embedded (4 threads calling db.insert) in the
same run. Targets on 2 cores: (a) >= 2,000 acknowledged requests/s; (c) >= 50% of the
embedded chunk ingest. (a') repeats (a) with lean stdlib clients and prints the server
process's CPU time (user + system, psutil) per acknowledged request (target <= 0.2 ms),
split into the event loop's thread and the others (the writer's commits, DuckDB's
workers), with the rows each commit carried. ``--app`` prints only the app's own share:
the event-loop thread's CPU per one-row acked POST through ``create_app`` in process (no
sockets, no uvicorn), the part of (a') that duckflock's handler code decides;
``--protocol`` the same requests fed as bytes to the server's HTTP protocol (uvicorn's
httptools one as ``serve`` extends it) in process: the app plus uvicorn's cycle, without
the kernel's share.
"""

from __future__ import annotations

import asyncio
import http.client
import multiprocessing as mp
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa

import duckflock
import options
from duckflock.cli.bench import run_threads

TABLE = "CREATE TABLE IF NOT EXISTS events (p INTEGER, i INTEGER, note VARCHAR)"
CLIENTS = 4


def _rows(p: int, start: int, count: int) -> list[dict[str, Any]]:
    return [{"p": p, "i": i, "note": "x"} for i in range(start, start + count)]


def _arrow(p: int, start: int, count: int) -> pa.Table:
    return pa.table(
        {
            "p": pa.array([p] * count, pa.int32()),
            "i": pa.array(range(start, start + count), pa.int32()),
            "note": ["x"] * count,
        }
    )


def work(kind: str, p: int, requests: int, send: Callable[[Any], Any]) -> None:
    """One client's share: ``requests`` calls of the scenario's shape."""
    if kind == "a":
        for i in range(requests):
            send({"p": p, "i": i, "note": "x"})
    elif kind == "b":
        for r in range(requests):
            send(_rows(p, r * 1_000, 1_000))
    else:
        for r in range(requests):
            send(_arrow(p, r * 100_000, 100_000))


def _client(url: str, kind: str, p: int, requests: int, barrier: Any, out: Any) -> None:
    with duckflock.Client(url) as client:
        client.health()
        if kind == "c":  # build the Arrow payloads before the clock starts
            tables = [_arrow(p, r * 100_000, 100_000) for r in range(requests)]
        barrier.wait()
        started = time.perf_counter()
        if kind == "c":
            for table in tables:
                client.insert("events", table)
        else:
            work(kind, p, requests, lambda data: client.insert("events", data))
        out.put(time.perf_counter() - started)


def _lean_client(port: int, p: int, requests: int, barrier: Any, out: Any) -> None:
    """Scenario (a) with the standard library's http.client: what the server can take
    when the clients cost little CPU (httpx spends ~0.75 ms per request here)."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/json"}
    barrier.wait()
    for i in range(requests):
        conn.request("POST", "/v1/tables/events/rows", f'{{"p": {p}, "i": {i}}}', headers)
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status
    out.put(None)


def _processes(target: Callable[..., None], args: list[tuple[Any, ...]]) -> float:
    """Seconds for one spawned process per ``args`` to finish, from a common start."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(args) + 1)
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, barrier, out)) for a in args]
    for proc in procs:
        proc.start()
    barrier.wait()
    started = time.perf_counter()
    for proc in procs:
        proc.join()
    elapsed = time.perf_counter() - started
    assert all(proc.exitcode == 0 for proc in procs)
    return elapsed


def lean_http(url: str, clients: int, requests: int) -> float:
    port = int(url.rsplit(":", 1)[1])
    return _processes(_lean_client, [(port, p, requests) for p in range(clients)])


def over_http(url: str, kind: str, requests: int) -> float:
    return _processes(_client, [(url, kind, p, requests) for p in range(CLIENTS)])


def embedded(path: Path, kind: str, requests: int) -> float:
    with duckflock.connect(path) as db:
        db.execute(TABLE)
        payloads = (
            {p: [_arrow(p, r * 100_000, 100_000) for r in range(requests)] for p in range(CLIENTS)}
            if kind == "c"
            else {}
        )

        def run(p: int) -> None:
            if kind == "c":
                for table in payloads[p]:
                    db.insert("events", table)
            else:
                work(kind, p, requests, lambda data: db.insert("events", data))

        return run_threads(CLIENTS, run, "embedded")


def start_server(path: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = path.with_suffix(".toml")
    config.write_text(f'[[tables]]\nsql = "{TABLE}"\n')
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "duckflock",
            "serve",
            str(path),
            "--port",
            str(port),
            "--config",
            str(config),
            "--log-level",
            "warning",
        ]
    )
    url = f"http://127.0.0.1:{port}"
    with duckflock.Client(url, timeout=1) as client:
        for _ in range(300):
            try:
                client.health()
                return proc, url
            except duckflock.TransportError:
                time.sleep(0.05)  # the server is still starting
    raise RuntimeError("server did not start")


def _thread_cpu(server: psutil.Process) -> tuple[float, float]:
    """CPU seconds (user + system) of the server's main thread (the event loop: HTTP,
    the app, queueing and acks) and of all its other threads (the writer's commits,
    DuckDB's workers); threads that ended since are not counted."""
    loop = others = 0.0
    for thread in server.threads():
        spent = thread.user_time + thread.system_time
        if thread.id == server.pid:
            loop += spent
        else:
            others += spent
    return loop, others


def _commits(url: str) -> int:
    with duckflock.Client(url) as client:
        return int(client.stats()["batches_committed"])


async def _app_requests(app: Any, requests: int, concurrent: int) -> float:
    """Event-loop thread CPU seconds per one-row acked POST sent straight to ``app``."""
    body = b'{"p": 1, "i": 2}'
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]
    headers.append((b"content-length", b"%d" % len(body)))
    scope = {"type": "http", "http_version": "1.1", "method": "POST", "scheme": "http"}
    scope.update(path="/v1/tables/events/rows", raw_path=b"/v1/tables/events/rows")
    scope.update(query_string=b"", root_path="", headers=headers, client=("127.0.0.1", 1))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        assert message.get("status", 200) == 200, message

    async def client(count: int) -> None:
        for _ in range(count):
            await app(dict(scope), receive, send)

    await client(100)  # warm up
    started = time.thread_time()
    await asyncio.gather(*(client(requests // concurrent) for _ in range(concurrent)))
    return (time.thread_time() - started) / requests


class _Wire:
    """A connection's transport without a socket: what the protocol writes ends the
    request's wait once the answer's body (a JSON object) is out."""

    def __init__(self, peer: int) -> None:
        self.protocol: Any = None
        self.answered: asyncio.Future[None] | None = None
        self.closing = False
        self.extra = {"peername": ("127.0.0.1", peer), "sockname": ("127.0.0.1", 8765)}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def write(self, data: bytes) -> None:
        assert data.startswith(b"HTTP/1.1 200") or not data.startswith(b"HTTP"), data
        if data.endswith(b"}") and self.answered is not None:
            self.answered.set_result(None)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_protocol(self) -> Any:
        return self.protocol


async def _protocol_requests(app: Any, requests: int, concurrent: int) -> float:
    """Event-loop thread CPU seconds per one-row acked POST fed, as a lean client's
    bytes, to the server's HTTP protocol (uvicorn's httptools one, as ``serve`` extends
    it) over ``app``: HTTP parsing, uvicorn's cycle and the app, without the kernel."""
    import uvicorn
    from uvicorn.server import ServerState

    from duckflock.server.connections import http_protocol

    body = b'{"p": 1, "i": 2}'
    request = (
        b"POST /v1/tables/events/rows HTTP/1.1\r\nHost: 127.0.0.1:8765\r\n"
        b"Accept-Encoding: identity\r\nContent-Length: %d\r\n"
        b"Content-Type: application/json\r\n\r\n%s" % (len(body), body)
    )
    loop = asyncio.get_running_loop()
    protocol_class = http_protocol(
        header_timeout=10, max_header_bytes=65536, max_connections=100, per_peer=100
    )
    config = uvicorn.Config(
        app,
        http=protocol_class,
        lifespan="off",
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )
    config.load()
    state = ServerState()
    state.default_headers = [(b"date", b"Mon, 07 Dec 2026 23:50:00 GMT")]

    async def client(peer: int, count: int) -> None:
        wire = _Wire(peer)
        wire.protocol = protocol = protocol_class(config, state, {}, loop)
        protocol.connection_made(wire)
        for _ in range(count):
            wire.answered = loop.create_future()
            protocol.data_received(request)
            await wire.answered
        protocol.connection_lost(None)

    await client(0, 100)  # warm up
    started = time.thread_time()
    await asyncio.gather(*(client(p, requests // concurrent) for p in range(concurrent)))
    return (time.thread_time() - started) / requests


def app_cpu(requests: int = 4_000, runs: int = 9, protocol: bool = False) -> None:
    from duckflock.server import create_app

    with tempfile.TemporaryDirectory(prefix="duckflock-bench-") as tmp:
        db = duckflock.connect(Path(tmp) / "app.duckdb")
        db.execute(TABLE)
        db.lock_down()
        app = create_app(db)
        try:  # uvicorn's loop, as the server runs
            from uvloop import run
        except ImportError:  # pragma: no cover - Windows
            from asyncio import run
        measure = _protocol_requests if protocol else _app_requests
        spent = sorted(run(measure(app, requests, CLIENTS)) for _ in range(runs))
        db.close()
    what = "through the HTTP protocol" if protocol else "straight to the app"
    print(
        f"({'protocol' if protocol else 'app'}) one row per request, acked, {CLIENTS} "
        f"coroutines {what}: event-loop CPU per request min {spent[0] * 1e6:.1f} us, "
        f"median {spent[runs // 2] * 1e6:.1f} us ({runs} runs of {requests:,})"
    )


def main(argv: list[str]) -> None:
    parser = options.parser(__doc__, "server.py")
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--app", action="store_true", help="only the app's CPU share")
    parser.add_argument(
        "--protocol", action="store_true", help="the app and the HTTP protocol's CPU share"
    )
    args = parser.parse_args(argv)
    if args.app or args.protocol:
        app_cpu(protocol=args.protocol)
        return
    quick = args.quick
    shares = {"a": 200 if quick else 1_000, "b": 10 if quick else 50, "c": 1 if quick else 5}
    rows_per = {"a": 1, "b": 1_000, "c": 100_000}
    labels = {
        "a": "one row per request, acked",
        "b": "1,000-row JSON batches",
        "c": "100,000-row Arrow IPC batches",
    }
    with tempfile.TemporaryDirectory(prefix="duckflock-bench-") as tmp:
        for kind in "abc":
            requests = shares[kind]
            total_requests = CLIENTS * requests
            total_rows = total_requests * rows_per[kind]
            proc, url = start_server(Path(tmp) / f"served_{kind}.duckdb")
            try:
                remote = over_http(url, kind, requests)
                with duckflock.Client(url) as client:
                    landed = client.execute("SELECT count(*) FROM events").fetchone()
                assert landed == (total_rows,), landed
            finally:
                proc.terminate()
                proc.wait(30)
            local = embedded(Path(tmp) / f"embedded_{kind}.duckdb", kind, requests)
            print(
                f"({kind}) {labels[kind]:32s} http: {total_requests / remote:>9,.0f} req/s "
                f"{total_rows / remote:>12,.0f} rows/s | embedded: "
                f"{total_rows / local:>12,.0f} rows/s | ratio {local / remote:6.1%}",
                flush=True,
            )
        proc, url = start_server(Path(tmp) / "served_lean.duckdb")
        try:
            server = psutil.Process(proc.pid)
            for clients in (4, 8):
                requests = clients * shares["a"]
                before, commits = _thread_cpu(server), _commits(url)
                seconds = lean_http(url, clients, requests // clients)
                loop, others = (a - b for a, b in zip(_thread_cpu(server), before, strict=True))
                commits = _commits(url) - commits
                print(
                    f"(a') one row per request, acked, {clients} stdlib http.client "
                    f"processes: {requests / seconds:>9,.0f} req/s, "
                    f"server CPU per acknowledged request "
                    f"{(loop + others) / requests * 1000:.3f} ms (event loop "
                    f"{loop / requests * 1000:.3f}, writer and DuckDB threads "
                    f"{others / requests * 1000:.3f}; {requests / commits:.1f} rows per commit)",
                    flush=True,
                )
        finally:
            proc.terminate()
            proc.wait(30)
    print(
        "targets: (a) >= 2,000 acknowledged requests/s; (c) ratio >= 50%; "
        "server CPU per acknowledged request <= 0.2 ms"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
