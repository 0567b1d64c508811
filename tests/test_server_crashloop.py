"""Crash loop, server: three client processes ingest while the server is SIGKILLed and
restarted again and again. Every acknowledged request is there exactly once; every
request that failed or timed out is there entirely or not at all.

DUCKFLOCK_CRASH_CYCLES sets the number of kills (10 by default, the CI size).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckflock
from conftest import ServerProcess, free_port

BATCH = 50  # rows per request

CLIENT = textwrap.dedent(
    """
    import json, sys, threading
    from pathlib import Path
    import httpx

    url, producer, log, stop = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    batch = int(sys.argv[5])
    pause = threading.Event()
    with log.open("a") as out, httpx.Client(base_url=url, timeout=5) as http:
        request = 0
        while not stop.exists():
            rows = [{"p": producer, "i": request * batch + j, "note": str(request)}
                    for j in range(batch)]
            try:
                response = http.post("/v1/tables/events/rows", json=rows)
                outcome = "ack" if response.status_code == 200 else f"fail{response.status_code}"
            except httpx.HTTPError as exc:
                outcome = "fail:" + type(exc).__name__
            out.write(json.dumps([request, outcome]) + "\\n")
            out.flush()
            request += 1
            if outcome != "ack":
                pause.wait(0.05)  # the server is down: do not spin while it restarts
    """
)


def _acks(logs: list[Path]) -> int:
    total = 0
    for log in logs:
        if log.exists():
            total += log.read_text().count('"ack"')
    return total


def test_acknowledged_ingest_survives_repeated_sigkill(tmp_path: Path) -> None:
    cycles = int(os.environ.get("DUCKFLOCK_CRASH_CYCLES", "10"))
    config = tmp_path / "crash.toml"
    config.write_text(
        "[[tables]]\n"
        'sql = "CREATE TABLE IF NOT EXISTS events (p INTEGER, i INTEGER, note VARCHAR)"\n'
    )
    database = tmp_path / "crash.duckdb"
    port = free_port()
    args = ("--config", str(config))
    stop = tmp_path / "stop"
    logs = [tmp_path / f"client{p}.log" for p in range(3)]
    server = ServerProcess(database, *args, port=port)
    clients = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT, server.url, str(p), str(logs[p]), str(stop), str(BATCH)]
        )
        for p in range(3)
    ]
    try:
        for _ in range(cycles):
            # let each life of the server acknowledge some requests, then kill it mid-stream
            target = _acks(logs) + 30
            deadline = time.monotonic() + 60
            while _acks(logs) < target:
                assert time.monotonic() < deadline, server.output()[-3000:]
                assert all(c.poll() is None for c in clients)
                threading.Event().wait(0.05)  # polling the clients' logs, not a sync point
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(30)
            server.log.close()
            server = ServerProcess(database, *args, port=port)
        target = _acks(logs) + 30
        deadline = time.monotonic() + 60
        while _acks(logs) < target:
            assert time.monotonic() < deadline
            threading.Event().wait(0.05)
    finally:
        stop.touch()
        for client in clients:
            client.wait(60)
        assert server.stop() == 0
    assert [c.returncode for c in clients] == [0, 0, 0]

    with duckflock.connect(database, read_only=True) as db:
        found = {
            (p, int(note)): (n, distinct)
            for p, note, n, distinct in db.execute(
                "SELECT p, note, count(*), count(DISTINCT i) FROM events GROUP BY p, note"
            ).fetchall()
        }
    acked = failed = 0
    for p, log in enumerate(logs):
        for line in log.read_text().splitlines():
            request, outcome = json.loads(line)
            rows = found.pop((p, request), (0, 0))
            if outcome == "ack":
                acked += 1
                assert rows == (BATCH, BATCH), (p, request, rows)  # exactly once
            else:
                failed += 1
                assert rows in ((0, 0), (BATCH, BATCH)), (p, request, rows)  # all or nothing
    assert found == {}  # nothing that was not sent
    print(f"crash loop: {cycles} SIGKILLs, {acked} acknowledged, {failed} failed requests")
    assert acked >= 30 * (cycles + 1)
