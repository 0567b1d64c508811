"""Acknowledged means durable: rows survive kill -9 right after their acknowledgement."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import duckflock

CHILD = textwrap.dedent(
    """
    import sys, threading
    import duckflock

    path, cycle = sys.argv[1], int(sys.argv[2])
    db = duckflock.connect(path)
    db.execute("CREATE TABLE IF NOT EXISTS acked (id BIGINT PRIMARY KEY, thread INTEGER)")
    out = threading.Lock()

    def produce(t):
        i = 0
        while True:
            row_id = cycle * 10_000_000 + t * 1_000_000 + i
            db.insert("acked", {"id": row_id, "thread": t})
            with out:  # printed only after the commit was acknowledged
                sys.stdout.write(f"{row_id}\\n")
                sys.stdout.flush()
            i += 1

    for t in range(4):
        threading.Thread(target=produce, args=(t,), daemon=True).start()
    threading.Event().wait()
    """
)


def test_acknowledged_rows_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "crash.duckdb"
    acknowledged: set[int] = set()
    for cycle in range(5):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(cycle)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        for _ in range(300 + 97 * cycle):
            line = child.stdout.readline()
            assert line, child.stderr.read() if child.stderr else "child died"
            acknowledged.add(int(line))
        os.kill(child.pid, signal.SIGKILL)  # right after an acknowledgement, mid-stream
        rest, _ = child.communicate(timeout=30)
        acknowledged.update(int(x) for x in rest.split())  # acks printed before the kill
        assert child.returncode == -signal.SIGKILL

        with duckflock.connect(path, read_only=True) as db:
            ids = [row[0] for row in db.execute("SELECT id FROM acked").fetchall()]
        assert len(ids) == len(set(ids)), "a row was committed twice"
        missing = acknowledged - set(ids)
        assert not missing, f"cycle {cycle}: {len(missing)} acknowledged rows lost"
