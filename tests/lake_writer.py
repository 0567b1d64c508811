"""A writer process for the lake tests and benchmark: ``db.insert`` into a lake table.

    python lake_writer.py TARGET WORKER ROWS CHUNK MODE [ACKS]

Inserts rows ``(worker, k)`` for k in 0..ROWS-1 into ``events``. MODE ``rows``: one
``db.insert(..., wait=False)`` per row, then ``flush()``; ``chunks``: CHUNK rows per
``db.insert`` (waiting for each); ``pipelined``: CHUNK rows per ``db.insert(...,
wait=False)`` with up to ``DEPTH`` receipts in flight, each waited for in order (a
producer that does not stop for each commit: the writer commits the chunks queued
meanwhile together); ``serial``: as ``chunks``, with the lake's commit lock
(``LakeOptions(serial_commits=...)``; a file target has none). With ACKS, each
acknowledged chunk appends ``first last`` to that file (fsynced) and a failed call ``ERR
<type> <first> <message>``: what the kill -9 and outage tests compare with the lake.
Prints ``done <seconds>``. With LAKE_WRITER_GO set, commits one warm-up row ``(worker,
-1)``, prints ``ready`` and starts at the next line on stdin (the benchmark: steady-
state rates, not a process's first insert).
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from typing import Any

import pyarrow as pa

import duckflock

DEPTH = 4  # receipts in flight in the ``pipelined`` mode


def rows_of(worker: int, first: int, end: int) -> pa.Table:
    """Rows ``(worker, k)`` for k in first..end-1."""
    return pa.table(
        {"worker": pa.array([worker] * (end - first), pa.int32()), "k": range(first, end)}
    )


def main() -> None:
    target, worker, rows, chunk, mode = sys.argv[1:6]
    acks_path = sys.argv[6] if len(sys.argv) > 6 else None
    w, n, size = int(worker), int(rows), int(chunk)
    if target.startswith("ducklake:"):
        # serial_commits only when asked: the benchmark runs this file on older code too
        serial: dict[str, Any] = {"serial_commits": 30.0} if mode == "serial" else {}
        options = duckflock.LakeOptions(maintenance_interval=None, retry_seconds=60.0, **serial)
        db = duckflock.connect(target, lake=options)
    else:  # the embedded single-file baseline of benchmarks/lake.py
        db = duckflock.connect(target)
    if os.environ.get("LAKE_WRITER_GO"):  # the benchmark starts every writer at once
        # warmed up as a long-running writer is: the table resolved, the writer started
        # and one commit made (row k = -1, not counted), so the timed rows are steady state
        db.insert("events", (w, -1))
        print("ready", flush=True)
        sys.stdin.readline()
    acks = open(acks_path, "a", buffering=1) if acks_path else None  # noqa: SIM115
    started = time.perf_counter()
    if mode == "rows":
        for k in range(n):
            db.insert("events", (w, k), wait=False)
        db.flush()
    elif mode == "pipelined":
        pending: deque[duckflock.Receipt] = deque()
        for first in range(0, n, size):
            if len(pending) >= DEPTH:
                pending.popleft().wait()
            pending.append(db.insert("events", rows_of(w, first, min(n, first + size)), wait=False))
        for receipt in pending:
            receipt.wait()
    else:
        for first in range(0, n, size):
            ks = range(first, min(n, first + size))
            try:
                db.insert("events", rows_of(w, first, ks[-1] + 1))
            except duckflock.DuckflockError as exc:
                if acks is not None:
                    message = str(exc).splitlines()[0]
                    acks.write(f"ERR {type(exc).__name__} {ks[0]} {message}\n")
                    continue
                raise
            if acks is not None:
                acks.write(f"{ks[0]} {ks[-1]}\n")
                os.fsync(acks.fileno())
    print(f"done {time.perf_counter() - started:.3f}", flush=True)
    db.close()


if __name__ == "__main__":
    main()
