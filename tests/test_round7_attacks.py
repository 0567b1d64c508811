"""Round 7's attacks on the new code (helper attack7): each a defect found, kept fixed."""

from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path

import pytest

import duckflock
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
    threads = [t for t in set(threading.enumerate()) - before if t.name != "duckflock-reaper"]
    assert "duckflock-writer" in {t.name for t in threads}
    dropped = weakref.ref(db)
    del db
    gc.collect()
    assert dropped() is None
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive(), thread.name
    with duckflock.connect(path) as again:
        assert again.execute("SELECT sum(v) FROM t").fetchone() == (3,)
