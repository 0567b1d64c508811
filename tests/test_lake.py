"""DuckLake: the Database API on a lake, and many processes writing one dataset through a
real PostgreSQL catalog (started by the session: tests/pgcluster.py).

Sizes are the issue's; ``DUCKFLOCK_LAKE_SCALE`` multiplies the rows per writer.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

import duckflock
from duckflock.lake import connection as lake_module

SCALE = float(os.environ.get("DUCKFLOCK_LAKE_SCALE", "1"))
WRITER = str(Path(__file__).with_name("lake_writer.py"))
_names = itertools.count()


def new_lake(cluster: Any, tmp_path: Path) -> tuple[str, Path]:
    """A lake of its own: a new PostgreSQL database and data folder, with ``events``."""
    dsn = cluster.create_database(f"lake_{os.getpid()}_{next(_names)}")
    target = f"ducklake:postgres:{dsn}"
    data = tmp_path / "lake-data"
    with duckflock.connect(target, data_path=str(data)) as db:
        db.execute("CREATE TABLE events (worker INTEGER, k BIGINT)")
    return target, data


@pytest.fixture
def lake(postgres: Any, tmp_path: Path) -> tuple[str, Path]:
    return new_lake(postgres, tmp_path)


def writer(target: str, worker: int, rows: int, chunk: int, mode: str, acks: Path | None = None):
    args = [sys.executable, WRITER, target, str(worker), str(rows), str(chunk), mode]
    if acks is not None:
        args.append(str(acks))
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen[str], timeout: float = 120.0) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return out


def acknowledged(acks: Path) -> tuple[list[tuple[int, int]], list[str]]:
    """The chunk ranges a writer saw acknowledged, and its failed calls."""
    ranges, errors = [], []
    for line in acks.read_text().splitlines():
        if line.startswith("ERR"):
            errors.append(line)
        elif line.strip():
            first, last = line.split()
            ranges.append((int(first), int(last)))
    return ranges, errors


def counts(db: duckflock.Database, worker: int) -> dict[int, int]:
    rows = db.execute(
        "SELECT k, count(*) FROM events WHERE worker = ? GROUP BY k", [worker]
    ).fetchall()
    return {int(k): int(n) for k, n in rows}


# -- the same API on a lake ------------------------------------------------------------


def test_file_catalog_gives_the_database_api(tmp_path: Path) -> None:
    target = f"ducklake:{tmp_path / 'meta.ducklake'}"
    options = duckflock.LakeOptions(poll_interval=0.05, maintenance_interval=None)
    with duckflock.connect(target, data_path=str(tmp_path / "data"), lake=options) as db:
        db.execute("CREATE TABLE t (a INTEGER, b VARCHAR)")
        db.analysis("n", "SELECT count(*) AS n FROM t", on_change=True, min_interval=0)
        db.insert("t", {"a": 1, "b": "x"})
        db.insert("t", [(i, "y") for i in range(5_000)])
        assert db.execute("SELECT count(*) FROM t").fetchone() == (5_001,)
        assert [t["name"] for t in db.tables()] == ["t"]
        assert db.tables()[0]["catalog"] == "lake"
        result = db.refresh("n")
        assert result.rows() == [(5_001,)]
        state = db.lake_state()
        assert state is not None and state["snapshot"] is not None
    # reopened: the rows are in the lake, and it is the default catalog again
    with duckflock.connect(target) as db:
        assert db.execute("SELECT count(*) FROM t").fetchone() == (5_001,)


def test_a_bad_row_fails_alone_on_a_lake(tmp_path: Path) -> None:
    target = f"ducklake:{tmp_path / 'meta.ducklake'}"
    with duckflock.connect(target, data_path=str(tmp_path / "data")) as db:
        db.execute("CREATE TABLE t (a INTEGER)")
        good = db.insert("t", {"a": 1}, wait=False)
        with pytest.raises(duckflock.RowRejectedError):
            db.insert("t", {"a": "not a number"})
        good.wait(10)
        assert db.execute("SELECT a FROM t").fetchall() == [(1,)]


def test_lake_commit_retries_start_at_once_and_settings_override_them(tmp_path: Path) -> None:
    # DuckLake's own defaults sleep 50-100 ms before retrying a commit that lost the race
    # for the next snapshot; duckflock sets its own at open, and LakeOptions.settings wins
    names = list(lake_module.RETRY_SETTINGS)
    query = "SELECT " + ", ".join(f"current_setting('{name}')" for name in names)
    target = f"ducklake:{tmp_path / 'meta.ducklake'}"
    with duckflock.connect(target, data_path=str(tmp_path / "data")) as db:
        row = db.execute(query).fetchone()
        assert row is not None
        assert row == tuple(lake_module.RETRY_SETTINGS.values())
        assert row[names.index("ducklake_retry_wait_ms")] < 100  # not DuckLake's default
    options = duckflock.LakeOptions(settings={"ducklake_retry_wait_ms": 250})
    with duckflock.connect(target, lake=options) as db:
        wait = db.execute("SELECT current_setting('ducklake_retry_wait_ms')").fetchone()
        assert wait == (250,)


def test_a_missing_extra_is_named() -> None:
    # the lookup connect() makes for each extension wheel, asked of a module that is not
    # installed (no patching: the real import machinery answers)
    with pytest.raises(ImportError, match=r"pip install 'duckflock\[lake\]'"):
        lake_module.extension_path("duckdb_extension_not_installed_here", "ducklake")


def test_lake_options_are_checked() -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        duckflock.LakeOptions(poll_interval=0)
    with pytest.raises(ValueError, match="maintenance steps"):
        duckflock.LakeOptions(maintenance=("vacuum",))
    with pytest.raises(ValueError, match="not a DuckDB setting"):
        duckflock.LakeOptions(settings={"threads = 1; DROP TABLE events": 1})
    with pytest.raises(ValueError, match="ducklake"):
        duckflock.connect(":memory:", data_path="/tmp/x")


def test_an_unreachable_catalog_is_an_open_error(postgres: Any, tmp_path: Path) -> None:
    target = f"ducklake:postgres:dbname=nowhere host={tmp_path} user=postgres password=secret"
    with pytest.raises(duckflock.OpenError, match="cannot open the lake") as caught:
        duckflock.connect(target, data_path=str(tmp_path / "data"))
    assert "secret" not in str(caught.value)


# -- many processes, one lake ----------------------------------------------------------


def test_four_writer_processes_every_row_once_and_an_analysis_follows(
    lake: tuple[str, Path],
) -> None:
    target, _ = lake
    rows = int(20_000 * SCALE)
    poll = 0.2
    # the fifth process (this one) also maintains the lake while the others write
    options = duckflock.LakeOptions(poll_interval=poll, maintenance_interval=0.5)
    with duckflock.connect(target, lake=options) as db:
        db.analysis(
            "per_worker",
            "SELECT worker, count(*) AS n, count(DISTINCT k) AS keys FROM events GROUP BY 1",
            on_change=True,
            min_interval=0,
        )
        writers = [writer(target, w, rows, 1, "rows") for w in range(4)]
        for process in writers:
            finish(process)
        finished = time.monotonic()
        expected = [(w, rows, rows) for w in range(4)]
        seen = None
        for result in db.watch("per_worker"):
            seen = sorted(result.rows())
            if seen == expected or time.monotonic() - finished > 30:
                break
        lag = time.monotonic() - finished
        assert seen == expected
        # within the polling interval (plus a generous margin for a loaded machine)
        assert lag < poll + 5.0
        for w in range(4):
            assert set(counts(db, w).values()) == {1}
        state = db.lake_state()
        assert state is not None and state["maintenance_runs"] >= 1


@pytest.mark.parametrize("mode", ["chunks", "serial"])  # serial: the victim may hold the lock
def test_kill_9_of_one_writer_keeps_what_it_acknowledged(
    lake: tuple[str, Path], tmp_path: Path, mode: str
) -> None:
    target, _ = lake
    rows = int(20_000 * SCALE)
    acks = [tmp_path / f"acks-{w}" for w in range(3)]
    writers = [writer(target, w, rows, 200, mode, acks[w]) for w in range(3)]
    victim = writers[0]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and victim.poll() is None:
        if acks[0].exists() and len(acks[0].read_text().splitlines()) >= 5:
            break
        time.sleep(0.01)  # polling the child's acknowledgements, not synchronising
    victim.kill()
    victim.communicate(timeout=30)
    for process in writers[1:]:
        finish(process)
    with duckflock.connect(target) as db:
        ranges, errors = acknowledged(acks[0])
        assert ranges and not errors
        present = counts(db, 0)
        assert set(present.values()) <= {1}  # nothing twice, acknowledged or not
        for first, last in ranges:
            assert all(present.get(k) == 1 for k in range(first, last + 1))
        for w in (1, 2):
            assert counts(db, w) == dict.fromkeys(range(rows), 1)
            assert acknowledged(acks[w]) == (
                [(k, min(rows, k + 200) - 1) for k in range(0, rows, 200)],
                [],
            )


def test_maintenance_reduces_data_files_and_keeps_rows(tmp_path: Path, postgres: Any) -> None:
    target, _ = new_lake(postgres, tmp_path)
    options = duckflock.LakeOptions(inline_rows=0, maintenance_interval=None)
    with duckflock.connect(target, lake=options) as db:
        for chunk in range(12):
            ks = list(range(chunk * 1_000, (chunk + 1) * 1_000))
            db.insert("events", pa.table({"worker": pa.array([0] * 1_000, pa.int32()), "k": ks}))
        report = db.maintain()
        assert report["errors"] == {}
        assert report["files_before"] >= 12
        assert report["files_after"] < report["files_before"]
        assert counts(db, 0) == dict.fromkeys(range(12_000), 1)
        state = db.lake_state()
        assert state is not None and state["last_maintenance"] == report


def test_scheduled_maintenance_runs_and_flushes_inlined_rows(tmp_path: Path, postgres: Any) -> None:
    target, _ = new_lake(postgres, tmp_path)
    files = "SELECT count(*) FROM ducklake_list_files('lake', 'events')"
    inlining = duckflock.LakeOptions(inline_rows=100, maintenance_interval=None)
    with duckflock.connect(target, lake=inlining) as db:
        for k in range(30):
            db.insert("events", (0, k))  # small commits: inlined in the catalog
        assert db.execute(files).fetchone() == (0,)
    options = duckflock.LakeOptions(inline_rows=100, maintenance_interval=0.2)
    with duckflock.connect(target, lake=options) as db:
        deadline = time.monotonic() + 30
        state = db.lake_state()
        while state is not None and not state["maintenance_runs"]:
            assert time.monotonic() < deadline, state
            time.sleep(0.05)  # polling the maintenance thread's figures
            state = db.lake_state()
        assert state is not None and state["maintenance_error"] is None
        assert counts(db, 0) == dict.fromkeys(range(30), 1)
        found = db.execute(files).fetchone()
        assert found is not None and found[0] >= 1  # the inlined rows now live in Parquet


def test_postgres_outage_writers_retry_and_lose_nothing(tmp_path: Path) -> None:
    from pgcluster import Cluster

    with Cluster() as cluster:  # its own: this test stops it
        target, _ = new_lake(cluster, tmp_path)
        rows = int(10_000 * SCALE)
        acks = [tmp_path / f"acks-{w}" for w in range(2)]
        writers = [writer(target, w, rows, 100, "chunks", acks[w]) for w in range(2)]
        deadline = time.monotonic() + 60
        while not all(a.exists() and len(a.read_text().splitlines()) >= 3 for a in acks):
            assert time.monotonic() < deadline
            time.sleep(0.01)  # polling the children's acknowledgements
        cluster.stop()
        stopped = [len(a.read_text().splitlines()) for a in acks]
        time.sleep(3.0)  # the outage itself: PostgreSQL is away this long
        cluster.start()
        for process in writers:
            finish(process)
        with duckflock.connect(target) as db:
            for w in range(2):
                ranges, errors = acknowledged(acks[w])
                assert not errors  # the writer retried by itself while PostgreSQL was away
                # and resumed (unless it had acknowledged every chunk before the stop: on
                # an idle machine 100 chunks can all land before PostgreSQL is down)
                assert len(ranges) > stopped[w] or stopped[w] == rows // 100
                assert counts(db, w) == dict.fromkeys(range(rows), 1)


# -- conflicts, read-only, the command line --------------------------------------------


def _conflict() -> duckdb.TransactionException:
    return duckdb.TransactionException("Transaction conflict: another commit changed events")


def test_a_conflict_is_retried_then_raised_as_conflict_error(tmp_path: Path) -> None:
    target = f"ducklake:{tmp_path / 'meta.ducklake'}"
    failures = {"left": 2}

    def flaky(at: str) -> None:
        if at == "commit" and failures["left"] > 0:
            failures["left"] -= 1
            raise _conflict()

    with duckflock.connect(target, data_path=str(tmp_path / "data")) as db:
        db.execute("CREATE TABLE t (a INTEGER)")
        db.writer().fault_hook = flaky
        db.insert("t", {"a": 1})  # two conflicts, then it commits
        assert failures["left"] == 0
        failures["left"] = 1_000  # conflicts that never end
        with pytest.raises(duckflock.ConflictError, match="kept conflicting"):
            db.insert("t", {"a": 2}, timeout=60)
        failures["left"] = 0
        db.insert("t", {"a": 3})  # the writer goes on
        assert db.execute("SELECT a FROM t ORDER BY a").fetchall() == [(1,), (3,)]


def test_read_only_lake_reads_and_refuses_inserts(tmp_path: Path) -> None:
    target = f"ducklake:{tmp_path / 'meta.ducklake'}"
    with duckflock.connect(target, data_path=str(tmp_path / "data")) as db:
        db.execute("CREATE TABLE t (a INTEGER)")
        db.insert("t", [(1,), (2,)])
    with duckflock.connect(target, read_only=True) as db:
        assert db.execute("SELECT count(*) FROM t").fetchone() == (2,)
        with pytest.raises(duckflock.IngestError, match="read-only"):
            db.insert("t", {"a": 3})


def test_the_command_line_takes_a_lake(tmp_path: Path) -> None:
    target = f"ducklake:{tmp_path / 'meta.ducklake'}"
    with duckflock.connect(target, data_path=str(tmp_path / "data")) as db:
        db.execute("CREATE TABLE t (a INTEGER)")
        db.insert("t", [(1,), (2,)])
    command = [sys.executable, "-m", "duckflock", "query", target, "SELECT sum(a) AS s FROM t"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert "3" in run.stdout
