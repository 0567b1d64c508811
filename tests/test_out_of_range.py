"""Values outside Python's range leave duckflock as DuckDB's Python API gives them.

DuckDB returns ``datetime.max`` / ``datetime.min`` for TIMESTAMP '±infinity' and the text
of a timestamp past the year 9999; ``Result.rows()``, kept results and subscribers do the
same, and sliding windows keep refreshing with such rows in their table.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pyarrow as pa
import pytest

import duckflock

EXTREMES = [
    ("a", "'infinity'", "'infinity'"),
    ("b", "'-infinity'", "'-infinity'"),
    ("c", "'294000-01-01'", "'290000-01-01 00:00:00+00'"),
    ("d", "'290309-12-22 (BC) 00:00:00'", "'290309-12-22 (BC) 00:00:00+00'"),
    ("e", "now()::TIMESTAMP", "now()"),
]
PLAIN = "SELECT k, max(ts) AS ts, min(tz) AS tz, list(ts ORDER BY ts) AS all_ts FROM w GROUP BY k"
WINDOW = (
    "SELECT k, count(*) AS n, max(ts) AS hi FROM w WHERE ts > now() - INTERVAL 1 HOUR GROUP BY k"
)
ZONED_WINDOW = (
    "SELECT k, count(*) AS n, min(tz) AS lo FROM w WHERE tz >= now() - INTERVAL 1 HOUR GROUP BY k"
)


@pytest.fixture
def db() -> Iterator[duckflock.Database]:
    database = duckflock.connect()
    database.execute("SET GLOBAL TimeZone = 'America/New_York'")
    database.execute("CREATE TABLE w (k VARCHAR, ts TIMESTAMP, tz TIMESTAMPTZ)")
    yield database
    database.close()


def _extremes(db: duckflock.Database) -> pa.Table:
    values = ", ".join(f"('{k}', {ts}::TIMESTAMP, {tz}::TIMESTAMPTZ)" for k, ts, tz in EXTREMES)
    return db.execute(f"SELECT * FROM (VALUES {values}) AS v(k, ts, tz)").to_arrow_table()


def test_rows_convert_as_duckdb_does(db: duckflock.Database) -> None:
    db.insert("w", _extremes(db))
    db.analysis("plain", PLAIN)
    result = db.refresh("plain")
    assert result.error is None
    expected = sorted(db.execute(PLAIN).fetchall(), key=repr)
    assert sorted(result.rows(), key=repr) == expected
    assert any(isinstance(row[1], str) and row[1].startswith("294000") for row in expected)


def test_a_kept_result_converts_as_duckdb_does(db: duckflock.Database) -> None:
    db.insert("w", _extremes(db))
    sql = "SELECT ts, tz FROM w ORDER BY k"
    expected = db.execute(sql).fetchall()
    kept = db.execute(sql)
    db.execute("SELECT 1")  # the thread's next statement keeps the unread result
    assert kept.fetchall() == expected


def test_a_subscriber_reads_rows_past_the_year_9999(db: duckflock.Database) -> None:
    db.insert("w", _extremes(db))
    db.analysis("plain", PLAIN)
    got: list[object] = []
    arrived = threading.Event()

    def callback(result: duckflock.Result) -> None:
        got.append(result.rows())
        arrived.set()

    subscription = db.subscribe("plain", callback)
    db.refresh("plain")
    assert arrived.wait(30)
    subscription.cancel()
    assert subscription.errors == 0 and got


@pytest.mark.parametrize("sql", [WINDOW, ZONED_WINDOW], ids=["timestamp", "timestamptz"])
def test_sliding_windows_keep_working_with_extremes(db: duckflock.Database, sql: str) -> None:
    db.analysis("window", sql)
    db.refresh("window")
    for _ in range(3):
        db.insert("w", _extremes(db))
        for _ in range(2):
            result = db.refresh("window")
            assert result.error is None, result.error
            assert result.now is not None
            full = sql.replace("now()", f"CAST('{result.now.isoformat()}' AS TIMESTAMPTZ)")
            assert sorted(result.rows(), key=repr) == sorted(db.execute(full).fetchall(), key=repr)
        assert result.mode == "incremental"
