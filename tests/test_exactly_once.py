"""Exactly-once ingest over the network (issue 22): concurrent clients send keyed
batches to a real ``duckflock serve`` that is killed with SIGKILL again and again — in
some cycles from outside at any moment, in others by the server itself right after a
commit is durable and before its reply leaves (``DUCKFLOCK_TEST_KILL_AFTER_COMMITS``).
The clients retry with the same key; at the end every batch is in the table once.

``DUCKFLOCK_ONCE_CYCLES`` sets the number of kill cycles (default 10)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import duckflock
from conftest import ServerProcess, free_port
from duckflock.server.serve import KILL_AFTER_COMMITS

CYCLES = int(os.environ.get("DUCKFLOCK_ONCE_CYCLES", "10"))
CLIENTS = 3
ROWS_PER_BATCH = 5
LOAD = [sys.executable, "-m", "duckflock", "load"]


class Sender(threading.Thread):
    """One client: keyed batches one after the other, each sent until acknowledged."""

    def __init__(self, url: str, number: int, stop: threading.Event) -> None:
        super().__init__(name=f"sender-{number}", daemon=True)
        self.url = url
        self.number = number
        self.stop = stop
        self.acknowledged: list[str] = []
        self.gave_up = 0  # the client's retries ran out (the server was down long)
        self.errors: list[BaseException] = []

    def run(self) -> None:
        client = duckflock.Client(self.url, timeout=5, retries=30, retry_seconds=30)
        try:
            batch = 0
            while not self.stop.is_set():
                key = f"c{self.number}-b{batch}"
                rows = [{"batch": key, "i": i} for i in range(ROWS_PER_BATCH)]
                deadline = time.monotonic() + 120
                while True:
                    try:
                        client.insert("readings", rows, idempotency_key=key)
                        break
                    except (duckflock.TransportError, duckflock.ServerBusyError) as exc:
                        self.gave_up += 1  # same key again: still at most once
                        if time.monotonic() > deadline:
                            self.errors.append(exc)
                            return
                self.acknowledged.append(key)
                batch += 1
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            client.close()


def _start(path: Path, port: int, kill_after: int | None) -> ServerProcess | None:
    """A server on ``port``; None when it killed itself before it was seen ready."""
    env = {KILL_AFTER_COMMITS: str(kill_after)} if kill_after else {KILL_AFTER_COMMITS: ""}
    try:
        return ServerProcess(path, port=port, env=env)
    except RuntimeError:  # exited early: by its own hook, already
        return None


def test_keyed_batches_land_exactly_once_across_kill_9_cycles(tmp_path: Path) -> None:
    path = tmp_path / "once.duckdb"
    with duckflock.connect(str(path)) as db:
        db.execute("CREATE TABLE readings (batch VARCHAR, i INTEGER)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    senders = [Sender(url, n, stop) for n in range(CLIENTS)]
    rng = random.Random(22)
    by_hook = by_signal = 0
    started = time.monotonic()
    # cycle n runs on a server started with the hook (n even) or without it (n odd)
    server = _start(path, port, rng.randint(1, 4))
    for sender in senders:
        sender.start()
    try:
        for cycle in range(CYCLES):
            if cycle % 2 == 0:
                # the server kills itself right after its Nth commit, before replying
                if server is not None:
                    server.process.wait(60)
                    assert server.process.returncode == -signal.SIGKILL, server.output()
                    server.log.close()
                by_hook += 1
                server = _start(path, port, None)
                assert server is not None
            else:
                # from outside, once the clients got a few more batches through
                assert server is not None
                seen = sum(len(s.acknowledged) for s in senders)
                deadline = time.monotonic() + 60
                while sum(len(s.acknowledged) for s in senders) < seen + rng.randint(1, 6):
                    assert time.monotonic() < deadline, "no batch got through"
                    assert not any(s.errors for s in senders), [s.errors for s in senders]
                    threading.Event().wait(0.01)  # polling the clients' progress
                server.process.send_signal(signal.SIGKILL)
                server.process.wait(30)
                server.log.close()
                by_signal += 1
                last = cycle == CYCLES - 1
                server = _start(path, port, None if last else rng.randint(1, 4))
        if server is None or server.process.poll() is not None:
            server = _start(path, port, None)  # the batches still in flight go through
        assert server is not None
        stop.set()
        for sender in senders:
            sender.join(120)
            assert not sender.is_alive()
        assert not any(s.errors for s in senders), [s.errors for s in senders]
    finally:
        stop.set()
        if server is not None:
            server.stop()
    with duckflock.connect(str(path)) as db:
        stored = Counter(
            dict(db.sql("SELECT batch, count(*) FROM readings GROUP BY batch").fetchall())
        )
    acknowledged = {key for s in senders for key in s.acknowledged}
    lost = [key for key in acknowledged if stored.get(key, 0) == 0]
    duplicated = [key for key, n in stored.items() if n > ROWS_PER_BATCH]
    partial = [key for key, n in stored.items() if 0 < n < ROWS_PER_BATCH]
    figures = (
        f"{CYCLES} kill cycles ({by_hook} after a commit, {by_signal} at any moment), "
        f"{len(acknowledged)} batches acknowledged, {sum(stored.values())} rows, "
        f"{sum(s.gave_up for s in senders)} calls sent again by the senders, "
        f"lost {len(lost)}, duplicated {len(duplicated)}, partial {len(partial)}, "
        f"{time.monotonic() - started:.1f} s"
    )
    print(figures)
    assert not lost and not duplicated and not partial, figures
    assert by_hook >= CYCLES // 2 and len(acknowledged) >= CYCLES
    # a batch stored but not acknowledged can only be each sender's last, in flight at stop
    assert set(stored) - acknowledged <= {f"c{s.number}-b{len(s.acknowledged)}" for s in senders}


def test_a_load_run_again_after_a_failure_resumes_without_duplicating_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "load.duckdb"
    with duckflock.connect(str(path)) as db:
        db.execute("CREATE TABLE events (id INTEGER, note VARCHAR)")
    data = tmp_path / "events.csv"
    data.write_text("id,note\n" + "".join(f"{i},n{i}\n" for i in range(1000)))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [*LOAD, url, "events", str(data), "--chunked", "--chunk-rows", "100"]
    # the server dies right after its third commit (before that chunk's reply); the load
    # keeps retrying the chunk, and is then killed too: a load that failed half-way
    server = _start(path, port, 3)
    assert server is not None
    load = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        server.process.wait(60)
        assert server.process.returncode == -signal.SIGKILL, server.output()
    finally:
        load.kill()
        load.wait(30)
        server.log.close()
    with duckflock.connect(str(path)) as db:
        assert db.sql("SELECT count(*) FROM events").fetchone() == (300,)  # 3 chunks in
    server = _start(path, port, None)
    assert server is not None
    try:
        again = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert again.returncode == 0, again.stderr
        with server.client() as client:
            counts = client.execute(
                "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM events"
            ).fetchall()
        assert counts == [(1000, 1000, 0, 999)]  # the first 300 rows are not in twice
        # the same load once more changes nothing; --again loads it again
        assert subprocess.run(command, capture_output=True, timeout=120).returncode == 0
        assert (
            subprocess.run([*command, "--again"], capture_output=True, timeout=120).returncode == 0
        )
        with server.client() as client:
            assert client.execute("SELECT count(*) FROM events").fetchall() == [(2000,)]
    finally:
        server.stop()
