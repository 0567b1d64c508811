"""duckflock's side of the peer benchmarks (benchmarks/peers.py), in its own process, on
the same rows as the peers (benchmarks/peer_rows.py), into a DuckDB file.

Run: .venv/bin/python benchmarks/peer_duckflock.py groupby ROWS
     .venv/bin/python benchmarks/peer_duckflock.py mv ROUNDS
     .venv/bin/python benchmarks/peer_duckflock.py acks THREADS ROWS_PER_THREAD

``groupby`` (against Pathway): ROWS single rows through ``db.insert(row, wait=False)``,
then ``flush()`` and ``refresh()`` of the analysis ``count, sum GROUP BY k``; the clock
runs from the first row to the fresh result (``cpu_us_per_row``: the process's CPU over
the same span, every thread, per row: steadier than the rate on a busy machine).
``mv`` (against chDB's materialized views):
each round inserts 10,000 rows (Arrow, acknowledged) and refreshes and reads two
analyses (per ``k``, per band ``k % 5``); the median round. ``acks``: THREADS threads
each insert ROWS_PER_THREAD single rows, each call waiting for its commit.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

import duckflock
import options
from duckflock.cli.bench import run_threads
from peer_rows import BANDS, report, rows, totals

CHUNK = 10_000
BY_K = "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k"
BY_BAND = f"SELECT k % {BANDS} AS band, count(*) AS n, sum(v) AS s FROM t GROUP BY band"


def _open(folder: str) -> duckflock.Database:
    db = duckflock.connect(Path(folder) / "peer.duckdb")
    db.execute("CREATE TABLE t (k INTEGER, v DOUBLE)")
    return db


def _groups(result: duckflock.Result) -> dict[int, tuple[int, float]]:
    return {int(g): (int(n), float(s)) for g, n, s in result.rows()}


def groupby(count: int) -> None:
    data = rows(count)
    with tempfile.TemporaryDirectory(prefix="duckflock-peer-") as folder, _open(folder) as db:
        db.analysis("by_k", BY_K)
        db.result("by_k", min_version=1, timeout=60)
        started, cpu = time.perf_counter(), time.process_time()
        for row in data:
            db.insert("t", row, wait=False)
        db.flush()
        result = db.refresh("by_k")
        elapsed = time.perf_counter() - started
        cpu_us = (time.process_time() - cpu) / count * 1e6
        report(
            rows_per_s=count / elapsed,
            seconds=elapsed,
            cpu_us_per_row=cpu_us,
            **totals(_groups(result)),
        )


def mv(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="duckflock-peer-") as folder, _open(folder) as db:
        db.analysis("by_k", BY_K)
        db.analysis("by_band", BY_BAND)
        db.result("by_k", min_version=1, timeout=60)
        db.result("by_band", min_version=1, timeout=60)
        times = []
        by_k: dict[int, tuple[int, float]] = {}
        for round_ in range(rounds):
            data = rows(CHUNK, round_ * CHUNK)
            chunk = pa.table(
                {
                    "k": pa.array([k for k, _ in data], pa.int32()),
                    "v": pa.array([v for _, v in data], pa.float64()),
                }
            )
            started = time.perf_counter()
            db.insert("t", chunk)
            by_k = _groups(db.refresh("by_k"))
            by_band = _groups(db.refresh("by_band"))
            times.append(time.perf_counter() - started)
            assert totals(by_band)["count"] == (round_ + 1) * CHUNK, by_band
        report(round_ms=statistics.median(times) * 1000, **totals(by_k))


def acks(threads: int, per_thread: int) -> None:
    with tempfile.TemporaryDirectory(prefix="duckflock-peer-") as folder, _open(folder) as db:

        def work(t: int) -> None:
            for row in rows(per_thread, t * per_thread):
                db.insert("t", row)

        elapsed = run_threads(threads, work, "peer")
        by_k = {int(k): (int(n), float(s)) for k, n, s in db.execute(BY_K).fetchall()}
        report(rows_per_s=threads * per_thread / elapsed, **totals(by_k))


if __name__ == "__main__":
    workloads = {"groupby": ("ROWS",), "mv": ("ROUNDS",), "acks": ("THREADS", "ROWS_PER_THREAD")}
    name, numbers = options.workload(__doc__, "peer_duckflock.py", workloads, sys.argv[1:])
    {"groupby": groupby, "mv": mv, "acks": acks}[name](*numbers)
