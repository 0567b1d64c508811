"""The plain shape alone: refresh after 10,000 new rows vs a full run, many rounds.

Run: .venv/bin/python benchmarks/plain_refresh.py [ROWS] [ROUNDS]   (1,000,000 and 40)

benchmarks/shapes.py measures every shape at once with 5 rounds; on a shared machine its
plain row is too noisy to compare two versions. This times only SHAPES["plain"] over the
same table and new rows, ROUNDS times: each round inserts, times ``db.refresh`` and then
the full query (as shapes.py does, so each refresh starts with the caches the full run
cooled). Compare versions by interleaving runs (``PYTHONPATH=<other>/src`` for the other).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckflock
import options
from shapes import SHAPES, TABLE, series


def figures(rows: int, rounds: int) -> tuple[list[float], list[float]]:
    """Seconds per refresh and per full run, one of each per round."""
    sql = SHAPES["plain"]
    refreshes: list[float] = []
    fulls: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="duckflock-bench-") as tmp,
        duckflock.connect(Path(tmp) / "t.duckdb") as db,
    ):
        db.execute(TABLE.format(rows=rows))
        db.analysis("plain", sql)
        db.result("plain", min_version=1, timeout=600)  # the state is built
        for round_ in range(rounds):
            db.insert("t", series(round_, rows))
            started = time.perf_counter()
            result = db.refresh("plain")
            refreshes.append(time.perf_counter() - started)
            assert result.mode == "incremental", result.reason
            started = time.perf_counter()
            db.execute(sql).fetchall()
            fulls.append(time.perf_counter() - started)
    return refreshes, fulls


def main(argv: list[str]) -> None:
    parser = options.parser(__doc__, "plain_refresh.py")
    parser.add_argument("rows", nargs="?", type=options.positive_int, default=1_000_000)
    parser.add_argument("rounds", nargs="?", type=options.positive_int, default=40)
    args = parser.parse_args(argv)
    rows, rounds = args.rows, args.rounds
    refreshes, fulls = figures(rows, rounds)
    refresh, full = statistics.median(refreshes), statistics.median(fulls)
    print(
        f"plain, {rows:,} rows, {rounds} rounds ({duckflock.__file__}): refresh median "
        f"{refresh * 1000:.3f} ms (min {min(refreshes) * 1000:.3f}), full median "
        f"{full * 1000:.1f} ms ({full / refresh:.0f}x)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
