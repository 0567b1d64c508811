"""benchmarks/pgwire_replay.py, the client's own ceiling in benchmarks/pgwire.py (e):
a fetch recorded through its proxy from a real Postgres-port server, then replayed by
its forked process, gives the client exactly the rows the server gave, once per
connection it was told to serve."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import duckflock
import pgclients
from duckflock.server.pgwire import PgServer, PgSettings
from duckflock.server.settings import ServerSettings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import pgwire_replay

QUERY = "SELECT i, i * 1.5 AS x, 'row ' || i AS note FROM range(5000) t(i) ORDER BY i"


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    db = duckflock.connect()
    db.lock_down()
    server = PgServer(db, ServerSettings(), PgSettings(port=0)).start()  # tokenless: loopback
    try:
        yield server.port
    finally:
        server.stop()
        db.close()


def _fetch(out: list[Any], port: int) -> int:
    with psycopg.connect(pgclients.dsn(port, "x"), autocommit=True) as conn:
        rows = conn.cursor(binary=True).execute(QUERY).fetchall()
        with conn.cursor().copy(f"COPY ({QUERY}) TO STDOUT") as copy:
            copied = b"".join(bytes(block) for block in copy)
    out.append((rows, copied))
    return len(rows)


def test_a_replayed_fetch_gives_the_client_the_servers_rows(port: int) -> None:
    live: list[Any] = []
    turns = pgwire_replay.record(lambda at: _fetch(live, at), port)
    assert len(turns) >= 3  # start-up, the query, the COPY (and the goodbye)
    replayed: list[Any] = []
    with pgwire_replay.Replay(turns, 2) as replay:
        for _ in range(2):
            _fetch(replayed, replay.port)
    assert replay.process.exitcode == 0  # it served both connections, then ended
    assert replayed == live * 2
    assert len(live[0][0]) == 5000 and live[0][1].count(b"\n") == 5000
