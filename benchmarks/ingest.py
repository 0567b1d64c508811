"""Ingest benchmark: the guide's pattern vs duckflock (also `duckflock bench ingest`).

Run: .venv/bin/python benchmarks/ingest.py [--quick] [--closed-loop]
Prints every figure, its ratio to the guide's pattern (a) measured in the same run, and
the issue's targets. ``--closed-loop`` runs only the guide's pattern and the closed loop
(50 threads, each inserting one acknowledged row at a time) and prints their ratio and
ack latencies: the quick way to compare two checkouts (``PYTHONPATH=<checkout>/src``).
"""

from __future__ import annotations

import os
import sys
import time

import options
from duckflock.cli.bench import (
    Figure,
    Sizes,
    closed_loop,
    format_figure,
    guide_pattern,
    run,
    summary,
)
from duckflock.cli.bench import _workdir as workdir


def show(figure: Figure, baseline: Figure | None) -> None:
    print(format_figure(figure, baseline), flush=True)


def closed_loop_only(sizes: Sizes, writers: int = 50) -> None:
    """The guide's pattern and the closed loop, side by side in this process."""
    with workdir() as directory:
        guide = guide_pattern(directory, writers, sizes.guide_rows_per_thread)
        show(guide, None)
        cpu = time.process_time()
        loop = closed_loop(directory, writers, sizes.closed_loop_rows_per_thread)
        cpu = time.process_time() - cpu  # every thread's: callers, writer, DuckDB
        show(loop, guide)
    load = os.getloadavg()[0]
    print(
        f"closed loop b / a = {loop.rate / guide.rate:.1f}x, p50 ack "
        f"{loop.extra['p50_ms']:.2f} ms, p99 ack {loop.extra['p99_ms']:.2f} ms, "
        f"CPU {cpu / max(1, loop.rows) * 1e6:.0f} us per row (load average {load:.1f})",
        flush=True,
    )


def main(argv: list[str]) -> None:
    parser = options.parser(__doc__, "ingest.py")
    parser.add_argument("--quick", action="store_true", help="fewer rows (a smoke run)")
    parser.add_argument("--closed-loop", action="store_true", help="(a) and the closed loop only")
    args = parser.parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.closed_loop:
        closed_loop_only(sizes)
        return
    results = run(sizes, report=show)
    for line in summary(results):
        print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
