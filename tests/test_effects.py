"""Settings and DDL: what rebuilds the analyses, and what does not (effects.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import duckdb
import pytest

import duckflock
from duckflock.core.effects import SETTINGS, Effect

ZONED = "SELECT date_trunc('day', tz) AS day, count(*) AS n FROM t GROUP BY 1"
CALENDAR = "SELECT date_part('year', tz) AS y, count(*) AS n FROM t GROUP BY 1"
COLLATED = "SELECT k, count(*) AS n FROM t GROUP BY k"


def test_every_setting_duckdb_lists_has_a_decision() -> None:
    listed = {
        row[0] for row in duckdb.connect().execute("SELECT name FROM duckdb_settings()").fetchall()
    }
    assert listed - SETTINGS.keys() == set(), "decide these in duckflock/effects.py"
    assert SETTINGS.keys() - listed == set(), "DuckDB no longer lists these"
    for name in ("TimeZone", "Calendar", "default_collation", "default_null_order"):
        assert SETTINGS[name] is Effect.RESULTS


@pytest.fixture
def zoned() -> Iterator[duckflock.Database]:
    db = duckflock.connect()
    db.execute("CREATE TABLE t (k VARCHAR, tz TIMESTAMPTZ)")
    db.analysis("zoned", ZONED)
    db.analysis("calendar", CALENDAR)
    db.analysis("collated", COLLATED)
    for hour in (1, 4, 6, 23):
        db.insert(
            "t", {"k": "a" if hour % 2 else "A", "tz": dt.datetime(2026, 1, 1, hour, tzinfo=dt.UTC)}
        )
    for name in ("zoned", "calendar", "collated"):
        db.refresh(name)
    db.insert("t", {"k": "a", "tz": dt.datetime(2026, 1, 1, 2, tzinfo=dt.UTC)})
    for name in ("zoned", "calendar", "collated"):  # the states are incremental now
        assert db.refresh(name).mode == "incremental"
    yield db
    db.close()


def _through_execute(db: duckflock.Database, sql: str) -> None:
    db.execute(sql)


def _through_sql(db: duckflock.Database, sql: str) -> None:
    db.sql(sql)


def _through_transaction(db: duckflock.Database, sql: str) -> None:
    db.transaction(lambda cursor: cursor.execute(sql))


def _through_begin(db: duckflock.Database, sql: str) -> None:
    db.execute("BEGIN TRANSACTION")
    db.execute(sql)
    db.execute("ROLLBACK")  # settings are not transactional: it holds anyway


PATHS: list[Callable[[duckflock.Database, str], None]] = [
    _through_execute,
    _through_sql,
    _through_transaction,
    _through_begin,
]


def _same(db: duckflock.Database, name: str, sql: str) -> Any:
    result = db.refresh(name)
    assert result.error is None
    full = db.execute(sql).to_arrow_table()
    key = lambda row: repr(row)  # noqa: E731
    return sorted(result.table.to_pylist(), key=key) == sorted(full.to_pylist(), key=key)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.__name__)
def test_a_global_time_zone_rebuilds_zoned_buckets(zoned: duckflock.Database, path: Any) -> None:
    path(zoned, "SET GLOBAL TimeZone = 'Asia/Kathmandu'")
    zoned.insert("t", {"k": "a", "tz": dt.datetime(2026, 1, 1, 20, tzinfo=dt.UTC)})
    result = zoned.refresh("zoned")
    assert result.mode == "full"
    if path is not _through_transaction:  # that one names the commit, which came first
        assert "TimeZone" in result.reason
    assert _same(zoned, "zoned", ZONED)


def _racing(path: str, db: duckflock.Database, sql: str, between: Callable[[], None]) -> None:
    """Run ``sql`` through ``path`` with ``between()`` after it ran, before its notice."""
    if path == "transaction":
        db.transaction(lambda cursor: (cursor.execute(sql), between()))
        return
    done: list[bool] = []

    def hook(point: str) -> None:
        if point == "ran" and not done:
            done.append(True)
            between()

    db.fault_hook = hook
    try:
        db.execute(sql) if path == "execute" else db.sql(sql)
    finally:
        db.fault_hook = lambda point: None


@pytest.mark.parametrize("path", ["execute", "sql", "transaction"])
def test_a_global_time_zone_is_seen_by_a_refresh_before_its_notice(
    zoned: duckflock.Database, path: str
) -> None:
    """A ``SET GLOBAL TimeZone`` lands before the notice that rebuilds the analyses: a
    refresh in between (rows inserted meanwhile) must not fold them into the state of
    the old zone. The settings epoch moved before the statement ran, so the refresh
    reads the settings, finds the zone changed and rebuilds: the full run's result."""
    seen: list[Any] = []

    def between() -> None:
        zoned.insert("t", {"k": "a", "tz": dt.datetime(2026, 1, 1, 20, tzinfo=dt.UTC)})
        seen.append(zoned.refresh("zoned"))

    _racing(path, zoned, "SET GLOBAL TimeZone = 'Asia/Kathmandu'", between)
    (result,) = seen
    assert result.error is None and result.mode == "full", result.reason
    full = zoned.execute(ZONED).fetchall()
    assert sorted(result.rows(), key=repr) == sorted(full, key=repr)
    assert _same(zoned, "zoned", ZONED)


def test_the_settings_epoch_moves_around_what_may_set() -> None:
    """The statements that move the epoch: SET, RESET, PRAGMA, LOAD, USE, CALL…;
    queries, rows, DDL, transactions and CHECKPOINT do not."""
    from duckflock.core.syntax import may_set

    for sql in ("SET TimeZone = 'UTC'", "RESET GLOBAL TimeZone", "PRAGMA enable_profiling",
                "PRAGMA threads = 2", "LOAD icu", "USE memory", "CALL pragma_version()",
                "EXPLAIN ANALYZE SELECT 1", "SELECT 1; SET threads = 1"):  # fmt: skip
        assert may_set(sql), sql
    for sql in ("SELECT 1", "INSERT INTO t VALUES (1)", "CREATE TABLE u (a INT)", "BEGIN",
                "CHECKPOINT", "EXPLAIN SELECT 1", "DELETE FROM t", "not sql"):  # fmt: skip
        assert not may_set(sql), sql


def test_a_session_time_zone_is_the_callers_only(zoned: duckflock.Database) -> None:
    zoned.execute("SET TimeZone = 'Asia/Kathmandu'")  # this thread's cursor only
    assert zoned.refresh("zoned").mode == "incremental"
    assert zoned.execute("SELECT current_setting('TimeZone')").fetchone() == ("Asia/Kathmandu",)
    with zoned.cursor() as other:
        assert other.execute("SELECT current_setting('TimeZone')").fetchone() != ("Asia/Kathmandu",)


def test_a_calendar_rebuilds(zoned: duckflock.Database) -> None:
    zoned.execute("SET GLOBAL TimeZone = 'Asia/Tokyo'")
    zoned.refresh("calendar")
    zoned.execute("SET GLOBAL Calendar = 'japanese'")
    zoned.insert("t", {"k": "a", "tz": dt.datetime(2026, 6, 1, tzinfo=dt.UTC)})
    assert "Calendar" in zoned.refresh("calendar").reason
    assert _same(zoned, "calendar", CALENDAR)


@pytest.mark.parametrize(
    "statement", ["SET default_collation = 'nocase'", "PRAGMA default_collation = 'nocase'"]
)
def test_a_default_collation_rebuilds(zoned: duckflock.Database, statement: str) -> None:
    zoned.execute(statement)
    result = zoned.refresh("collated")
    assert "default_collation" in result.reason
    assert result.table.num_rows == 1  # 'a' and 'A' are one group now, as in a full run
    assert _same(zoned, "collated", COLLATED)


def test_a_setting_that_cannot_change_results_rebuilds_nothing(zoned: duckflock.Database) -> None:
    zoned.execute("SET GLOBAL threads = 2")
    zoned.execute("SET memory_limit = '1GB'")
    for name in ("zoned", "calendar", "collated"):
        assert zoned.refresh(name).mode == "incremental"


# -- DDL: only the analyses that read what changed ----------------------------------------


@pytest.fixture
def two() -> Iterator[duckflock.Database]:
    db = duckflock.connect()
    db.execute("CREATE SCHEMA s")
    for table in ("t", "u", "s.t"):
        db.execute(f"CREATE TABLE {table} (k VARCHAR, v INTEGER)")
    db.execute("CREATE VIEW uv AS SELECT * FROM u WHERE v > 0")
    db.analysis("on_t", "SELECT k, sum(v) AS s FROM t GROUP BY k")
    db.analysis("on_u", "SELECT k, count(*) AS n FROM u GROUP BY k")
    db.analysis("on_uv", "SELECT count(*) AS n FROM uv")
    db.analysis("on_st", "SELECT count(*) AS n FROM s.t")
    for table in ("t", "u", "s.t"):
        db.insert(table, {"k": "a", "v": 1})
    for name in ("on_t", "on_u", "on_uv", "on_st"):
        db.refresh(name)
    yield db
    db.close()


def _modes(db: duckflock.Database) -> dict[str, str]:
    for table in ("t", "u", "s.t"):
        db.insert(table, {"k": "b", "v": 2})
    # (on_uv reads a view: it always runs in full)
    return {name: db.refresh(name).mode for name in ("on_t", "on_u", "on_st")}


def test_creating_an_unrelated_table_rebuilds_nothing(two: duckflock.Database) -> None:
    two.execute("CREATE TABLE unrelated (a INTEGER)")
    two.execute("CREATE TABLE copy AS SELECT * FROM t")
    two.execute("DROP TABLE copy")
    two.execute("CHECKPOINT")
    assert set(_modes(two).values()) == {"incremental"}


def test_ddl_rebuilds_the_analyses_of_the_table_it_changed(two: duckflock.Database) -> None:
    two.execute("ALTER TABLE u ADD COLUMN extra INTEGER")
    modes = _modes(two)
    assert modes == {"on_t": "incremental", "on_u": "full", "on_st": "incremental"}


def test_the_reason_names_the_statement(two: duckflock.Database) -> None:
    two.execute("ALTER TABLE u ADD COLUMN extra INTEGER")
    two.insert("u", {"k": "c", "v": 3})
    result = two.refresh("on_u")
    assert result.mode == "full"
    assert "ALTER TABLE u ADD COLUMN extra INTEGER" in result.reason
    assert "UPDATE" not in result.reason and "raw INSERT" not in result.reason


def test_a_table_of_the_same_name_in_another_schema_is_another_table(
    two: duckflock.Database,
) -> None:
    two.execute("CREATE OR REPLACE TABLE s.t AS SELECT 'z' AS k, 9 AS v")
    modes = _modes(two)
    assert modes["on_st"] == "full" and modes["on_u"] == "incremental"
    # on_t reads main.t: a table named t was replaced, so it looks again (a new object
    # may shadow a name), and it still equals its full run
    assert sorted(two.refresh("on_t").rows()) == sorted(
        two.execute("SELECT k, sum(v) AS s FROM t GROUP BY k").fetchall()
    )


def test_replacing_a_view_rebuilds_its_readers(two: duckflock.Database) -> None:
    two.execute("CREATE OR REPLACE VIEW uv AS SELECT * FROM u WHERE v > 1")
    assert _modes(two)["on_t"] == "incremental"
    result = two.refresh("on_uv")
    assert result.rows() == two.execute("SELECT count(*) AS n FROM uv").fetchall()


def test_dropping_and_recreating_a_table_rebuilds_its_readers(two: duckflock.Database) -> None:
    two.execute("DROP TABLE t")
    assert two.refresh("on_t").error is not None
    two.execute("CREATE TABLE t (k VARCHAR, v INTEGER)")
    two.insert("t", {"k": "q", "v": 5})
    result = two.refresh("on_t")
    assert result.error is None and result.rows() == [("q", 5)]
    assert two.refresh("on_u").mode == "incremental"


class _Counting:
    """A cursor that counts the catalog scans run on it (effects.Watch's seam)."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self.cursor = cursor
        self.scans = 0

    def execute(self, sql: str, params: Any = None) -> Any:
        self.scans += "duckdb_functions()" in sql
        return self.cursor.execute(sql, params)


def test_a_ddl_scans_the_catalog_once(two: duckflock.Database) -> None:
    """The catalog read after one DDL is the "before" of the next: one scan of
    duckdb_functions() per DDL (two before), and a change made where no notice sees it
    (a raw cursor) still rebuilds its readers at the next DDL."""
    from duckflock.core import effects

    counting: list[_Counting] = []

    def new_cursor() -> Any:
        counting.append(_Counting(two._cursors.new()))
        return counting[-1]

    two._effects = effects.Watch(new_cursor)
    for i in range(3):
        two.execute(f"CREATE TABLE other{i} (x INT)")
    assert counting[0].scans == 4  # the first DDL's before, then one after each
    two.cursor().execute("ALTER TABLE u ADD COLUMN extra INTEGER")  # no notice sees it
    two.execute("CREATE TABLE other9 (x INT)")
    assert _modes(two) == {"on_t": "incremental", "on_u": "full", "on_st": "incremental"}
