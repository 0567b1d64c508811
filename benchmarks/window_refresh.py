"""The sliding window's refresh after 10,000 new rows: wall and CPU time, many rounds.

Run: .venv/bin/python benchmarks/window_refresh.py [--rows 1000000] [--rounds 30]

The table and analysis of benchmarks/retention.py's window (50 keys, ``ts`` over the last
hour, ``… WHERE ts > now() - INTERVAL 5 MINUTE GROUP BY k``). Each round inserts 10,000
rows and times ``db.refresh`` on this thread: wall and process CPU (every thread's, so
DuckDB's workers count too; on a shared machine CPU is the steadier figure). Every fifth
round also times a full run at the result's instant and checks the result against it.
Prints the medians and the ratio to the full run's median, with the load average.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import options
from retention import new_rows, window_database, window_full


def rounds(rows: int, count: int) -> tuple[list[float], list[float], list[float]]:
    """Per round: refresh wall and CPU (s); full runs (s), every fifth round."""
    with (
        tempfile.TemporaryDirectory(prefix="duckflock-bench-") as tmp,
        window_database(Path(tmp) / "w.duckdb", rows) as db,
    ):
        wall, cpu, full = [], [], []
        for i in range(count):
            db.insert("t", new_rows())
            spent, started = time.process_time(), time.perf_counter()
            result = db.refresh("window")
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - spent)
            assert result.mode == "incremental", result.reason
            if i % 5 == 0:
                full.append(window_full(db, result))
    return wall, cpu, full


def main(argv: list[str]) -> None:
    parser = options.parser(__doc__, "window_refresh.py")
    parser.add_argument("--rows", type=options.positive_ints, default=[1_000_000])
    parser.add_argument("--rounds", type=options.positive_int, default=30)
    args = parser.parse_args(argv)
    for rows in args.rows:
        wall, cpu, full = (statistics.median(x) for x in rounds(rows, args.rounds))
        print(
            f"window {rows:>11,} rows, +10,000 rows: refresh {wall * 1000:6.2f} ms wall, "
            f"{cpu * 1000:6.2f} ms CPU; full run {full * 1000:8.2f} ms -> {full / wall:6.1f}x "
            f"(load {os.getloadavg()[0]:.1f})",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
