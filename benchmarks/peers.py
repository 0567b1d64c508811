"""Peer benchmarks: duckflock against Pathway and an embedded ClickHouse (chDB), each
side in its own process on the same rows (benchmarks/peer_rows.py).

Run: .venv/bin/python benchmarks/peers.py [--large] [--only groupby,mv,acks]
(the peers are the optional ``bench`` extra: ``pip install -e '.[bench]'``)

1. Live group-by end to end vs Pathway: 500,000 rows pushed one by one from Python, the
   clock stopped at the fresh result (benchmarks/peer_duckflock.py, peer_pathway.py).
2. vs chDB with two materialized views: insert 10,000 rows and read both aggregates
   fresh, median of 20 rounds; and single-row acknowledged inserts from 8 threads.

Each side prints one ``result:`` line; both sides' totals (groups, rows, sum) must agree.
A peer that is not installed prints "not installed". The last line, ``figures: {json}``,
is read by benchmarks/suite.py.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import options

HERE = Path(__file__).resolve().parent
TOTALS = ("groups", "count", "sum")


def side(script: str, *args: object) -> dict[str, Any]:
    """Run one side in its own process; its ``result:`` figures."""
    command = [sys.executable, str(HERE / script), *map(str, args)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=HERE)
    for line in run.stdout.splitlines():
        if line.startswith("result: "):
            figures: dict[str, Any] = json.loads(line.removeprefix("result: "))
            return figures
    raise RuntimeError(f"{script} {args} failed:\n{run.stdout}\n{run.stderr[-3000:]}")


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def compare(
    name: str, ours: dict[str, Any], peer: str, module: str, script: str, *args: object
) -> dict[str, Any]:
    """One row of the peer table: our figures and the peer's (or why there are none)."""
    row: dict[str, Any] = {"name": name, "peer": peer, "duckflock": ours}
    if not installed(module):
        row["status"] = "not installed"
        return row
    theirs = side(script, *args)
    row["theirs"] = theirs
    same = all(ours[key] == theirs[key] for key in TOTALS)
    row["status"] = "ok" if same else "results differ"
    return row


def main(argv: list[str]) -> None:
    parser = options.parser(__doc__, "peers.py")
    parser.add_argument("--large", action="store_true", help="more acknowledged inserts")
    parser.add_argument("--only", type=options.names, metavar="NAME,...", help="some workloads")
    args = parser.parse_args(argv)
    large, only = args.large, None if args.only is None else set(args.only)
    rows, rounds = 500_000, 20
    threads, per_thread = 8, 200 if large else 50
    workloads = {
        "groupby": lambda: compare(
            "live group-by end to end, 500k rows from Python (rows/s)",
            side("peer_duckflock.py", "groupby", rows),
            "Pathway",
            "pathway",
            "peer_pathway.py",
            "groupby",
            rows,
        ),
        "mv": lambda: compare(
            "insert 10k rows + read 2 fresh aggregates (ms per round)",
            side("peer_duckflock.py", "mv", rounds),
            "chDB",
            "chdb",
            "peer_chdb.py",
            "mv",
            rounds,
        ),
        "acks": lambda: compare(
            f"single-row acknowledged inserts, {threads} threads (rows/s)",
            side("peer_duckflock.py", "acks", threads, per_thread),
            "chDB",
            "chdb",
            "peer_chdb.py",
            "acks",
            threads,
            per_thread,
        ),
    }
    unknown = (only or set()) - set(workloads)
    if unknown:
        raise SystemExit(f"--only takes {','.join(workloads)}, not {','.join(sorted(unknown))}")
    table = [run() for name, run in workloads.items() if only is None or name in only]
    print(f"{'workload':<60}{'peer':>9}{'duckflock':>14}{'peer':>14}{'ratio':>9}  status")
    for row in table:
        ours, theirs = row["duckflock"], row.get("theirs")
        key = "round_ms" if "round_ms" in ours else "rows_per_s"
        mine = f"{ours[key]:>14,.1f}"
        if theirs is None:
            print(f"{row['name']:<60}{row['peer']:>9}{mine}{'-':>14}{'-':>9}  {row['status']}")
            continue
        # a ratio above 1 means duckflock is faster, for times and rates alike
        ratio = theirs[key] / ours[key] if key == "round_ms" else ours[key] / theirs[key]
        row["ratio"] = ratio
        print(
            f"{row['name']:<60}{row['peer']:>9}{mine}{theirs[key]:>14,.1f}{ratio:>8.2f}x  "
            f"{row['status']}"
        )
        if "cpu_us_per_row" in ours and "cpu_us_per_row" in theirs:
            # every thread's CPU per row: steadier than the rates on a busy machine
            mine_cpu, their_cpu = ours["cpu_us_per_row"], theirs["cpu_us_per_row"]
            print(
                f"{'  CPU per row, every thread (us)':<60}{row['peer']:>9}{mine_cpu:>14,.2f}"
                f"{their_cpu:>14,.2f}{their_cpu / mine_cpu:>8.2f}x"
            )
    print("figures: " + json.dumps(table))


if __name__ == "__main__":
    main(sys.argv[1:])
