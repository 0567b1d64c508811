"""chDB's side (embedded ClickHouse) of the peer benchmarks (benchmarks/peers.py), in its
own process. A MergeTree table ``events (k, v)`` and two materialized views into
SummingMergeTree tables (per ``k``, and per band ``k % 5``: count and sum of ``v``).

Run: .venv/bin/python benchmarks/peer_chdb.py mv ROUNDS
     .venv/bin/python benchmarks/peer_chdb.py acks THREADS ROWS_PER_THREAD

``mv``: each round inserts 10,000 rows (an Arrow table through ``Python(…)``) and reads
both aggregates fresh (``sum`` over the views' tables, merging unmerged parts at read
time); the median round. ``acks``: THREADS threads each insert ROWS_PER_THREAD single
rows, one ``INSERT`` each (returned = acknowledged); rows per second.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

import pyarrow as pa
from chdb import session

import options
from duckflock.cli.bench import run_threads
from peer_rows import BANDS, report, rows, totals

CHUNK = 10_000
SETUP = [
    "CREATE TABLE events (k Int32, v Float64) ENGINE = MergeTree ORDER BY k",
    "CREATE TABLE by_k (k Int32, n UInt64, s Float64) ENGINE = SummingMergeTree ORDER BY k",
    "CREATE TABLE by_band (band Int32, n UInt64, s Float64) "
    "ENGINE = SummingMergeTree ORDER BY band",
    "CREATE MATERIALIZED VIEW mv_k TO by_k AS "
    "SELECT k, count() AS n, sum(v) AS s FROM events GROUP BY k",
    f"CREATE MATERIALIZED VIEW mv_band TO by_band AS "
    f"SELECT k % {BANDS} AS band, count() AS n, sum(v) AS s FROM events GROUP BY band",
]
BY_K = "SELECT k, sum(n) AS n, sum(s) AS s FROM by_k GROUP BY k"
BY_BAND = "SELECT band, sum(n) AS n, sum(s) AS s FROM by_band GROUP BY band"


def fresh(sess: session.Session, sql: str) -> dict[int, tuple[int, float]]:
    table = sess.query(sql, "ArrowTable")
    return {int(g): (int(n), float(s)) for g, n, s in zip(*table.to_pydict().values(), strict=True)}


def mv(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="duckflock-peer-") as folder:
        sess = session.Session(folder)
        for statement in SETUP:
            sess.query(statement)
        times = []
        by_k: dict[int, tuple[int, float]] = {}
        for round_ in range(rounds):
            data = rows(CHUNK, round_ * CHUNK)
            chunk = pa.table(  # noqa: F841 (read by name by chDB's Python() table function)
                {
                    "k": pa.array([k for k, _ in data], pa.int32()),
                    "v": pa.array([v for _, v in data], pa.float64()),
                }
            )
            started = time.perf_counter()
            sess.query("INSERT INTO events SELECT k, v FROM Python(chunk)")
            by_k = fresh(sess, BY_K)
            by_band = fresh(sess, BY_BAND)
            times.append(time.perf_counter() - started)
            assert totals(by_band)["count"] == (round_ + 1) * CHUNK, by_band
        sess.close()
    report(round_ms=statistics.median(times) * 1000, **totals(by_k))


def acks(threads: int, per_thread: int) -> None:
    with tempfile.TemporaryDirectory(prefix="duckflock-peer-") as folder:
        sess = session.Session(folder)
        for statement in SETUP:
            sess.query(statement)

        def work(t: int) -> None:
            for k, v in rows(per_thread, t * per_thread):
                sess.query(f"INSERT INTO events VALUES ({k}, {v!r})")

        elapsed = run_threads(threads, work, "peer")
        by_k = fresh(sess, BY_K)
        sess.close()
    report(rows_per_s=threads * per_thread / elapsed, **totals(by_k))


if __name__ == "__main__":
    workloads = {"mv": ("ROUNDS",), "acks": ("THREADS", "ROWS_PER_THREAD")}
    name, numbers = options.workload(__doc__, "peer_chdb.py", workloads, sys.argv[1:])
    {"mv": mv, "acks": acks}[name](*numbers)
