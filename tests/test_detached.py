"""The row-by-row fold's query on a DuckDB of its own (live/fold/detached.py): it runs
off the database's instance, under the database's result-changing settings, and stays
on the database wherever a function it calls is the database's own."""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb
import pytest

import duckflock
from duckflock.live import internals
from duckflock.live.fold import detached, merges
from duckflock.live.fold.query import DELTA

TABLE = "CREATE TABLE t (k VARCHAR, g INTEGER, n BIGINT, v DOUBLE, ts TIMESTAMP, tz TIMESTAMPTZ)"
SHAPE = (
    "SELECT upper(k) AS uk, g % 3 AS band, sum(v) AS s, count(*) FILTER (WHERE v > 0) AS pos, "
    "bool_and(n > 0) AS allpos, arg_max(v, ts) AS latest, first(n ORDER BY ts) AS opening "
    "FROM t GROUP BY 1, 2"
)


class _Counting:
    """Records every query of an analysis's cursor (fault injection on its record)."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self._cursor = cursor
        self.queries: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def execute(self, sql: str, *args: Any) -> duckdb.DuckDBPyConnection:
        self.queries.append(sql)
        return self._cursor.execute(sql, *args)


def rows(start: int, count: int) -> list[dict[str, Any]]:
    stamp = dt.datetime(2026, 3, 8, 3, 0, tzinfo=dt.UTC)
    return [
        {
            "k": "abc"[i % 3],
            "g": i % 7,
            "n": i - 3,
            "v": (i % 5) - 1.5,
            "ts": (stamp + dt.timedelta(hours=i)).replace(tzinfo=None),
            "tz": stamp + dt.timedelta(hours=i),
        }
        for i in range(start, start + count)
    ]


def refreshes_equal_full_runs(db: duckflock.Database, name: str, sql: str) -> None:
    for start in (100, 130, 160):
        db.insert("t", rows(start, 30))
        result = db.refresh(name)
        assert result.error is None and result.mode == "incremental", result.reason
        assert sorted(result.rows(), key=repr) == sorted(db.execute(sql).fetchall(), key=repr)


@pytest.mark.parametrize(
    "sql",
    [
        SHAPE,  # the row-by-row merge's query over the new rows
        # no row-by-row merge: the whole-state and touch queries over state and new rows
        "SELECT g, count(DISTINCT k) AS dk, approx_count_distinct(n) AS an FROM t GROUP BY g",
        "SELECT k, count(*) AS c FROM t GROUP BY k HAVING count(*) > 40",
    ],
)
def test_the_fold_queries_run_detached_not_on_the_database(sql: str) -> None:
    """Issue 21: the fold queries (expression keys, FILTER, bool_and, arg_max, first;
    distinct sets, sketches, HAVING) run on the detached instance: the analysis's cursor
    (the database's) runs no query in a refresh, and every result equals a full run."""
    with duckflock.connect() as db:
        db.execute(TABLE)
        db.insert("t", rows(0, 100))
        db.analysis("shape", sql)
        db.refresh("shape")
        plan = internals.analysis(db, "shape").state.shape.plan
        assert plan is not None and plan.detached == ()  # the database's settings: defaults
        assert (plan.merge is not None) == (sql == SHAPE)
        assert plan.merge is None or plan.merge.detached == ()
        run = internals.analysis(db, "shape").state
        counting = _Counting(run.cursor)
        run.cursor = counting  # type: ignore[assignment]
        refreshes_equal_full_runs(db, "shape", sql)
        assert counting.queries == []


@pytest.mark.parametrize(
    ("setting", "value", "sql"),
    [
        (
            "TimeZone",
            "America/New_York",
            "SELECT date_trunc('day', tz) AS day, count(*) AS n, sum(v) AS s FROM t GROUP BY 1",
        ),
        (
            "TimeZone",
            "Asia/Kathmandu",
            "SELECT hour(tz) AS h, count(*) AS n, max(ts) AS last FROM t GROUP BY 1",
        ),
        ("integer_division", "true", "SELECT g, sum(n / 2) AS s FROM t GROUP BY g"),
        (  # the whole-state query's
            "TimeZone",
            "America/New_York",
            "SELECT date_trunc('day', tz) AS day, count(DISTINCT g) AS dg FROM t GROUP BY 1",
        ),
    ],
)
def test_the_detached_instance_takes_the_databases_result_settings(
    setting: str, value: str, sql: str
) -> None:
    """A global setting that changes results (effects.SETTINGS) is the detached
    instance's too: day buckets of a TIMESTAMPTZ in New York's zone, integer division."""
    with duckflock.connect() as db:
        db.execute(f"SET GLOBAL {setting} = '{value}'")
        db.execute(TABLE)
        db.insert("t", rows(0, 100))
        db.analysis("zoned", sql)
        db.refresh("zoned")
        plan = internals.analysis(db, "zoned").state.shape.plan
        assert plan is not None and plan.detached is not None
        assert (setting, value) in plan.detached
        assert plan.merge is None or plan.merge.detached == plan.detached
        refreshes_equal_full_runs(db, "zoned", sql)


@pytest.mark.parametrize(
    ("own", "call"),
    [
        ("CREATE MACRO upper(x) AS lower(x) || '!'", "upper(k)"),  # shadows the built-in
        ("CREATE MACRO band(x) AS x % 2", "band(g)"),
        ("", "plus1(n)"),  # a Python UDF
    ],
)
def test_a_query_calling_the_databases_own_function_is_not_detached(own: str, call: str) -> None:
    """A macro of the database (one of a built-in's name shadows it there, not on the
    detached instance), or a Python UDF (it does not bind there): the query stays on the
    database. (The planner also finds macros not repeatable: no such shape is planned
    incrementally today; this is the detached instance's own guard.)"""
    con = duckdb.connect()
    con.execute(TABLE)
    if own:
        con.execute(own)
    con.create_function("plus1", lambda x: x + 1, ["BIGINT"], "BIGINT")
    empty = con.execute("SELECT * FROM t LIMIT 0").to_arrow_table()

    def settings(key: str) -> detached.Settings | None:
        sql = f"SELECT {key} AS key, count(*) AS c FROM {DELTA} GROUP BY 1"
        return detached.settings_for(con, [(sql, {DELTA: empty})])

    assert settings(call) is None
    assert settings("lower(k)") == ()  # a built-in the database has not shadowed
    if not own:
        return
    with duckflock.connect() as db:
        db.execute(own)
        db.execute(TABLE)
        db.insert("t", rows(0, 100))
        sql = f"SELECT {call} AS key, count(*) AS n FROM t GROUP BY 1"
        db.analysis("own", sql)
        db.refresh("own")
        plan = internals.analysis(db, "own").state.shape.plan
        assert plan is None or plan.merge is None or plan.merge.detached is None
        for start in (100, 130):
            db.insert("t", rows(start, 30))
            assert sorted(db.refresh("own").rows()) == sorted(db.execute(sql).fetchall())


def test_many_new_rows_fold_on_the_analysis_cursor_which_a_time_limit_interrupts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A detached query is not the one the scheduler interrupts: past detached.BYTES of
    new rows the fold query runs on the analysis's cursor again (DuckDB's query: the
    shape's pyarrow program, which runs none, is test_computed.py's)."""
    monkeypatch.setattr(detached, "BYTES", 64 << 10)
    monkeypatch.setattr(merges, "_computed", lambda *_: None)
    with duckflock.connect() as db:
        db.execute(TABLE)
        db.insert("t", rows(0, 100))
        db.analysis("shape", SHAPE)
        db.refresh("shape")
        run = internals.analysis(db, "shape").state
        counting = _Counting(run.cursor)
        run.cursor = counting  # type: ignore[assignment]
        many = db.execute(
            f"SELECT 'k' || (i % 9) AS k, i % 11 AS g, i AS n, i / 7 AS v, TIMESTAMP "
            f"'2026-01-01' + to_seconds(i) AS ts, NULL::TIMESTAMPTZ AS tz "
            f"FROM range({detached.BYTES // 16}) r(i)"
        ).to_arrow_table()
        db.insert("t", many)
        result = db.refresh("shape")
        assert result.mode == "incremental", result.reason
        assert sorted(result.rows(), key=repr) == sorted(db.execute(SHAPE).fetchall(), key=repr)
        assert counting.queries


def test_the_instances_close_with_the_last_database_using_them() -> None:
    """Each distinct set of settings opens an instance (8 at most): those no open
    database's plans run under are closed when a database closes, so databases opened
    and closed one after another, each under other settings, never run out of them, and
    none is left open once the last database closes."""
    # databases other tests left open (none, unless one leaks): their instances stay
    left, _ = detached.in_use()
    sql = "SELECT date_trunc('day', tz) AS day, count(*) AS n, sum(v) AS s FROM t GROUP BY 1"
    zones = ["America/New_York", "Asia/Kathmandu", "Europe/Paris", "Asia/Tokyo"]
    zones += ["Australia/Sydney", "America/Lima", "Africa/Cairo", "Europe/Moscow"]
    zones += ["Pacific/Auckland"]
    assert len(zones) > detached._INSTANCES
    with duckflock.connect() as keeper:  # one database open throughout
        keeper.execute(TABLE)
        keeper.insert("t", rows(0, 20))
        keeper.analysis("kept", sql, wait=True)
        for zone in zones:
            with duckflock.connect() as db:
                db.execute(f"SET GLOBAL TimeZone = '{zone}'")
                db.execute(TABLE)
                db.insert("t", rows(0, 20))
                db.analysis("zoned", sql, wait=True)
                plan = internals.analysis(db, "zoned").state.shape.plan
                assert plan is not None and plan.detached is not None, zone  # not run out
                assert ("TimeZone", zone) in plan.detached
                assert detached.in_use()[0] == left + 2
            # the keeper's instance stays open; this one's closed with its database
            assert detached.in_use()[0] == left + 1
            assert left or detached.in_use() == (1, 1), zone
        refreshes_equal_full_runs(keeper, "kept", sql)  # its instance still serves it
    assert left or detached.in_use() == (0, 0)
    with duckflock.connect() as db:  # a database after them opens an instance again
        db.execute(TABLE)
        db.analysis("again", sql)
        refreshes_equal_full_runs(db, "again", sql)
        assert left or detached.in_use() == (1, 1)
    assert left or detached.in_use() == (0, 0)
