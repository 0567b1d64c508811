"""Round 7's attacks on the new code (helper attack7): each a defect found, kept fixed."""

from __future__ import annotations

import threading
import weakref
from pathlib import Path

import pytest

import duckflock
from dropped import assert_collected, run_cleanly, started_since
from duckflock.core import lifecycle


def test_a_dropped_database_is_reaped_where_the_reaper_thread_is_gone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """After ``fork`` the child holds the parent's reaper Thread object, but not its
    thread: a Database the child drops unclosed must still have its writer closed
    (the child's writer thread leaked, and its rows were never handed back)."""
    dead = threading.Thread(target=lambda: None, name="duckflock-reaper")
    dead.start()
    dead.join()
    monkeypatch.setattr(lifecycle, "_reaper", dead)  # what a forked child inherits
    path = tmp_path / "child.duckdb"
    before = set(threading.enumerate())
    db = duckflock.connect(path)
    db.execute("CREATE TABLE t (v INTEGER)")
    db.insert("t", [{"v": 1}])
    db.insert("t", [{"v": 2}], wait=False)
    threads = started_since(before)
    assert "duckflock-writer" in {t.name for t in threads}
    dropped = weakref.ref(db)
    del db
    assert_collected(dropped, threads)
    with duckflock.connect(path) as again:
        assert again.execute("SELECT sum(v) FROM t").fetchone() == (3,)


@pytest.mark.parametrize(
    ("kind", "keys"),
    [("TINYINT", [-100, -54, 0, 1, 50]), ("SMALLINT", [-30000, 24466, 0, 30000])],
)
def test_narrow_integer_keys_spread_past_half_their_type_are_looked_up_right(
    kind: str, keys: list[int]
) -> None:
    """KeyIndex (live/fold/dense.py) numbered the state's keys by ``key - low`` in the
    key's own type: a TINYINT spread past 127 (SMALLINT past 32,767) wrapped, so one
    key's rows were counted into another's group (here ``keys[1]``'s into the last's)."""
    with duckflock.connect() as db:
        db.execute(f"CREATE TABLE t (k {kind}, v DOUBLE)")
        db.insert("t", [{"k": k, "v": 1.0} for k in keys])
        sql = "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k"
        db.analysis("a", sql)
        db.result("a", min_version=1, timeout=30)
        for _ in range(2):
            db.insert("t", [{"k": k, "v": 1.0} for k in keys[:-1] * 3])  # known groups
            result = db.refresh("a")
            assert result.mode == "incremental", result.reason
            assert sorted(result.rows()) == sorted(db.execute(sql).fetchall())


def test_a_sliding_window_without_group_by_refreshes() -> None:
    """A window over ``now()`` with no GROUP BY: its buckets inside the window have no
    key column left, and the numpy combine (live/fold/coded.py) indexed the first key
    column of none (IndexError: every refresh after the first insert failed)."""
    sql = "SELECT count(*) AS n, sum(v) AS s FROM t WHERE ts > now() - INTERVAL 1 HOUR"
    with duckflock.connect() as db:
        db.execute("CREATE TABLE t (ts TIMESTAMP, v DOUBLE)")
        db.analysis("recent", sql)
        for n in (3, 2):
            db.execute("INSERT INTO t SELECT now()::TIMESTAMP, 1.0 FROM range(?)", [n])
            result = db.refresh("recent", timeout=30)
            assert result.error is None, result.error
            full = db.execute(sql.replace("now()", "?::TIMESTAMPTZ"), [result.now]).fetchall()
            assert result.rows() == full


def test_a_database_dropped_just_before_exit_loses_nothing_and_does_not_abort(
    tmp_path: Path,
) -> None:
    """``del db`` as a script's last line: the reaper (a daemon thread) was still
    closing its writer when the interpreter tore down, so DuckDB aborted the process
    ("terminate called without an active exception") and every row insert(wait=False)
    had accepted was lost. Exit now waits for the closes the reaper was handed."""
    script = (
        "import sys, duckflock\n"
        "db = duckflock.connect(sys.argv[1])\n"
        "db.execute('CREATE TABLE IF NOT EXISTS t (x INTEGER)')\n"
        "db.analysis('a', 'SELECT count(*) FROM t', on_change=True, persist=False)\n"
        "for i in range(100):\n"
        "    db.insert('t', [{'x': i}] * 50, wait=False)\n"
        "del db\n"
    )
    path = tmp_path / "dropped-at-exit.duckdb"
    run_cleanly(script, path, times=2)
    with duckflock.connect(path) as db:
        assert db.execute("SELECT count(*) FROM t").fetchone() == (10_000,)


def test_a_file_reopened_while_a_dropped_databases_writer_drains_stays_exact(
    tmp_path: Path,
) -> None:
    """The claim on a file (core/opening.py) was let go as the dropped Database was
    collected, before the reaper had closed its writer: a second Database opened the
    file while the first writer still committed, and its analyses never saw those
    commits (a count 300,000 short). The file opens once the closes are done."""
    import pyarrow as pa

    path = tmp_path / "drained.duckdb"
    db = duckflock.connect(path)
    db.execute("CREATE TABLE t (x INTEGER)")
    batch = pa.table({"x": pa.array(range(20), pa.int32())})
    for _ in range(5_000):
        db.insert("t", batch, wait=False)
    del db
    with duckflock.connect(path) as again:
        again.analysis("n", "SELECT count(*) AS n FROM t")
        assert again.refresh("n").rows() == [(100_000,)]
        again.insert("t", [{"x": 1}])
        assert again.refresh("n").rows() == [(100_001,)]
