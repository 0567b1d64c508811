"""Round 8's fixes of what round 7 noticed and left (helper fix8): each a test that
failed on main."""

from __future__ import annotations

import threading

import pytest

from duckflock.core import lifecycle


def test_the_exit_wait_for_the_reapers_closes_is_bounded_by_the_writers_close_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``reaped()`` (run at exit) waited without a bound for the closes handed to the
    reaper: a writer close that hung would hang the interpreter's exit. It waits as long
    as a writer's close does (``CLOSE_SECONDS``), no longer."""
    monkeypatch.setattr(lifecycle, "CLOSE_SECONDS", 0.05, raising=False)
    hung, done = threading.Event(), threading.Event()
    lifecycle._start_reaper()
    lifecycle._DROPPED.put(hung.wait)  # a close that does not return
    waiter = threading.Thread(target=lambda: (lifecycle.reaped(), done.set()), daemon=True)
    try:
        waiter.start()
        assert done.wait(10), "reaped() did not return"
    finally:
        hung.set()  # the reaper goes on
    waiter.join(10)


NUMERIC = [
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
    "FLOAT",
    "DOUBLE",
    "DECIMAL(4,1)",
    "DECIMAL(18,3)",
    "DECIMAL(38,0)",
    "DECIMAL(38,10)",
]
WIDE_SQL = (
    "SELECT g, sum(v) AS s, max(h) AS h, max(u) AS u, max(d) AS d, [max(h)] AS l "
    "FROM w GROUP BY g ORDER BY g"
)


def _typed(rows: list[tuple[object, ...]]) -> list[list[tuple[str, object]]]:
    def walk(value: object) -> object:
        if isinstance(value, list):
            return [walk(item) for item in value]
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        return (type(value).__name__, value)

    return [[walk(value) for value in row] for row in rows]  # type: ignore[misc]


def test_result_rows_give_each_numeric_type_as_duckdbs_fetchall_does() -> None:
    """``Result.rows()`` gave ``Decimal`` for HUGEINT (``sum(BIGINT)``) and UHUGEINT,
    where DuckDB's Python API gives ``int``; DECIMAL(38, 0), exported to Arrow as
    HUGEINT is, stays ``Decimal``. In full mode, incrementally and in changes."""
    import duckdb

    import duckflock

    full_sql = "SELECT " + ", ".join(f"42::{kind} AS c{i}" for i, kind in enumerate(NUMERIC))
    full_sql += ", {'a': [u]} AS st, [d] AS ds FROM w LIMIT 1"
    schema = "CREATE TABLE w (g INTEGER, v BIGINT, h HUGEINT, u UHUGEINT, d DECIMAL(38, 0))"
    row = (1, 5, -(2**127), 2**128 - 1, 3)
    oracle = duckdb.connect()
    oracle.execute(schema)
    oracle.execute("INSERT INTO w VALUES (?, ?, ?, ?, ?)", row)
    with duckflock.connect() as db:
        db.execute(schema)
        db.analysis("full", full_sql)
        db.analysis("wide", WIDE_SQL)
        db.insert("w", [dict(zip("gvhud", row, strict=True))])
        full, wide = db.refresh("full"), db.refresh("wide")
        assert _typed(full.rows()) == _typed(oracle.execute(full_sql).fetchall())
        assert _typed(wide.rows()) == _typed(oracle.execute(WIDE_SQL).fetchall())
        db.insert("w", [{"g": 1, "v": 7, "h": 2**127 - 1, "u": 1, "d": 4}])
        oracle.execute("INSERT INTO w VALUES (1, 7, ?, 1, 4)", (2**127 - 1,))
        wide = db.refresh("wide")
        assert wide.mode == "incremental", wide.reason
        expected = oracle.execute(WIDE_SQL).fetchall()
        assert _typed(wide.rows()) == _typed(expected)
        assert _typed([row[:-1] for row in wide.changes().rows() if row[-1] == 1]) == _typed(
            expected
        )
