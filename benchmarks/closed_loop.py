"""The closed loop taken apart: why one run of ``ingest.py --closed-loop`` differs from the next.

Run: .venv/bin/python benchmarks/closed_loop.py [--rounds 5] [--rows-per-thread 400]

Each round runs the guide's pattern (a) and the closed loop (b: 50 threads, each
inserting one acknowledged row at a time) back to back, as ``ingest.py --closed-loop``
does, and prints both rates, then what decided (b):

- commits per second, rows per commit (median, and the share of full 50-row commits);
- a commit's wall time (p50 / p90 / p99) and, summed over the run, how the writer
  thread spent it: on a CPU, waiting for one (the run queue: other threads and
  processes), or neither (the WAL's fsync, DuckDB's own threads), from
  ``/proc/thread-self/schedstat`` read at the writer's fault hook (Linux);
- the gathers between commits (the callers' way back: p50 / p90);
- the writer thread's CPU per commit and per row, and the process's CPU per row
  (CPU figures hold on a busy machine; wall-clock ones do not);
- where the p99 ack comes from: the acks that waited through two commits or more
  (their caller missed a batch), and each thread's first insert (the run's start).

The last lines are the median of the rounds. Compare two checkouts with
``PYTHONPATH=<checkout>/src``.
"""

from __future__ import annotations

import bisect
import itertools
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import duckflock
import options
from duckflock.cli.bench import TABLE, guide_pattern

THREADS = 50
_SCHEDSTAT = "/proc/thread-self/schedstat"


def _scheduled() -> tuple[float, float]:
    """This thread's seconds on a CPU and waiting for one (0, 0 off Linux)."""
    try:
        with open(_SCHEDSTAT) as stat:
            on_cpu, waiting, _ = stat.read().split()
    except OSError:
        return 0.0, 0.0
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def _pct(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, len(ordered) * p // 100)] if ordered else 0.0


def loop(path: Path, per_thread: int) -> dict[str, float]:
    """One closed loop with the writer's commits timed; its figures."""
    latencies: list[list[tuple[float, float]]] = [[] for _ in range(THREADS)]  # (end, took)
    commits: list[tuple[float, float, float, float, float]] = []  # wall, cpu, queued, at, end
    writer_cpu: list[float] = []  # the writer thread's CPU at each batch
    with duckflock.connect(path) as db:
        db.execute(TABLE)
        started: list[tuple[float, float, float, float]] = []

        def hook(point: str) -> None:
            if point == "batch":
                cpu = time.thread_time()
                writer_cpu.append(cpu)
                started[:] = [(time.perf_counter(), cpu, _scheduled()[1])]
            elif point == "committed" and started:
                wall, cpu, queued = started[0]
                now_queued = _scheduled()[1]
                now = time.perf_counter()
                commits.append(
                    (now - wall, time.thread_time() - cpu, now_queued - queued, wall, now)
                )

        db.writer().fault_hook = hook
        barrier = threading.Barrier(THREADS + 1)

        def write(i: int) -> None:
            name = f"write_thread_{i}"
            mine = latencies[i]
            clock = time.perf_counter
            barrier.wait()
            for _ in range(per_thread):
                begun = clock()
                db.insert("my_inserts", {"thread_name": name})
                ended = clock()
                mine.append((ended, ended - begun))

        threads = [threading.Thread(target=write, args=(i,)) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        cpu = time.process_time()
        barrier.wait()
        begun = time.perf_counter()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - begun
        cpu = time.process_time() - cpu
        stats = db.stats()
    rows = THREADS * per_thread
    acks = [took for per in latencies for _, took in per]
    ends = sorted(end for *_, end in commits)
    missed = sum(
        1
        for per in latencies
        for end, took in per
        if bisect.bisect_left(ends, end) - bisect.bisect_left(ends, end - took) >= 2
    )
    gathers = [b[3] - a[4] for a, b in itertools.pairwise(commits)]
    walls = [c[0] for c in commits]
    wall, on_cpu, queued = sum(walls), sum(c[1] for c in commits), sum(c[2] for c in commits)
    per_batch = (writer_cpu[-1] - writer_cpu[0]) / max(1, len(writer_cpu) - 1)
    return {
        "rate": rows / seconds,
        "commits_per_s": stats.batches_committed / seconds,
        "rows_per_commit": rows / max(1, stats.batches_committed),
        "commit_p50": _pct(walls, 50) * 1e3,
        "commit_p90": _pct(walls, 90) * 1e3,
        "commit_p99": _pct(walls, 99) * 1e3,
        "commit_cpu_share": on_cpu / wall if wall else 0.0,
        "commit_queued_share": queued / wall if wall else 0.0,
        "gather_p50": _pct(gathers, 50) * 1e3,
        "gather_p90": _pct(gathers, 90) * 1e3,
        "commit_cpu": on_cpu / max(1, len(commits)) * 1e3,
        "writer_cpu_per_commit": per_batch * 1e3,
        "writer_cpu_per_row": per_batch / (rows / max(1, stats.batches_committed)) * 1e6,
        "cpu_per_row": cpu / rows * 1e6,
        "p50": _pct(acks, 50) * 1e3,
        "p99": _pct(acks, 99) * 1e3,
        "missed_share": missed / rows * 100,
        "first_p50": statistics.median(per[0][1] for per in latencies) * 1e3,
    }


def main(argv: list[str]) -> None:
    parser = options.parser(__doc__, "closed_loop.py")
    parser.add_argument("--rounds", type=options.positive_int, default=5)
    parser.add_argument("--rows-per-thread", type=options.positive_int, default=400)
    parser.add_argument("--guide-rows-per-thread", type=options.positive_int, default=60)
    args = parser.parse_args(argv)
    print(f"duckflock from {os.path.dirname(duckflock.__file__)}", flush=True)
    rounds: list[dict[str, float]] = []
    for n in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="duckflock-loop-") as directory:
            guide = guide_pattern(Path(directory), THREADS, args.guide_rows_per_thread)
            figures = loop(Path(directory) / "b.duckdb", args.rows_per_thread)
        figures["guide"] = guide.rate
        figures["ratio"] = figures["rate"] / guide.rate
        figures["load"] = os.getloadavg()[0]
        rounds.append(figures)
        show(f"round {n + 1}", figures)
    show("median", {key: statistics.median(r[key] for r in rounds) for key in rounds[0]})


def show(title: str, f: dict[str, float]) -> None:
    print(
        f"{title}: b / a {f['ratio']:.1f}x ({f['rate']:,.0f} vs {f['guide']:,.0f} rows/s), "
        f"ack p50 {f['p50']:.2f} ms, p99 {f['p99']:.2f} ms (load {f['load']:.1f})\n"
        f"  {f['commits_per_s']:.0f} commits/s, {f['rows_per_commit']:.1f} rows each; "
        f"commit p50/p90/p99 {f['commit_p50']:.2f}/{f['commit_p90']:.2f}/"
        f"{f['commit_p99']:.2f} ms, writer on CPU {f['commit_cpu_share']:.0%}, "
        f"waiting for one {f['commit_queued_share']:.0%}; gather p50/p90 "
        f"{f['gather_p50']:.2f}/{f['gather_p90']:.2f} ms\n"
        f"  writer CPU {f['writer_cpu_per_commit']:.2f} ms per commit (the commit "
        f"{f['commit_cpu']:.2f}), {f['writer_cpu_per_row']:.1f} us per row; process CPU "
        f"{f['cpu_per_row']:.1f} us per row; acks through >= 2 commits "
        f"{f['missed_share']:.2f}%, first insert p50 {f['first_p50']:.1f} ms",
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
