"""Retention deletes and sliding windows: incremental refresh vs a full re-run.

Run: .venv/bin/python benchmarks/retention.py [--quick]
     (DUCKFLOCK_BENCH_20M=1 adds 20M rows; benchmarks/analyses.py runs this too)

1. Retention: a table of N rows (50 groups, ``ts`` ascending) and one of two analyses
   (RETAIN): ``double``, ``SELECT k, count(*), sum(v), avg(v) FROM t GROUP BY k`` over a
   DOUBLE ``v`` (a delete recomputes the groups it touches: subtracting floats is not
   exact), and ``exact``, counts, sums of a BIGINT and a DECIMAL(18, 2) and the avg of the
   BIGINT (the deleted rows are subtracted). Each round deletes the oldest 1% of the table
   through ``db.execute("DELETE FROM t WHERE ts < ?")`` and times the refresh against a
   full re-run of the same SQL in the same process, median of the rounds. The DELETE's
   own time is shown with the capture and as a plain DELETE on a cursor.
2. Sliding window: the same table spread over the last hour, the analysis
   ``… WHERE ts > now() - INTERVAL 5 MINUTE GROUP BY k``; each round inserts 10,000 new
   rows and times the refresh against a full re-run at the result's instant.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa

import duckflock
import options
from duckflock.live.windows import literal

RETAIN = {
    "double": "SELECT k, count(*) AS n, sum(v) AS s, avg(v) AS a FROM t GROUP BY k",
    "exact": "SELECT k, count(*) AS n, sum(i) AS si, sum(d) AS sd, avg(i) AS a FROM t GROUP BY k",
}
# the exact shape's columns: a BIGINT and a DECIMAL(18, 2)
EXACT_COLUMNS = (
    "(range * 7919 % 100003)::BIGINT AS i, (range % 10007 * 0.01)::DECIMAL(18, 2) AS d, "
)
WINDOW = (
    "SELECT k, count(*) AS n, sum(v) AS s, avg(v) AS a FROM t "
    "WHERE ts > now() - INTERVAL 5 MINUTE GROUP BY k"
)
ROUNDS = 5


def _table(db: duckflock.Database, rows: int, span_us: int, exact: bool = False) -> None:
    """``rows`` rows, 50 groups, ``ts`` ascending over the ``span_us`` before now (with
    ``exact``, the exact shape's columns too)."""
    db.execute(
        "CREATE TABLE t AS SELECT (range % 50)::INTEGER AS k, random() * 100 AS v, "
        f"{EXACT_COLUMNS if exact else ''}"
        f"(now()::TIMESTAMP - to_microseconds(({rows} - range) * {span_us} // {rows})) AS ts "
        f"FROM range({rows})"
    )
    db.execute("CHECKPOINT")


@contextlib.contextmanager
def window_database(path: Path, rows: int) -> Iterator[duckflock.Database]:
    """A database at ``path`` with the window's table (``rows`` over the last hour) and
    its analysis, the first result in."""
    with duckflock.connect(path) as db:
        _table(db, rows, 3_600_000_000)
        db.analysis("window", WINDOW)
        db.result("window", min_version=1, timeout=600)
        yield db


def new_rows() -> pa.Table:
    """One round's 10,000 new rows of the window's table, stamped now."""
    now = datetime.now()
    return pa.table(
        {
            "k": pa.array([i % 50 for i in range(10_000)], pa.int32()),
            "v": [1.5] * 10_000,
            "ts": [now - timedelta(microseconds=i) for i in range(10_000)],
        }
    )


def window_full(db: duckflock.Database, result: duckflock.Result) -> float:
    """The seconds of a full run of the window at ``result``'s instant, whose rows it
    checks ``result`` against (incremental)."""
    assert result.mode == "incremental" and result.now is not None, result.reason
    started = time.perf_counter()
    expected = db.execute(WINDOW.replace("now()", literal(result.now))).fetchall()
    spent = time.perf_counter() - started
    assert sorted(r[:2] for r in result.rows()) == sorted(r[:2] for r in expected)
    return spent


def retention_figures(
    workdir: Path, rows: int, shape: str
) -> tuple[float, float, float, float, float]:
    """Medians for the RETAIN ``shape``: incremental refresh (wall, in the analysis
    thread), full re-run, captured DELETE, plain DELETE (s)."""
    sql = RETAIN[shape]
    path = workdir / f"r_{shape}_{rows}.duckdb"
    with duckflock.connect(path) as db:
        _table(db, rows, 86_400_000_000, exact=shape == "exact")
        first, last = db.execute("SELECT min(ts), max(ts) FROM t").fetchone() or (None, None)
        assert isinstance(first, datetime) and isinstance(last, datetime)
        step = (last - first) / 100  # 1% of the rows per round (ts is evenly spread)
        db.analysis("retain", sql)
        db.result("retain", min_version=1, timeout=600)
        incremental, reported, full, captured, plain = [], [], [], [], []
        cutoff = first
        for _ in range(ROUNDS):
            cutoff += step
            started = time.perf_counter()
            deleted = db.execute("DELETE FROM t WHERE ts < ?", [cutoff]).fetchall()
            captured.append(time.perf_counter() - started)
            assert deleted[0][0] > 0
            started = time.perf_counter()
            result = db.refresh("retain")
            incremental.append(time.perf_counter() - started)
            reported.append(result.duration)
            assert result.mode == "incremental", result.mode
            started = time.perf_counter()
            expected = db.execute(sql).fetchall()
            full.append(time.perf_counter() - started)
            # the exact shape equals the full run exactly, every column
            width = None if shape == "exact" else 2
            assert sorted(r[:width] for r in result.rows()) == sorted(r[:width] for r in expected)
        # the same DELETE on a cursor of its own: not captured (the analysis would not
        # even see it), for the capture's cost
        cursor = db.cursor()
        for _ in range(ROUNDS):
            cutoff += step
            started = time.perf_counter()
            cursor.execute("DELETE FROM t WHERE ts < ?", [cutoff]).fetchall()
            plain.append(time.perf_counter() - started)
        cursor.close()
    return (
        statistics.median(incremental),
        statistics.median(reported),
        statistics.median(full),
        statistics.median(captured),
        statistics.median(plain),
    )


def window_figures(workdir: Path, rows: int) -> tuple[float, float, float]:
    """Medians: incremental window refresh after 10,000 new rows (wall, in the analysis
    thread), full re-run (s)."""
    incremental, reported, full = window_rounds(workdir, rows)
    return statistics.median(incremental), statistics.median(reported), statistics.median(full)


def window_rounds(workdir: Path, rows: int) -> tuple[list[float], list[float], list[float]]:
    """Per round: incremental window refresh after 10,000 new rows (wall, in the analysis
    thread), full re-run (s). A refresh whose instant moved into a new bucket since the
    last one reads the cut bucket from the table (in a pinned transaction); the others
    carry it (live/marks.py): the slowest round is usually such a read."""
    with window_database(workdir / f"w_{rows}.duckdb", rows) as db:
        incremental, reported, full = [], [], []
        for _ in range(ROUNDS):
            db.insert("t", new_rows())
            started = time.perf_counter()
            result = db.refresh("window")
            incremental.append(time.perf_counter() - started)
            reported.append(result.duration)
            full.append(window_full(db, result))
    return incremental, reported, full


def main(argv: list[str]) -> None:
    parser = options.parser(__doc__, "retention.py")
    parser.add_argument("--quick", action="store_true", help="200k and 1M rows")
    quick = parser.parse_args(argv).quick
    sizes = [200_000, 1_000_000] if quick else [1_000_000, 5_000_000]
    if os.environ.get("DUCKFLOCK_BENCH_20M"):
        sizes.append(20_000_000)
    with tempfile.TemporaryDirectory(prefix="duckflock-bench-") as tmp:
        workdir = Path(tmp)
        for rows in sizes:
            for shape in RETAIN:
                inc, own, full, captured, plain = retention_figures(workdir, rows, shape)
                print(
                    f"retention {shape:<6} {rows:>11,} rows, delete 1%: refresh "
                    f"{inc * 1000:7.2f} ms "
                    f"({own * 1000:.2f} in the analysis thread), "
                    f"full re-run {full * 1000:8.2f} ms -> {full / inc:6.1f}x faster; "
                    f"the DELETE {captured * 1000:.1f} ms captured, {plain * 1000:.1f} ms plain",
                    flush=True,
                )
        for rows in sizes:
            rounds, owns, fulls = window_rounds(workdir, rows)
            inc, own, full = (statistics.median(x) for x in (rounds, owns, fulls))
            print(
                f"{'window':<16} {rows:>11,} rows, +10,000 rows: refresh {inc * 1000:7.2f} ms "
                f"({own * 1000:.2f} in the analysis thread; slowest {max(rounds) * 1000:.2f}), "
                f"full re-run {full * 1000:8.2f} ms -> {full / inc:6.1f}x faster",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
