"""Postgres port benchmark: the same queries over the Postgres protocol and over HTTP.

Run: .venv/bin/python benchmarks/pgwire.py [--quick]

One real `duckflock serve --pg-port` process, in the same run:
(a) queries per second of a small aggregate (10,000 rows, GROUP BY) from 4 client
    processes: psycopg (prepared, binary) over the Postgres port vs duckflock.Client
    (Arrow) over HTTP;
(b) rows per second of a 1,000,000-row result (BIGINT, DOUBLE, VARCHAR, TIMESTAMP,
    BOOLEAN) to one client: psycopg text and binary (fetchall), psycopg COPY ... TO STDOUT
    in text, CSV and binary (the raw COPY data), ADBC (COPY binary into Arrow) over the
    Postgres port vs the HTTP Arrow endpoint, each with its ratio to HTTP Arrow; then
    psycopg's documented fast reads (benchmarks/pgwire_forms.py: stream in chunks,
    fetchmany, binary COPY rows(), COPY CSV parsed into Arrow by pyarrow), and the COPY
    block reads again after ``SET duckflock.copy_messages = batch`` ("batch msgs": a
    CopyData message a batch, duckflock's opt-in, instead of PostgreSQL's one a row);
(c) the server's encoder alone, in this process, over the same rows: DataRow messages
    (text and binary) and COPY data, whole columns at once vs the per-value reference;
(d) with ``--postgres``: the same rows from a real PostgreSQL server (Debian's, started
    as the lake tests start it) read by the same psycopg, the ceiling "as fast as
    PostgreSQL" sets (for ``fetchall()``, psycopg building Python objects after every
    row has arrived: printed as "fetchall() alone", here and in (b)).

(e) with ``--client`` (``--client-only``: (e) alone): each Postgres form's client
    reading the server's bytes of that fetch, recorded once and replayed by a process
    doing nothing else (benchmarks/pgwire_replay.py), beside an HTTP Arrow fetch: the
    ceiling of that client's ratio, which no server work can raise.

(f) with ``--raw`` (alone): each form read by a client that only reads the bytes, beside
    HTTP Arrow read so (benchmarks/pgwire_raw.py): the server's own rate and CPU.

``--bulk`` runs (b) and (c) only, ``--rounds N`` repeats (b) (and (d), (e)); the load
average is printed next to the figures. (b) ends with the median round's ratio of each
form, the lines ``benchmarks/suite.py`` reads.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import psycopg

import duckflock
import options
import pgwire_forms
import pgwire_raw
import pgwire_replay

CLIENTS = 4
BIG_ROWS = 1_000_000
SMALL = "SELECT p, count(*) AS n, avg(i) AS mean FROM small GROUP BY p ORDER BY p"
BIG = "SELECT i, x, note, ts, flag FROM big"
BIG_TABLE = (
    "CREATE TABLE IF NOT EXISTS big AS SELECT range::BIGINT AS i,"
    " (range * 1.25 - 7.5)::DOUBLE AS x, 'note ' || range AS note,"
    " TIMESTAMP '2026-01-01' + range * INTERVAL 1 SECOND"
    " + (range % 1000) * INTERVAL 1 MILLISECOND AS ts, range % 3 = 0 AS flag"
    f" FROM range({BIG_ROWS})"
)
CONFIG = f"""
[[tables]]
sql = "CREATE TABLE IF NOT EXISTS small AS SELECT (range % 16)::INTEGER AS p, range::INTEGER AS i FROM range(10000)"

[[tables]]
sql = "{BIG_TABLE}"
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


@dataclass(frozen=True)
class Fetch:
    """One fetch of the big result: its rate, and the CPU seconds each side spent on it
    (on a busy machine the rate follows the CPU both sides need)."""

    rate: float
    client_cpu: float
    server_cpu: float


def rows_per_second(fetch: Callable[[], int], server: psutil.Process) -> Fetch:
    started, cpu = time.perf_counter(), time.process_time()
    served = sum(server.cpu_times()[:2])
    rows = fetch()
    elapsed = time.perf_counter() - started
    assert rows == BIG_ROWS, rows
    client = time.process_time() - cpu
    return Fetch(rows / elapsed, client, sum(server.cpu_times()[:2]) - served)


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


def _load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


CONVERSION: dict[str, float] = {}  # CPU seconds of the last fetchall() alone (rows received)


def _fetchall(conn: psycopg.Connection[Any], binary: bool) -> int:
    """The big result with ``fetchall()``; the CPU time ``fetchall()`` alone took (psycopg
    has every row by then: what is left is building the Python objects) is kept in
    :data:`CONVERSION`."""
    cursor = conn.cursor(binary=binary).execute(BIG)
    started = time.process_time()
    rows = len(cursor.fetchall())
    CONVERSION["last"] = time.process_time() - started
    return rows


def _copy(conn: psycopg.Connection[Any], form: str) -> int:
    return pgwire_forms.copy_blocks(BIG, form, conn)


def real_postgres(rounds: int) -> None:
    """(d) The same rows from a real PostgreSQL server (Debian's, as the lake tests
    start it: tests/pgcluster.py) over TCP on 127.0.0.1, read by the same psycopg: what
    "as fast as PostgreSQL" gives, and the client's share of it."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from pgcluster import Cluster

    port = _free_port()

    class TcpCluster(Cluster):
        def start(self) -> None:
            os.environ["PGPORT"] = str(port)  # pg_ctl, createdb and the socket's name
            options = f"-k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
            self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start"
            )

    load = (
        "CREATE TABLE big AS SELECT g::BIGINT AS i, (g * 1.25 - 7.5)::float8 AS x,"
        " 'note ' || g AS note, TIMESTAMP '2026-01-01' + g * INTERVAL '1 second'"
        " + (g % 1000) * INTERVAL '1 millisecond' AS ts, g % 3 = 0 AS flag"
        f" FROM generate_series(0, {BIG_ROWS - 1}) g"
    )
    dsn = f"host=127.0.0.1 port={port} user=postgres dbname=lake sslmode=disable"
    forms: dict[str, Callable[[psycopg.Connection[Any]], int]] = {
        "text (psycopg fetchall)": lambda conn: _fetchall(conn, False),
        "binary (psycopg fetchall)": lambda conn: _fetchall(conn, True),
        "COPY text (psycopg)": lambda conn: _copy(conn, ""),
        "COPY csv (psycopg)": lambda conn: _copy(conn, "(FORMAT CSV)"),
        "COPY binary (psycopg)": lambda conn: _copy(conn, "(FORMAT BINARY)"),
    }
    with TcpCluster():
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(load)
            conn.execute("VACUUM ANALYZE big")
            version = conn.info.server_version
        for round_ in range(rounds):
            print(f"(d) real PostgreSQL {version // 10000}, round {round_ + 1}, {_load()}")
            for label, fetch in forms.items():
                with psycopg.connect(dsn, autocommit=True) as conn:
                    backend = psutil.Process(conn.info.backend_pid)
                    result = rows_per_second(partial(fetch, conn), backend)
                converting = CONVERSION.pop("last", None)
                print(
                    f"(d) {BIG_ROWS:,} rows, real PostgreSQL {label:29s} {result.rate:>10,.0f} "
                    f"rows/s | CPU s server/client {result.server_cpu:.2f}/{result.client_cpu:.2f}"
                    + ("" if converting is None else f" | fetchall() alone {converting:.2f} CPU s"),
                    flush=True,
                )


def _psycopg_rows(binary: bool, port: int) -> int:
    with psycopg.connect(_dsn(port), autocommit=True) as conn:
        return _fetchall(conn, binary)


def _copy_rows(form: str, port: int) -> int:
    with psycopg.connect(_dsn(port), autocommit=True) as conn:
        return _copy(conn, form)


def _adbc_rows(port: int) -> int:
    import adbc_driver_postgresql.dbapi as adbc

    uri = f"postgresql://bench:x@127.0.0.1:{port}/bench?sslmode=disable"
    with adbc.connect(uri) as conn, conn.cursor() as cursor:
        cursor.execute(BIG)
        return int(cursor.fetch_arrow_table().num_rows)


# each Postgres form of (b): a fetch of the big result from the server at a port
FORMS: dict[str, Callable[[int], int]] = {
    "text (psycopg fetchall)": partial(_psycopg_rows, False),
    "binary (psycopg fetchall)": partial(_psycopg_rows, True),
    "COPY text (psycopg)": partial(_copy_rows, ""),
    "COPY csv (psycopg)": partial(_copy_rows, "(FORMAT CSV)"),
    "COPY binary (psycopg)": partial(_copy_rows, "(FORMAT BINARY)"),
    "COPY binary (ADBC, to Arrow)": _adbc_rows,
    # psycopg's documented fast reads (stream, fetchmany, COPY rows() and into Arrow)
    **pgwire_forms.forms(BIG, _dsn),
}


def client_alone(pg_port: int, rounds: int, http: Callable[[], int], server: Any) -> None:
    """(e): each form's client against a replay of the server's recorded bytes (a process
    doing nothing else: benchmarks/pgwire_replay.py), beside an HTTP Arrow fetch: the
    ratio no server can beat with that client."""
    for label, fetch in FORMS.items():
        if fetch is _adbc_rows:  # it opens a second connection (a cancel) mid-fetch
            continue
        turns = pgwire_replay.record(fetch, pg_port)
        with pgwire_replay.Replay(turns, rounds) as replay:
            replayer = psutil.Process(replay.process.pid)
            for _ in range(rounds):
                arrow = rows_per_second(http, server)
                alone = rows_per_second(partial(fetch, replay.port), replayer)
                converting = CONVERSION.pop("last", None)
                print(
                    f"(e) {BIG_ROWS:,} rows, client alone {label:29s} {alone.rate:>10,.0f} rows/s "
                    f"| http arrow {arrow.rate:>10,.0f} rows/s "
                    f"| ceiling {alone.rate / arrow.rate:4.2f} "
                    f"| client CPU s {alone.client_cpu:.2f}"
                    + ("" if converting is None else f" | fetchall() alone {converting:.2f} CPU s"),
                    flush=True,
                )
    print(f"(e) {_load()}", flush=True)


def encoder_alone() -> None:
    """(c): the encoder over the benchmark's rows in this process, no network."""
    import duckdb

    from duckflock.server.pgwire.encode import RowEncoder
    from duckflock.server.pgwire.reference import PerValueEncoder
    from duckflock.server.pgwire.running import GATHER_ROWS

    con = duckdb.connect()
    con.execute(BIG_TABLE)
    cursor = con.execute(BIG)
    duck_types = [str(d[1]) for d in cursor.description or []]
    # in the groups the server encodes (running.GATHER_ROWS)
    table = cursor.to_arrow_reader(2048).read_all().combine_chunks()
    batches = table.to_batches(max_chunksize=GATHER_ROWS)
    sample = [table.slice(0, BIG_ROWS // 10).combine_chunks().to_batches()[0]]  # it is slow
    for name, fmt, call in (
        ("DataRow text", 0, lambda e, b: e.data_rows(b)),
        ("DataRow binary", 1, lambda e, b: e.data_rows(b)),
        ("COPY text", 0, lambda e, b: e.copy_text(b)),
        ("COPY csv", 0, lambda e, b: e.copy_csv(b, None)),
        ("COPY binary", 1, lambda e, b: e.copy_binary(b)),
    ):
        rates, cpu = [], 0.0
        for encoder, part in ((RowEncoder, batches), (PerValueEncoder, sample)):
            coder = encoder(duck_types, [fmt])
            started, used = time.perf_counter(), time.process_time()
            for batch in part:
                call(coder, batch)
            rates.append(sum(b.num_rows for b in part) / (time.perf_counter() - started))
            cpu = cpu or time.process_time() - used  # the columnar encoder's, all rows
        print(
            f"(c) encoder alone, {name:15s} columnar {rates[0]:>10,.0f} rows/s "
            f"({cpu:.2f} CPU s) | per value {rates[1]:>8,.0f} rows/s | "
            f"{rates[0] / rates[1]:5.1f}x",
            flush=True,
        )
    print(f"(c) {_load()}", flush=True)


def main(argv: list[str]) -> None:
    parser = options.parser(__doc__, "pgwire.py")
    parser.add_argument("--quick", action="store_true", help="shorter (a)")
    parser.add_argument("--bulk", action="store_true", help="(b) and (c) only")
    parser.add_argument("--rounds", type=options.positive_int, default=1, help="rounds of (b)")
    parser.add_argument("--client", action="store_true", help="add (e)")
    parser.add_argument("--client-only", action="store_true", help="(e) alone")
    parser.add_argument("--postgres", action="store_true", help="add (d)")
    parser.add_argument("--raw", action="store_true", help="(f) alone: clients that only read")
    args = parser.parse_args(argv)
    quick, bulk, rounds = args.quick, args.bulk, args.rounds
    client, client_only = args.client, args.client_only
    bulk = bulk or client_only or args.raw
    seconds = 2.0 if quick else 8.0
    with tempfile.TemporaryDirectory(prefix="duckflock-bench-") as tmp:
        proc, url, pg_port = start_server(Path(tmp) / "served.duckdb")
        server = psutil.Process(proc.pid)
        try:
            if not bulk:
                pg_qps = queries_per_second(_pg_client, pg_port, seconds)
                http_qps = queries_per_second(_http_client, url, seconds)
                print(
                    f"(a) small aggregate, {CLIENTS} client processes: postgres "
                    f"{pg_qps:>7,.0f} queries/s | http {http_qps:>7,.0f} queries/s | "
                    f"ratio {pg_qps / http_qps:4.2f}",
                    flush=True,
                )

            def http_rows() -> int:
                with duckflock.Client(url, timeout=300) as client:
                    return int(client.query(BIG).num_rows)

            forms = {label: partial(fetch, pg_port) for label, fetch in FORMS.items()}
            # each form right after an HTTP Arrow fetch of the same rows: on a shared
            # machine the load moves within seconds, so each ratio is taken side by side
            ratios: dict[str, list[tuple[float, float]]] = {label: [] for label in forms}
            if args.raw:
                raw_http = partial(pgwire_raw.raw_http_rows, url, BIG, BIG_ROWS)
                measured = partial(rows_per_second, server=server)
                pgwire_raw.port_alone(pg_port, raw_http, rounds, measured, BIG)
            for round_ in range(0 if client_only or args.raw else rounds):
                print(f"(b) round {round_ + 1}, {_load()}", flush=True)
                for label, fetch in forms.items():
                    http = rows_per_second(http_rows, server)
                    pg = rows_per_second(fetch, server)
                    ratios[label].append((pg.rate / http.rate, pg.rate))
                    converting = CONVERSION.pop("last", None)
                    print(
                        f"(b) {BIG_ROWS:,} rows, postgres {label:29s} {pg.rate:>10,.0f} rows/s | "
                        f"http arrow {http.rate:>10,.0f} rows/s | ratio {pg.rate / http.rate:4.2f} "
                        f"| CPU s server/client: postgres {pg.server_cpu:.2f}/{pg.client_cpu:.2f}, "
                        f"http {http.server_cpu:.2f}/{http.client_cpu:.2f}"
                        + (
                            ""
                            if converting is None
                            else f" | fetchall() alone {converting:.2f} CPU s"
                        ),
                        flush=True,
                    )
            for label, taken in ratios.items():  # the median round's (what suite.py reads)
                if not taken:
                    continue
                ratio, rate = sorted(taken)[len(taken) // 2]
                print(
                    f"(b) {BIG_ROWS:,}-row result, postgres {label:29s} {rate:>10,.0f} rows/s "
                    f"| ratio to http arrow {ratio:4.2f}",
                    flush=True,
                )
            if client or client_only:
                client_alone(pg_port, rounds, http_rows, server)
        finally:
            proc.terminate()
            proc.wait(60)
    if args.postgres:
        real_postgres(rounds)
    if not (client_only or args.raw):
        encoder_alone()


if __name__ == "__main__":
    main(sys.argv[1:])
