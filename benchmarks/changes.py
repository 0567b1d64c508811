"""Changes vs snapshots: bytes and time per push of a large incremental analysis.

A ``GROUP BY g`` analysis over G groups (2,000 / 20,000 / 200,000); each round inserts
10,000 rows touching 50 groups and refreshes. Per push it measures:

- bytes: the SSE event a subscriber receives — the change (``?changes=1``) against the
  whole result (the plain event stream), both as the server serialises them;
- time: computing the change as the refresh does (only the touched groups' rows, on
  DuckDB), the full comparison of both versions (what a full-mode analysis pays), and
  serialising each event.

    .venv/bin/python benchmarks/changes.py [--rounds 5] [--groups 2000,20000,200000]
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time

import pyarrow as pa

import duckflock
import options
from duckflock.live.changes import Touched, difference
from duckflock.server import formats
from duckflock.server.formats import change_event

SQL = "SELECT g, count(*) AS n, sum(v) AS total, max(v) AS hi FROM t GROUP BY g"
CAP = sys.maxsize


def run(groups: int, rounds: int, rows: int = 10_000, touched: int = 50) -> dict[str, float]:
    rng = random.Random(groups)
    with duckflock.connect() as db:
        db.execute("CREATE TABLE t (g BIGINT, v DOUBLE)")
        db.insert("t", pa.table({"g": pa.array(range(groups), pa.int64()), "v": [1.0] * groups}))
        db.analysis("a", SQL, wait=True)
        cursor = db.cursor()
        change_bytes, snapshot_bytes = [], []
        change_ms, full_ms, change_ser_ms, snapshot_ser_ms, refresh_ms = [], [], [], [], []
        for _ in range(rounds):
            old = db.result("a")
            assert old is not None
            keys = rng.sample(range(groups), touched)
            batch = pa.table(
                {
                    "g": pa.array([keys[i % touched] for i in range(rows)], pa.int64()),
                    "v": [rng.random() for _ in range(rows)],
                }
            )
            db.insert("t", batch, wait=True)
            started = time.perf_counter()
            new = db.refresh("a")
            refresh_ms.append((time.perf_counter() - started) * 1000)
            assert new.mode == "incremental", new.reason
            change = new.changes()
            assert not change.snapshot and change.table.num_rows == 2 * touched, change
            # the change as the refresh computes it, and the full comparison
            started = time.perf_counter()
            mine, _ = difference(cursor, old.table, new.table, Touched((0,), batch.select(["g"])))
            change_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            full, _ = difference(cursor, old.table, new.table)
            full_ms.append((time.perf_counter() - started) * 1000)
            assert mine.num_rows == full.num_rows == change.table.num_rows
            started = time.perf_counter()
            event = change_event(change, CAP)
            change_ser_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            whole = formats.result_event(new, CAP)
            snapshot_ser_ms.append((time.perf_counter() - started) * 1000)
            change_bytes.append(len(event.encode()))
            snapshot_bytes.append(len(whole.encode()))
        return {
            "groups": groups,
            "change_bytes": statistics.median(change_bytes),
            "snapshot_bytes": statistics.median(snapshot_bytes),
            "change_ms": statistics.median(change_ms),
            "full_diff_ms": statistics.median(full_ms),
            "change_push_ms": statistics.median(change_ms) + statistics.median(change_ser_ms),
            "snapshot_push_ms": statistics.median(snapshot_ser_ms),
            "refresh_ms": statistics.median(refresh_ms),
        }


def main(argv: list[str]) -> None:
    parser = options.parser(__doc__, "changes.py")
    parser.add_argument("--rounds", type=options.positive_int, default=5, help="rounds per size")
    parser.add_argument(
        "--groups",
        type=options.positive_ints,
        default=[2000, 20000, 200000],
        metavar="N,N,...",
        help="the analysis's group counts",
    )
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPUs, load average {load:.1f}; 10,000 rows into 50 groups a round")
    print(
        f"{'groups':>8} {'change B':>9} {'snapshot B':>11} {'ratio':>7} "
        f"{'change ms':>10} {'full diff ms':>13} {'push ms chg/snap':>17} {'refresh ms':>11}"
    )
    for groups in args.groups:
        r = run(groups, args.rounds)
        print(
            f"{groups:>8,} {r['change_bytes']:>9,.0f} {r['snapshot_bytes']:>11,.0f} "
            f"{r['snapshot_bytes'] / r['change_bytes']:>6,.0f}x "
            f"{r['change_ms']:>10.2f} {r['full_diff_ms']:>13.2f} "
            f"{r['change_push_ms']:>8.2f}/{r['snapshot_push_ms']:<8.2f} {r['refresh_ms']:>11.2f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
