"""The lake's commit lock (``LakeOptions(serial_commits=…)``): real writer processes and a
real PostgreSQL catalog (tests/pgcluster.py), as in tests/test_lake.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest

import duckflock
from duckflock.lake.lock import CommitLock
from test_lake import SCALE, acknowledged, counts, finish, new_lake, writer


def rollbacks(target: str) -> int:
    """Transactions rolled back in the lake's PostgreSQL database, once every other
    session of it has ended (a session's figures reach pg_stat_database as it ends)."""
    dsn = target.removeprefix("ducklake:postgres:")
    with psycopg.connect(dsn, autocommit=True) as pg:
        deadline = time.monotonic() + 30
        others = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        while (row := pg.execute(others).fetchone()) is not None and row[0]:
            assert time.monotonic() < deadline, "the writers' sessions did not end"
            time.sleep(0.01)  # polling PostgreSQL for the sessions' end, not synchronising
        pg.execute("SELECT pg_stat_force_next_flush()")
        row = pg.execute(
            "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("mode", ["chunks", "serial"])
def test_serial_commits_leave_no_race_to_lose(postgres: Any, tmp_path: Path, mode: str) -> None:
    # 4 processes committing 100-row chunks into one table: without the lock about every
    # other commit loses the race for the next snapshot id (PostgreSQL rolls it back and
    # DuckLake tries again); with it none does. Every acknowledged chunk, once, either way.
    target, _ = new_lake(postgres, tmp_path)
    before = rollbacks(target)
    rows = int(2_000 * SCALE)
    acks = [tmp_path / f"acks-{w}" for w in range(4)]
    writers = [writer(target, w, rows, 100, mode, acks[w]) for w in range(4)]
    for process in writers:
        finish(process)
    lost = rollbacks(target) - before
    with duckflock.connect(target) as db:
        for w in range(4):
            assert acknowledged(acks[w]) == ([(k, k + 99) for k in range(0, rows, 100)], [])
            assert counts(db, w) == dict.fromkeys(range(rows), 1)
    if mode == "serial":
        assert lost == 0
    else:  # the race the lock takes away is real here too
        assert lost > 0


def test_a_held_lock_delays_a_commit_at_most_serial_commits(postgres: Any, tmp_path: Path) -> None:
    target, _ = new_lake(postgres, tmp_path)
    dsn = target.removeprefix("ducklake:postgres:")
    options = duckflock.LakeOptions(maintenance_interval=None, serial_commits=0.5)
    batch = pa.table({"worker": pa.array([7] * 10, pa.int32()), "k": range(10)})
    with duckflock.connect(target, lake=options) as db:
        db.insert("events", (7, -1))  # the writer started, the lock's cursor made
        with psycopg.connect(dsn, autocommit=True) as holder:  # a writer that hangs
            holder.execute("SELECT pg_advisory_lock(%s)", [CommitLock.KEY])
            started = time.monotonic()
            db.insert("events", batch)  # waits for the lock, then commits without it
            waited = time.monotonic() - started
        assert 0.5 <= waited < 20
        started = time.monotonic()
        db.insert("events", (7, 10))  # the lock is free again: no wait
        assert time.monotonic() - started < 0.5
        assert counts(db, 7) == dict.fromkeys(range(-1, 11), 1)


def test_serial_commits_need_a_postgres_catalog(tmp_path: Path) -> None:
    target = f"ducklake:{tmp_path / 'meta.ducklake'}"
    options = duckflock.LakeOptions(serial_commits=1.0)
    with pytest.raises(ValueError, match="serial_commits needs a lake whose catalog"):
        duckflock.connect(target, data_path=str(tmp_path / "data"), lake=options)
    with pytest.raises(ValueError, match="serial_commits"):
        duckflock.LakeOptions(serial_commits=0)
    with pytest.raises(TypeError, match="serial_commits"):
        duckflock.LakeOptions(serial_commits="1s")  # type: ignore[arg-type]


def test_the_lock_is_a_session_lock_on_a_connection_of_its_own(
    postgres: Any, tmp_path: Path
) -> None:
    # where psycopg reaches the catalog, the lock is pg_advisory_lock/unlock on its own
    # connection (one round trip each), held by one writer at a time, let go by release
    from duckflock.lake.connection import LakeOptions, open_lake

    target, data = new_lake(postgres, tmp_path)
    dsn = target.removeprefix("ducklake:postgres:")
    held = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    opened = [
        open_lake(target, data_path=data, options=LakeOptions(), read_only=False, config={})
        for _ in range(2)
    ]
    first, second = CommitLock(30.0, "lake"), CommitLock(0.2, "lake")
    with psycopg.connect(dsn, autocommit=True) as pg:
        first.acquire(opened[0])
        assert first._direct is not None and first.taken == 1
        assert pg.execute(held).fetchone() == (1,)
        started = time.monotonic()
        second.acquire(opened[1])  # waits its 0.2 s, then commits without the lock
        assert time.monotonic() - started >= 0.2
        assert (second.taken, second.missed) == (0, 1)
        second.release()  # not held: nothing to let go
        assert pg.execute(held).fetchone() == (1,)
        first.release()
        assert pg.execute(held).fetchone() == (0,)
        second.acquire(opened[1])  # free now, on the connection kept after the wait
        assert second.taken == 1 and second._direct is not None
        second.release()
        assert pg.execute(held).fetchone() == (0,)
    for connection in opened:
        connection.close()
