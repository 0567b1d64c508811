"""Postgres port benchmark: the same queries over the Postgres protocol and over HTTP.

Run: .venv/bin/python benchmarks/pgwire.py [--quick]

One real `duckflock serve --pg-port` process, in the same run:
(a) queries per second of a small aggregate (10,000 rows, GROUP BY) from 4 client
    processes: psycopg (prepared, binary) over the Postgres port vs duckflock.Client
    (Arrow) over HTTP;
(b) rows per second of a 1,000,000-row, 3-column result to one client: psycopg text and
    binary, ADBC (COPY binary into Arrow) over the Postgres port vs the HTTP Arrow endpoint.
"""

from __future__ import annotations

import multiprocessing as mp
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

import duckflock

CLIENTS = 4
BIG_ROWS = 1_000_000
SMALL = "SELECT p, count(*) AS n, avg(i) AS mean FROM small GROUP BY p ORDER BY p"
BIG = "SELECT p, i, note FROM big"
CONFIG = f"""
[[tables]]
sql = "CREATE TABLE IF NOT EXISTS small AS SELECT (range % 16)::INTEGER AS p, range::INTEGER AS i FROM range(10000)"

[[tables]]
sql = "CREATE TABLE IF NOT EXISTS big AS SELECT (range % 16)::INTEGER AS p, range::INTEGER AS i, 'note ' || range AS note FROM range({BIG_ROWS})"
"""  # noqa: E501


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _dsn(port: int) -> str:
    return f"host=127.0.0.1 port={port} user=bench password=x dbname=bench sslmode=disable"


def _pg_client(port: int, seconds: float, barrier: Any, out: Any) -> None:
    with psycopg.connect(_dsn(port), autocommit=True) as conn:
        cursor = conn.cursor(binary=True)
        cursor.execute(SMALL, prepare=True).fetchall()
        barrier.wait()
        done, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            cursor.execute(SMALL, prepare=True).fetchall()
            done += 1
    out.put(done)


def _http_client(url: str, seconds: float, barrier: Any, out: Any) -> None:
    with duckflock.Client(url) as client:
        client.query(SMALL)
        barrier.wait()
        done, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            client.query(SMALL)
            done += 1
    out.put(done)


def queries_per_second(target: Callable[..., None], where: Any, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(CLIENTS + 1)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=target, args=(where, seconds, barrier, out)) for _ in range(CLIENTS)
    ]
    for proc in procs:
        proc.start()
    barrier.wait()
    started = time.perf_counter()
    total = sum(out.get(timeout=seconds + 60) for _ in procs)
    elapsed = time.perf_counter() - started
    for proc in procs:
        proc.join(30)
    assert all(proc.exitcode == 0 for proc in procs)
    return total / elapsed


def rows_per_second(fetch: Callable[[], int]) -> float:
    started = time.perf_counter()
    rows = fetch()
    elapsed = time.perf_counter() - started
    assert rows == BIG_ROWS, rows
    return rows / elapsed


def start_server(path: Path) -> tuple[subprocess.Popen[bytes], str, int]:
    port, pg_port = _free_port(), _free_port()
    config = path.with_suffix(".toml")
    config.write_text(CONFIG)
    command = [sys.executable, "-m", "duckflock", "serve", str(path), "--port", str(port)]
    command += ["--pg-port", str(pg_port), "--config", str(config), "--log-level", "warning"]
    command += ["--row-cap", str(2 * BIG_ROWS), "--byte-cap", str(2**31), "--query-timeout", "300"]
    command += ["--concurrency", "8", "--per-client", "8"]
    proc = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    with duckflock.Client(url, timeout=1) as client:
        for _ in range(600):
            try:
                client.health()
                return proc, url, pg_port
            except duckflock.TransportError:
                time.sleep(0.05)  # the server is still starting
    raise RuntimeError("server did not start")


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    seconds = 2.0 if quick else 8.0
    with tempfile.TemporaryDirectory(prefix="duckflock-bench-") as tmp:
        proc, url, pg_port = start_server(Path(tmp) / "served.duckdb")
        try:
            pg_qps = queries_per_second(_pg_client, pg_port, seconds)
            http_qps = queries_per_second(_http_client, url, seconds)
            print(
                f"(a) small aggregate, {CLIENTS} client processes: postgres "
                f"{pg_qps:>7,.0f} queries/s | http {http_qps:>7,.0f} queries/s | "
                f"ratio {pg_qps / http_qps:4.2f}",
                flush=True,
            )

            def psycopg_rows(binary: bool) -> int:
                with psycopg.connect(_dsn(pg_port), autocommit=True) as conn:
                    return len(conn.cursor(binary=binary).execute(BIG).fetchall())

            def adbc_rows() -> int:
                import adbc_driver_postgresql.dbapi as adbc

                uri = f"postgresql://bench:x@127.0.0.1:{pg_port}/bench?sslmode=disable"
                with adbc.connect(uri) as conn, conn.cursor() as cursor:
                    cursor.execute(BIG)
                    return int(cursor.fetch_arrow_table().num_rows)

            def http_rows() -> int:
                with duckflock.Client(url, timeout=300) as client:
                    return int(client.query(BIG).num_rows)

            figures = {
                "postgres text (psycopg)": rows_per_second(lambda: psycopg_rows(False)),
                "postgres binary (psycopg)": rows_per_second(lambda: psycopg_rows(True)),
                "postgres COPY binary (ADBC)": rows_per_second(adbc_rows),
                "http arrow (Client.query)": rows_per_second(http_rows),
            }
            baseline = figures["http arrow (Client.query)"]
            for label, rate in figures.items():
                print(
                    f"(b) {BIG_ROWS:,}-row result, {label:28s} {rate:>12,.0f} rows/s | "
                    f"ratio to http arrow {rate / baseline:5.2f}",
                    flush=True,
                )
        finally:
            proc.terminate()
            proc.wait(60)


if __name__ == "__main__":
    main(sys.argv[1:])
