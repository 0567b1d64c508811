"""Two ``duckflock serve`` processes in front of one DuckLake (PostgreSQL catalog):
clients spread over both, every acknowledged row lands exactly once, and an analysis on
either server converges to the same result; /metrics and /v1/stats show the lake."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import duckflock
from conftest import free_port
from test_lake import new_lake


class LakeServer:
    """``duckflock serve ducklake:…`` as a subprocess on 127.0.0.1."""

    def __init__(self, target: str, log: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "duckflock", "serve", target, "--port", str(port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        with duckflock.Client(self.url, timeout=1) as client:
            while True:
                assert self.process.poll() is None, log.read_text()
                try:
                    client.health()
                    return
                except (duckflock.TransportError, duckflock.ClosedError):
                    assert time.monotonic() < deadline, log.read_text()
                    threading.Event().wait(0.05)  # still starting: ask again

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)
        self.log.close()
        return int(self.process.returncode)


@pytest.fixture
def servers(postgres: Any, tmp_path: Path) -> Iterator[tuple[str, list[LakeServer]]]:
    target, _ = new_lake(postgres, tmp_path)
    started = [LakeServer(target, tmp_path / f"server-{n}.log") for n in range(2)]
    yield target, started
    for server in started:
        server.stop()


def test_two_servers_one_lake_every_row_once_and_analyses_converge(
    servers: tuple[str, list[LakeServer]],
) -> None:
    target, (one, two) = servers
    sql = "SELECT worker, count(*) AS n, count(DISTINCT k) AS keys FROM events GROUP BY 1"
    for server in (one, two):
        with duckflock.Client(server.url) as client:
            client.analysis("per_worker", sql, on_change=True, min_interval=0)
    calls, size = 25, 100
    errors: list[BaseException] = []

    def produce(worker: int) -> None:
        server = (one, two)[worker % 2]
        try:
            with duckflock.Client(server.url, timeout=60) as client:
                for call in range(calls):
                    ks = range(call * size, (call + 1) * size)
                    client.insert("events", [{"worker": worker, "k": k} for k in ks])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    expected = [(w, calls * size, calls * size) for w in range(4)]
    for server in (one, two):
        with duckflock.Client(server.url, timeout=30) as client:
            deadline = time.monotonic() + 30
            version = 0
            while True:
                result = client.result("per_worker", min_version=version + 1, timeout=10)
                version = result.version
                if sorted(result.rows()) == expected:
                    break
                assert time.monotonic() < deadline, sorted(result.rows())
    with duckflock.connect(target) as db:
        twice = db.execute(
            "SELECT count(*) FROM (SELECT worker, k FROM events GROUP BY 1, 2 HAVING count(*) > 1)"
        ).fetchone()
        assert twice == (0,)
        assert db.execute("SELECT count(*) FROM events").fetchone() == (4 * calls * size,)
    for server in (one, two):
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
        assert "duckflock_lake_snapshot_id" in metrics
        assert "duckflock_lake_catalog_up 1.0" in metrics
        lake = httpx.get(server.url + "/v1/stats", timeout=10).json()["lake"]
        assert lake["snapshot"] is not None and lake["poll_error"] is None
    assert one.stop() == 0 and two.stop() == 0
