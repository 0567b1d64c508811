"""Analyses benchmark: incremental refresh vs a full re-run, and ingest with analyses.

Run: .venv/bin/python benchmarks/analyses.py [--quick] [--workers]

1. Tables of 1M, 5M and 20M rows (generated inside DuckDB), 50 groups. Insert 10,000
   rows through db.insert, then time the refresh of
   SELECT k, count(*), sum(v), min(v), max(v), avg(v) FROM t GROUP BY k
   incrementally (the analysis) and as a full re-run (the same SQL), same run.
2. The ingest benchmark's streaming figure (8 threads, single rows, wait=False) with 5
   on-change analyses over the table, as a ratio to streaming alone.
3. Retention deletes of 1% of the table and sliding-window refreshes (benchmarks/retention.py).
4. With --workers: the same with 1, 2 and 4 analysis threads (max_concurrent_analyses),
   interleaved over 5 rounds, medians: more threads must not slow the writer.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

import duckflock
from duckflock.cli.bench import streaming

SQL = "SELECT k, count(*), sum(v), min(v), max(v), avg(v) FROM t GROUP BY k"
ROUNDS = 7


def refresh_figures(workdir: Path, rows: int) -> tuple[float, float, float]:
    """Median incremental refresh (wall and reported), and median full re-run, seconds."""
    path = workdir / f"t_{rows}.duckdb"
    with duckflock.connect(path) as db:
        db.execute(
            f"CREATE TABLE t AS SELECT (range % 50)::INTEGER AS k, random() * 100 AS v "
            f"FROM range({rows})"
        )
        db.execute("CHECKPOINT")
        db.analysis("agg", SQL)
        db.result("agg", min_version=1, timeout=600)  # the first refresh builds the state
        chunk = pa.table(
            {"k": pa.array([i % 50 for i in range(10_000)], pa.int32()), "v": [1.5] * 10_000}
        )
        wall, reported, full = [], [], []
        for _ in range(ROUNDS):
            db.insert("t", chunk)
            started = time.perf_counter()
            result = db.refresh("agg")
            wall.append(time.perf_counter() - started)
            reported.append(result.duration)
            assert result.mode == "incremental", result.mode
            started = time.perf_counter()
            expected = db.execute(SQL + " ORDER BY k").fetchall()
            full.append(time.perf_counter() - started)
            got = sorted(result.rows())
            assert [r[:2] for r in got] == [r[:2] for r in expected], "incremental != full"
    return statistics.median(wall), statistics.median(reported), statistics.median(full)


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    sizes = [200_000, 1_000_000] if quick else [1_000_000, 5_000_000, 20_000_000]
    with tempfile.TemporaryDirectory(prefix="duckflock-bench-") as tmp:
        workdir = Path(tmp)
        incremental_at = {}
        for rows in sizes:
            wall, reported, full = refresh_figures(workdir, rows)
            incremental_at[rows] = wall
            print(
                f"{rows:>11,} rows: incremental refresh {wall * 1000:7.2f} ms wall "
                f"({reported * 1000:6.2f} ms in the analysis thread), full re-run "
                f"{full * 1000:8.2f} ms -> {full / wall:6.1f}x faster",
                flush=True,
            )
        small, large = incremental_at[sizes[0]], incremental_at[sizes[-1]]
        print(
            f"incremental at {sizes[-1]:,} / at {sizes[0]:,} rows = {large / small:.2f}x "
            "(target: within 2x)"
        )

        per_thread = 5_000 if quick else 60_000
        alone = streaming(workdir, 8, per_thread)

        def five_analyses(db: duckflock.Database) -> None:
            for i in range(5):
                db.analysis(
                    f"a{i}",
                    "SELECT thread_name, count(*) AS n, max(insert_time) AS last "
                    f"FROM my_inserts WHERE length(thread_name) > {i} GROUP BY thread_name",
                    on_change=True,
                )

        with_analyses = streaming(workdir, 8, per_thread, setup=five_analyses)
        print(f"streaming alone:              {alone.rate:>12,.0f} rows/s")
        print(f"streaming with 5 analyses:    {with_analyses.rate:>12,.0f} rows/s")
        print(f"ratio = {with_analyses.rate / alone.rate:.0%} (target >= 70%)")

        import retention  # benchmarks/retention.py: retention deletes, sliding windows

        retention.main(argv)

        if "--workers" in argv:
            rates: dict[int, list[float]] = {1: [], 2: [], 4: []}
            for _ in range(5):
                for workers in rates:
                    figure = streaming(
                        workdir,
                        8,
                        per_thread // 2,
                        setup=five_analyses,
                        max_concurrent_analyses=workers,
                    )
                    rates[workers].append(figure.rate)
            for workers, figures in rates.items():
                print(
                    f"streaming with 5 analyses, {workers} analysis thread(s): "
                    f"{statistics.median(figures):>10,.0f} rows/s (median of 5)"
                )


if __name__ == "__main__":
    main(sys.argv[1:])
