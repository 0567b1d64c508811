from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import duckflock
from duckflock.live import steps
from duckflock.live.fold import detached, merges, query, touch


@pytest.fixture(params=["memory", "file"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[duckflock.Database]:
    """A Database in memory and on a file: most behaviour must hold for both."""
    target = ":memory:" if request.param == "memory" else str(tmp_path / "test.duckdb")
    database = duckflock.connect(target)
    yield database
    database.close()


@pytest.fixture
def memdb() -> Iterator[duckflock.Database]:
    database = duckflock.connect()
    yield database
    database.close()


@pytest.fixture
def fold_queries(monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[str]]:
    """Call it to start counting: the list of every DuckDB query a refresh's fold runs
    from then on (each goes through ``over_arrow``); a pyarrow fold runs none."""

    def start() -> list[str]:
        queries: list[str] = []
        real = query.over_arrow

        def counted(cursor: Any, sql: str, *tables: Any) -> Any:
            queries.append(sql)
            return real(cursor, sql, *tables)

        for module in (steps, merges, detached, touch):
            monkeypatch.setattr(module, "over_arrow", counted)
        return queries

    return start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A real ``duckflock serve`` subprocess on 127.0.0.1 (uvicorn)."""

    def __init__(
        self,
        database: Path,
        *args: str,
        token: str | None = None,
        port: int | None = None,
        env: dict[str, str] | None = None,
        log_level: str = "warning",
    ) -> None:
        self.database = database
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        command = [
            sys.executable,
            "-m",
            "duckflock",
            "serve",
            str(database),
            "--port",
            str(self.port),
            "--log-level",
            log_level,
            *args,
        ]
        if token:
            command += ["--token", token]
        self.log_path = database.with_suffix(".log")
        self.log = self.log_path.open("a+")
        environ = {**os.environ, **(env or {})}
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=environ
        )
        try:
            self._wait_ready()
        except BaseException:  # never seen ready: stopped here, its log closed (the
            self.stop()  # caller has no object to stop; an open log is a ResourceWarning)
            raise

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with duckflock.Client(self.url, timeout=1) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited early:\n{self.output()}")
                try:
                    client.health()
                    return
                except (duckflock.TransportError, duckflock.ClosedError):
                    threading.Event().wait(0.05)  # the server is still starting: try again
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.output()}")

    def client(self, **kwargs: Any) -> duckflock.Client:
        return duckflock.Client(self.url, token=self.token, **kwargs)

    def http(self, **kwargs: Any) -> httpx.Client:
        """A plain HTTP client on the server's URL, with its token: for what the Client
        does not send (metrics, raw bodies)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return int(self.process.returncode)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    config = tmp_path / "duckflock.toml"
    config.write_text(
        "[[tables]]\n"
        'sql = "CREATE TABLE IF NOT EXISTS events (p INTEGER, i INTEGER, note VARCHAR)"\n'
    )
    process = ServerProcess(tmp_path / "served.duckdb", "--config", str(config))
    yield process
    process.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """One real PostgreSQL server for the session (Debian's, see tests/pgcluster.py)."""
    from pgcluster import Cluster

    cluster = Cluster()
    yield cluster
    cluster.close()
