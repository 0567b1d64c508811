"""Where a refresh's time goes: ``db.refresh`` split into its steps, per shape.

Run: .venv/bin/python benchmarks/refresh_steps.py [ROWS] [ROUNDS] [--only 'plain,arg_max'] [--cpu]

Builds shapes.py's table of ROWS rows (1,000,000) and its analyses (--only: these
SHAPES; default plain, two expression keys, count distinct), then ROUNDS times (30)
appends 10,000 rows and refreshes each analysis, timing the refresh and, inside it, the
steps it is made of (each wrapped by a timer: the figures carry ~1 µs of it per step):
``run_here`` (the run on the caller's thread: refresh() minus it is the scheduler's
lock, dispatch and wait), ``Refresher.run`` (the fold and its bookkeeping), the fold
(``arrow_fold`` for pyarrow, ``merge_fold`` for DuckDB), inside the pyarrow fold its
parts (``partials_of`` with pyarrow's ``group_by``, ``has_nan``, ``merge`` with
``merge_touched`` and ``result``), and beside it ``touched``, ``publish`` and ``done``.
Medians in microseconds, the first two rounds left out (wall, or the calling thread's
CPU with ``--cpu``). Compare versions in one interpreter with ``PYTHONPATH=<other>/src``.
"""

from __future__ import annotations

import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckflock
import options
from duckflock.live import refresh, runs
from duckflock.live.fold import arrow
from shapes import SHAPES, TABLE, series

STEPS: list[tuple[Any, str, str]] = [
    (runs.Runs, "run_here", "run_here"),
    (runs.Runs, "_publish", "  publish"),
    (runs.Runs, "_done", "  done"),
    (refresh.Refresher, "run", "  Refresher.run"),
    (refresh, "touched", "    touched"),
    (refresh, "merge_fold", "    merge_fold"),
    (refresh, "arrow_fold", "    arrow_fold"),
    (arrow.ArrowPlan, "has_nan", "      has_nan"),
    (arrow.ArrowPlan, "partials_of", "      partials_of"),
    (arrow, "_aggregate", "        group_by"),
    (arrow.ArrowPlan, "merge", "      merge"),
    (arrow, "merge_touched", "        merge_touched"),
    (arrow.ArrowPlan, "result", "        result"),
]


def timed(clock: Callable[[], int], spent: dict[str, int]) -> None:
    """Wrap each of STEPS so that its time adds up in ``spent`` (ns)."""
    for owner, attribute, label in STEPS:
        inner = getattr(owner, attribute)

        def step(*args: Any, _inner: Any = inner, _label: str = label, **kwargs: Any) -> Any:
            started = clock()
            try:
                return _inner(*args, **kwargs)
            finally:
                spent[_label] = spent.get(_label, 0) + clock() - started

        setattr(owner, attribute, functools.wraps(inner)(step))


def main(argv: list[str]) -> None:
    parser = options.parser(__doc__, "refresh_steps.py")
    parser.add_argument("rows", nargs="?", type=options.positive_int, default=1_000_000)
    parser.add_argument("rounds", nargs="?", type=options.positive_int, default=30)
    parser.add_argument("--only", type=options.names, metavar="SHAPE,...", help="these shapes")
    parser.add_argument("--cpu", action="store_true", help="the thread's CPU, not wall")
    args = parser.parse_args(argv)
    names = args.only or ["plain", "two expression keys", "count distinct"]
    unknown = [name for name in names if name not in SHAPES]
    if unknown:
        parser.error(f"--only: no shape {unknown[0]!r} (shapes: {', '.join(SHAPES)})")
    clock = time.thread_time_ns if args.cpu else time.perf_counter_ns
    spent: dict[str, int] = {}
    timed(clock, spent)
    figures: dict[str, list[dict[str, int]]] = {name: [] for name in names}
    with (
        tempfile.TemporaryDirectory(prefix="duckflock-bench-") as tmp,
        duckflock.connect(Path(tmp) / "t.duckdb") as db,
    ):
        db.execute(TABLE.format(rows=args.rows))
        for name in names:
            db.analysis(name, SHAPES[name])
            db.result(name, min_version=1, timeout=600)
        for round_ in range(args.rounds):
            db.insert("t", series(round_, args.rows))
            for name in names:
                spent.clear()
                started = clock()
                result = db.refresh(name)
                spent["refresh"] = clock() - started
                assert result.mode == "incremental", result.reason
                figures[name].append(dict(spent))
    print(f"{args.rows:,} rows, {args.rounds} rounds ({duckflock.__file__}), median µs:")
    for name, rounds in figures.items():
        kept = rounds[2:] or rounds
        print(f"{name}:")
        for label in ["refresh", *(label for _, _, label in STEPS)]:
            values = [spent.get(label, 0) for spent in kept]
            if any(values):
                print(f"  {label:<24}{statistics.median(values) / 1000:>9.0f}")


if __name__ == "__main__":
    main(sys.argv[1:])
