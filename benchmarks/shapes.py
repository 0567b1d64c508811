"""Issue 21's shapes: the refresh after 10,000 new rows against a full re-run, per size.

Run: .venv/bin/python benchmarks/shapes.py [--large] [--sizes 1000000,5000000] [--shapes-only]
[--cpu] [--only 'date_trunc second,time_bucket minute']

Sizes 1M and 5M rows (``--large`` adds 20M; ``--sizes`` replaces them). The table is
generated inside DuckDB: one row per millisecond (so N rows make N/1,000 second-buckets
and N/60,000 minute-buckets), 50 groups ``k``, 50 sensors, 1,000 users, a 50-row
``sensors`` dimension with 5 sites. One analysis per shape (SHAPES); each of ROUNDS rounds
appends 10,000 rows that continue the series (they land in ~10 second-buckets), then
times each analysis's ``db.refresh`` (wall) and a full re-run of its SQL, and checks the
two agree. Then the retention delete of 1% (both shapes of benchmarks/retention.py) and
the sliding window, from benchmarks/retention.py, at the same sizes (``--shapes-only`` leaves
those out; ``--cpu`` times the shapes in CPU seconds of the process instead of wall
time, for a loaded machine; ``--only`` times the named shapes alone, and implies
``--shapes-only``).

The last line, ``figures: {json}``, carries every median for benchmarks/suite.py:
``{"sizes": [...], "shapes": {shape: {size: [refresh_ms, full_ms]}}}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

import options
from analyses import NEW_ROWS, ROUNDS, chunk, shape_figures
from retention import retention_figures, window_figures

SHAPES = {
    "plain": "SELECT k, count(*), sum(v), min(v), max(v), avg(v) FROM t GROUP BY k",
    "date_trunc second": "SELECT date_trunc('second', ts) AS s, count(*) AS n, "
    "sum(v) AS total FROM t GROUP BY 1",
    "time_bucket minute": "SELECT time_bucket(INTERVAL '1 minute', ts) AS m, count(*) AS n, "
    "avg(v) AS mean FROM t GROUP BY 1",
    "two expression keys": "SELECT upper(sensor) AS s, k % 5 AS band, sum(v) AS total "
    "FROM t GROUP BY upper(sensor), k % 5",
    "arg_max": "SELECT sensor, arg_max(v, ts) AS latest, max(ts) AS at FROM t GROUP BY sensor",
    "first/last": "SELECT k, first(v ORDER BY ts) AS opening, last(v ORDER BY ts) AS closing "
    "FROM t GROUP BY k",
    "FILTER + bool": "SELECT k, count(*) FILTER (WHERE ok) AS good, bool_and(v >= 0) AS sane, "
    "avg(v) FILTER (WHERE NOT ok) AS bad_mean FROM t GROUP BY k",
    "count distinct": "SELECT k, count(DISTINCT user_id) AS users FROM t GROUP BY k",
    "approx distinct": "SELECT k, approx_count_distinct(user_id) AS users FROM t GROUP BY k",
    "dimension join": "SELECT s.site, count(*) AS n, avg(t.v) AS mean FROM t "
    "JOIN sensors AS s USING (sensor) GROUP BY s.site",
}
TABLE = (
    "CREATE TABLE t AS SELECT (range % 50)::INTEGER AS k, random() * 100 AS v, "
    "TIMESTAMP '2026-01-01' + to_microseconds(range * 1000) AS ts, "
    "'s' || (range % 50) AS sensor, ((range * 7) % 1000)::INTEGER AS user_id, "
    "range % 3 <> 0 AS ok FROM range({rows})"
)
START_US = 1_767_225_600_000_000  # TIMESTAMP '2026-01-01' in microseconds since the epoch


def series(round_: int, rows: int) -> pa.Table:
    """Round ``round_``'s new rows, continuing the table's one-row-per-millisecond series."""
    return chunk(round_, rows, step_us=1000, start_us=START_US)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = options.parser(__doc__, "shapes.py")
    parser.add_argument("--large", action="store_true", help="add a 20M-row table")
    parser.add_argument(
        "--sizes", type=options.positive_ints, metavar="N,N,...", help="the tables' row counts"
    )
    parser.add_argument("--only", type=options.names, metavar="SHAPE,...", help="these shapes")
    parser.add_argument("--cpu", action="store_true", help="time process CPU, not wall")
    parser.add_argument("--shapes-only", action="store_true", help="no retention or window")
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = [1_000_000, 5_000_000, 20_000_000] if args.large else [1_000_000, 5_000_000]
    unknown = [name for name in args.only or () if name not in SHAPES]
    if unknown:
        parser.error(f"--only: no shape {unknown[0]!r} (shapes: {', '.join(SHAPES)})")
    return args


def main(argv: list[str]) -> None:
    args = parse(argv)
    sizes = args.sizes
    shapes = SHAPES if args.only is None else {name: SHAPES[name] for name in args.only}
    figures: dict[str, dict[int, tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="duckflock-bench-") as tmp:
        workdir = Path(tmp)
        for rows in sizes:
            clock = time.process_time if args.cpu else time.perf_counter
            for name, (refresh, full, _mode) in shape_figures(
                workdir, rows, shapes, TABLE, series, clock
            ).items():
                figures.setdefault(name, {})[rows] = (refresh * 1000, full * 1000)
            if args.shapes_only or args.only is not None:
                continue
            for shape in ("exact", "double"):
                inc, _own, full, _captured, _plain = retention_figures(workdir, rows, shape)
                figures.setdefault(f"retention 1% ({shape})", {})[rows] = (inc * 1000, full * 1000)
            inc, _own, full = window_figures(workdir, rows)
            figures.setdefault("sliding window", {})[rows] = (inc * 1000, full * 1000)
            print(f"{rows:,} rows done", flush=True)
    print(f"refresh ms / full ms (ratio), median of {ROUNDS} rounds of {NEW_ROWS:,} new rows")
    print(f"{'shape':<22}" + "".join(f"{f'{rows:,} rows':>28}" for rows in sizes))
    for name, cells in figures.items():
        line = "".join(
            f"{refresh:>9.2f} /{full:>8.1f} ({full / refresh:>5.0f}x)"
            for refresh, full in (cells[rows] for rows in sizes)
        )
        print(f"{name:<22}{line}")
    print("figures: " + json.dumps({"sizes": sizes, "shapes": figures}))


if __name__ == "__main__":
    main(sys.argv[1:])
