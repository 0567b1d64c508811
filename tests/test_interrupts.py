"""Ctrl-C between a write's commit and its hand-over to the analyses leaves none wrong.

The Database's fault seam (``db.fault_hook``) is called at named points of a statement's
run; raising KeyboardInterrupt there is what a Ctrl-C at that instant does. After it, every
analysis must still equal a full run of its SQL.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import duckflock

QUERIES = {
    "sums": "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k",
    "extremes": "SELECT k, min(v) AS lo, max(v) AS hi FROM t GROUP BY k",
    "total": "SELECT count(*) AS n, sum(v) AS s FROM t",
}


@pytest.fixture
def db() -> Iterator[duckflock.Database]:
    database = duckflock.connect()
    database.execute("CREATE TABLE t (k VARCHAR, v INTEGER)")
    for name, sql in QUERIES.items():
        database.analysis(name, sql)
    database.insert("t", [{"k": k, "v": v} for k in "abc" for v in range(10)])
    for name in QUERIES:
        database.refresh(name)
    database.insert("t", {"k": "a", "v": 100})
    for name in QUERIES:
        assert database.refresh(name).mode == "incremental"  # states kept from here on
    yield database
    database.close()


def _interrupt_at(point: str) -> object:
    def fault(at: str) -> None:
        if at == point:
            raise KeyboardInterrupt

    return fault


def _all_equal(db: duckflock.Database) -> None:
    for name, sql in QUERIES.items():
        result = db.refresh(name)
        assert result.error is None
        assert sorted(result.rows()) == sorted(db.execute(sql).fetchall()), name


@pytest.mark.parametrize("point", ["deleted", "committed", "handed", "ran"])
def test_a_retention_delete_interrupted_anywhere(db: duckflock.Database, point: str) -> None:
    before = db.execute("SELECT count(*) FROM t WHERE v >= 5").fetchone()
    db.fault_hook = _interrupt_at(point)
    with pytest.raises(KeyboardInterrupt):
        db.execute("DELETE FROM t WHERE v >= 5")
    db.fault_hook = lambda at: None
    after = db.execute("SELECT count(*) FROM t WHERE v >= 5").fetchone()
    assert after == (before if point == "deleted" else (0,))  # before COMMIT: undone
    _all_equal(db)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE t SET v = v + 1 WHERE k = 'b'",
        "SELECT 1; DELETE FROM t WHERE k = 'c'",  # not captured: its analyses rebuild
        "INSERT INTO t VALUES ('d', 7)",
        "ALTER TABLE t ADD COLUMN extra INTEGER",
    ],
)
def test_a_write_interrupted_after_it_ran(db: duckflock.Database, sql: str) -> None:
    db.fault_hook = _interrupt_at("ran")
    with pytest.raises(KeyboardInterrupt):
        db.execute(sql)
    db.fault_hook = lambda at: None
    _all_equal(db)


def test_a_write_through_sql_interrupted_after_it_ran(db: duckflock.Database) -> None:
    db.fault_hook = _interrupt_at("ran")
    with pytest.raises(KeyboardInterrupt):
        db.sql("UPDATE t SET v = -v WHERE k = 'a'")
    db.fault_hook = lambda at: None
    _all_equal(db)
