"""Pathway's side of the live group-by peer benchmark (benchmarks/peers.py), in its own
process: ROWS rows ``(k, v)`` pushed one by one from Python through a Python connector
into ``groupby(k).reduce(count, sum)``, with a subscriber keeping the latest result.

Run: .venv/bin/python benchmarks/peer_pathway.py groupby ROWS

The clock runs from the first row pushed until ``pw.run()`` returns, when every row has
been processed and the subscriber has seen the final (fresh) result.
"""

from __future__ import annotations

import sys
import time

import pathway as pw

import options
from peer_rows import report, rows, totals


class Schema(pw.Schema):
    k: int
    v: float


def groupby(count: int) -> None:
    data = rows(count)
    started: list[float] = []
    cpu: list[float] = []  # the process's CPU (every thread) from the first row on

    class Source(pw.io.python.ConnectorSubject):  # type: ignore[misc]
        def run(self) -> None:
            started.append(time.perf_counter())
            cpu.append(time.process_time())
            for k, v in data:
                self.next(k=k, v=v)

    table = pw.io.python.read(Source(), schema=Schema)
    result = table.groupby(pw.this.k).reduce(
        pw.this.k, n=pw.reducers.count(), s=pw.reducers.sum(pw.this.v)
    )
    latest: dict[int, tuple[int, float]] = {}

    def on_change(key: object, row: dict[str, object], time: int, is_addition: bool) -> None:
        if is_addition:
            latest[int(row["k"])] = (int(row["n"]), float(row["s"]))  # type: ignore[arg-type]

    pw.io.subscribe(result, on_change)
    pw.run(monitoring_level=pw.MonitoringLevel.NONE)
    elapsed = time.perf_counter() - started[0]
    cpu_us = (time.process_time() - cpu[0]) / count * 1e6
    report(rows_per_s=count / elapsed, seconds=elapsed, cpu_us_per_row=cpu_us, **totals(latest))


if __name__ == "__main__":
    _, (count,) = options.workload(__doc__, "peer_pathway.py", {"groupby": ("ROWS",)}, sys.argv[1:])
    groupby(count)
