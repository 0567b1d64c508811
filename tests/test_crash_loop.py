"""Fault suite: kill -9 in the middle of ingest, many times.

A child process ingests from several threads (batches of 1 to 150,000 rows, an analysis
refreshing) and logs each batch id before submitting it and again after its
acknowledgement; the parent SIGKILLs it at a random moment, reopens the database and
checks: every acknowledged batch is present exactly once and whole, no row that was never
submitted is there, and every batch is all-or-nothing. ``DUCKFLOCK_CRASH_CYCLES`` sets
the number of cycles (default 20, the CI size, or 20 x ``DUCKFLOCK_FAULT_SCALE``; 100 for
a long run).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import duckflock

SCALE = max(1, int(os.environ.get("DUCKFLOCK_FAULT_SCALE", "1")))
CYCLES = int(os.environ.get("DUCKFLOCK_CRASH_CYCLES", str(20 * SCALE)))
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

CHILD = r"""
import os, random, sys, threading
import pyarrow as pa
import duckflock

path, logdir, cycle, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if sys.stdin.readline() != "go\n":  # started ahead, while the cycle before ran: not needed
    sys.exit(0)
db = duckflock.connect(path)
db.execute("CREATE TABLE IF NOT EXISTS t (batch BIGINT, i INTEGER)")
db.analysis("rows", "SELECT count(*) AS n, count(DISTINCT batch) AS b FROM t", every=0.05)

def size(rng):
    roll = rng.random()
    if roll < 0.55:
        return rng.randint(1, 10)
    if roll < 0.85:
        return rng.randint(11, 2000)
    if roll < 0.99:
        return rng.randint(2001, 10000)
    return 150_000

def producer(lane):
    rng = random.Random(seed * 100 + lane)
    name = os.path.join(logdir, f"{cycle}-{lane}.log")
    log = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    for k in range(10**9):
        batch = cycle * 10**9 + lane * 10**7 + k
        n = size(rng)
        os.write(log, f"S {batch} {n}\n".encode())
        if n == 1:
            db.insert("t", {"batch": batch, "i": 0})
        elif n < 2000:
            db.insert("t", [(batch, i) for i in range(n)])
        else:
            db.insert("t", pa.table({"batch": pa.array([batch] * n, pa.int64()),
                                     "i": pa.array(range(n), pa.int32())}))
        os.write(log, f"A {batch}\n".encode())

for lane in range(3):
    threading.Thread(target=producer, args=(lane,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""


def _read_logs(logdir: Path, cycle: int) -> tuple[dict[int, int], set[int]]:
    submitted: dict[int, int] = {}
    acked: set[int] = set()
    for log in logdir.glob(f"{cycle}-*.log"):
        for line in log.read_text().splitlines():
            fields = line.split()
            if len(fields) == 3 and fields[0] == "S":
                submitted[int(fields[1])] = int(fields[2])
            elif len(fields) == 2 and fields[0] == "A":
                acked.add(int(fields[1]))
    return submitted, acked


@pytest.mark.timeout(int(60 + CYCLES * 8))
def test_kill_9_loses_no_acknowledged_row_and_tears_no_batch(tmp_path: Path) -> None:
    path = tmp_path / "crash.duckdb"
    logdir = tmp_path / "logs"
    logdir.mkdir()
    rng = random.Random(int(os.environ.get("DUCKFLOCK_CRASH_SEED", "8")))
    submitted: dict[int, int] = {}
    acked: set[int] = set()
    totals: dict[str, float] = {
        "cycles": 0,
        "acked_batches": 0,
        "rows_checked": 0,
        "lost": 0,
        "duplicated": 0,
    }
    totals |= {"unexpected": 0, "torn": 0}
    checked = 0
    started = time.monotonic()

    def start(cycle: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(logdir), str(cycle), str(cycle)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # each child is started one cycle ahead and imports while the cycle before runs; it
    # opens the database only when told to go, after the cycle before was checked
    upcoming = start(1)
    try:
        for cycle in range(1, CYCLES + 1):
            child, upcoming = upcoming, start(cycle + 1)
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write("go\n")
            child.stdin.flush()
            ready = child.stdout.readline()
            assert ready.strip() == "ready", child.communicate(timeout=30)[1][-3000:]
            # a random moment: mid-batch, mid-commit, mid-checkpoint, mid-analysis
            time.sleep(rng.uniform(0.05, 0.8))
            child.send_signal(signal.SIGKILL)
            child.communicate(timeout=30)
            assert child.returncode == -signal.SIGKILL
            cycle_submitted, cycle_acked = _read_logs(logdir, cycle)
            submitted |= cycle_submitted
            acked |= cycle_acked
            with duckflock.connect(path) as db:
                # this cycle's batches in detail; earlier cycles by their total (checked before)
                present = {
                    batch: (rows, distinct, low, high)
                    for batch, rows, distinct, low, high in db.execute(
                        "SELECT batch, count(*), count(DISTINCT i), min(i), max(i) FROM t "
                        "WHERE batch >= ? GROUP BY 1",
                        [cycle * 10**9],
                    ).fetchall()
                }
                total = db.execute("SELECT count(*) FROM t").fetchone()
            assert total is not None
            for batch in cycle_acked:
                n = submitted[batch]
                got = present.get(batch)
                if got is None:
                    totals["lost"] += 1
                elif got[0] > n:
                    totals["duplicated"] += 1
                elif got != (n, n, 0, n - 1):
                    totals["torn"] += 1
            for batch, (rows, distinct, low, high) in present.items():
                size = cycle_submitted.get(batch)
                if size is None:
                    totals["unexpected"] += 1
                elif (rows, distinct, low, high) != (size, size, 0, size - 1):
                    totals["torn" if rows <= size else "duplicated"] += 1
            checked += sum(rows for rows, *_ in present.values())
            # nothing of earlier cycles was lost, doubled or added since they were checked
            assert total[0] == checked, (total[0], checked)
            totals["cycles"] = cycle
            totals["acked_batches"] = len(acked)
            totals["rows_checked"] = checked
            assert totals["lost"] == totals["duplicated"] == 0, totals
            assert totals["unexpected"] == totals["torn"] == 0, totals
    finally:  # the child started ahead: told not to go, it exits without opening
        upcoming.communicate(input="", timeout=60)
    assert upcoming.returncode == 0
    totals["seconds"] = round(time.monotonic() - started, 1)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "crash-loop.json").write_text(json.dumps(totals, indent=1))
    print("crash loop:", totals)
    assert totals["acked_batches"] > CYCLES  # the children really ingested
