"""Time-bucket keys in pyarrow (live/fold/buckets.py, live/plan/bucketing.py): equal to
DuckDB's date_trunc/time_bucket of a TIMESTAMP on every value, admitted only where
DuckDB showed the same buckets, and a refresh of such a shape runs no DuckDB query."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import duckdb
import pyarrow as pa
import pytest

import duckflock
from duckflock.live import internals
from duckflock.live.fold.buckets import INFINITY, LIMIT, PROBES, TIMESTAMP
from duckflock.live.plan.bucketing import bucketed
from duckflock.live.plan.incremental import inspect

TYPES = {"ts": "TIMESTAMP", "tz": "TIMESTAMP WITH TIME ZONE", "d": "DATE", "ns": "TIMESTAMP_NS"}
PROVEN = [
    "date_trunc('microseconds', ts)",
    "date_trunc('millisecond', ts)",
    "date_trunc('second', ts)",
    "date_trunc('s', ts)",
    "date_trunc('minutes', ts)",
    "datetrunc('hour', ts)",
    "date_trunc('day', ts)",
    "date_trunc('week', ts)",
    "time_bucket(INTERVAL '1 minute', ts)",
    "time_bucket(INTERVAL '90 seconds', ts)",
    "time_bucket(INTERVAL '250 milliseconds', ts)",
    "time_bucket(INTERVAL '1 day', ts)",
    "time_bucket(INTERVAL '7 days', ts)",
    "time_bucket(INTERVAL '1 day 2 hours 3 microseconds', ts)",
    "time_bucket(to_minutes(5), ts)",
]
NOT_PROVEN = [
    "date_trunc('month', ts)",  # calendar buckets
    "date_trunc('year', ts)",
    "date_trunc('second', tz)",  # the time zone's
    "date_trunc('day', d)",  # a DATE
    "date_trunc('second', ns)",  # another precision
    "time_bucket(INTERVAL '1 month', ts)",
    "time_bucket(INTERVAL '1 minute', ts, TIMESTAMP '2026-01-01 00:00:30')",  # an origin
    "time_bucket(INTERVAL '1 minute', ts, INTERVAL '7 seconds')",  # an offset
    "date_trunc(CASE WHEN ts > TIMESTAMP '2000-01-01' THEN 'second' ELSE 'day' END, ts)",
    "date_part('second', ts)",
]


def key(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any]:
    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [f"SELECT {sql}"]).fetchone()[0])
    node: dict[str, Any] = tree["statements"][0]["node"]["select_list"][0]
    return node


def values() -> list[int | None]:
    """Edge values (the probes, each side of boundaries, the limit) and random ones."""
    rng = random.Random(21)
    found: list[int | None] = list(PROBES)
    for unit in (1_000, 1_000_000, 60_000_000, 86_400_000_000, 604_800_000_000):
        for base in (0, 946_857_600_000_000, -2_208_988_800_000_000, 345_600_000_000):
            for at in (-3, -1, 0, 1, 3):
                found += [base + at * unit, base + at * unit - 1, base + at * unit + 1]
    found += [rng.randrange(-LIMIT + 1, LIMIT) for _ in range(3_000)]
    found += [rng.randrange(-(10**15), 10**15) for _ in range(3_000)]
    return found


@pytest.mark.parametrize("sql", PROVEN)
def test_a_proven_bucket_equals_duckdb_on_every_value(sql: str) -> None:
    """The bucket the planner admits, computed by pyarrow, equals DuckDB's value of the
    same expression bit for bit: negative epochs, pre-1900, boundaries, NULL and the
    infinities, and thousands of random timestamps within the admitted range."""
    con = duckdb.connect()
    found = bucketed(con, key(con, sql), TYPES)
    assert found is not None, sql
    column, bucket = found
    assert column == "ts"
    stamps = pa.array(values(), pa.int64()).view(TIMESTAMP)
    table = pa.table({"ts": stamps})
    con.register("probe", table)
    expected = con.execute(f"SELECT {sql} FROM probe").to_arrow_table().column(0)
    got = bucket.of(stamps)
    assert got.type == expected.type == TIMESTAMP
    assert got.combine_chunks().view(pa.int64()).to_pylist() == (
        expected.combine_chunks().view(pa.int64()).to_pylist()
    )


@pytest.mark.parametrize("far", [LIMIT, -LIMIT, 9_000_000_000_000_000_000])
def test_a_timestamp_past_the_admitted_range_is_left_to_duckdb(far: int) -> None:
    """Near the ends of the type DuckDB raises an overflow where the arithmetic would
    not: pyarrow refuses such a value (the caller's fold then goes to DuckDB)."""
    con = duckdb.connect()
    found = bucketed(con, key(con, "date_trunc('second', ts)"), TYPES)
    assert found is not None
    with pytest.raises(pa.ArrowInvalid, match="DuckDB buckets it"):
        found[1].of(pa.array([0, far, INFINITY], pa.int64()).view(TIMESTAMP))


@pytest.mark.parametrize("sql", NOT_PROVEN)
def test_keys_pyarrow_is_not_proven_on_stay_duckdbs(sql: str) -> None:
    con = duckdb.connect()
    assert bucketed(con, key(con, sql), TYPES) is None


def test_a_macro_named_date_trunc_is_duckdbs_to_compute() -> None:
    """A macro of the same name shadows the function (DuckDB calls it): the probe sees
    its values, so the key is not admitted, and the analysis equals a full run."""
    con = duckdb.connect()
    con.execute("CREATE MACRO date_trunc(unit, t) AS t + INTERVAL 1 HOUR")
    assert bucketed(con, key(con, "date_trunc('second', ts)"), TYPES) is None
    with duckflock.connect() as db:
        db.execute("CREATE MACRO date_trunc(unit, t) AS t + INTERVAL 1 HOUR")
        db.execute("CREATE TABLE t (ts TIMESTAMP, v BIGINT)")
        sql = "SELECT date_trunc('second', ts) AS s, count(*) AS n FROM t GROUP BY 1"
        db.analysis("shifted", sql)
        db.result("shifted", min_version=1, timeout=30)
        db.insert("t", [{"ts": "2026-01-01 00:00:00.5", "v": 1}])
        assert db.refresh("shifted").rows() == db.execute(sql).fetchall()


BUCKETED = {
    "seconds": "SELECT date_trunc('second', ts) AS s, count(*) AS n, sum(v) AS total, "
    "min(v) AS lo FROM t GROUP BY 1",
    "minutes": "SELECT time_bucket(INTERVAL '1 minute', ts) AS m, count(*) AS n, "
    "avg(x) AS mean, max(ts) AS last FROM t GROUP BY 1",
}
ROWS = (
    "SELECT TIMESTAMP '1969-12-31 23:59:59' + to_microseconds(i * 250_000) AS ts, "
    "i AS v, i / 4 AS x FROM range(40) AS r(i)"
)


@pytest.mark.parametrize("name", BUCKETED)
def test_a_bucketed_refresh_runs_no_duckdb_query_and_equals_a_full_run(
    name: str, fold_queries: Callable[[], list[str]]
) -> None:
    """Issue 21: date_trunc('second') and time_bucket(minute) of a TIMESTAMP fold in
    pyarrow alone (the plain shape's path): no DuckDB query per refresh, and each result
    equals a full run across the epoch, NULL and infinite timestamps. A timestamp past
    the admitted range hands the analysis to DuckDB, still equal."""
    sql = BUCKETED[name]
    with duckflock.connect() as db:
        db.execute(f"CREATE TABLE t AS {ROWS}")
        db.analysis(name, sql)
        db.result(name, min_version=1, timeout=30)
        run = internals.analysis(db, name).state
        plan = run.shape.plan
        assert plan is not None and plan.arrow is not None and plan.arrow.buckets
        queries = fold_queries()  # every DuckDB query a fold runs from here on
        batches: list[list[dict[str, Any]]] = [
            [{"ts": "1969-12-31 23:59:58.999999", "v": 5, "x": 1.5}],
            [{"ts": None, "v": 6, "x": 2.0}, {"ts": "infinity", "v": 7, "x": 0.25}],
            [{"ts": "-infinity", "v": -1, "x": 3.0}, {"ts": "1900-02-28 12:34:56.789", "v": 0}],
            [{"ts": "1970-01-01 00:00:10", "v": 9, "x": 0.5}],
        ]
        for rows in batches:
            db.insert("t", rows)
            result = db.refresh(name)
            assert result.mode == "incremental", result.reason
            assert sorted(result.rows(), key=repr) == sorted(db.execute(sql).fetchall(), key=repr)
        assert queries == [] and run.fast  # every fold was pyarrow's
        db.insert("t", [{"ts": "294000-01-01 00:00:00", "v": 1, "x": 1.0}])
        db.insert("t", [{"ts": "2026-01-01 00:00:00", "v": 2, "x": 1.0}])
        result = db.refresh(name)
        assert result.error is None and result.mode == "incremental"
        assert queries and not run.fast  # DuckDB folded the rows pyarrow leaves to it
        assert sorted(result.rows(), key=repr) == sorted(db.execute(sql).fetchall(), key=repr)


def test_the_plain_path_takes_bucketed_keys_beside_plain_ones() -> None:
    """A bucketed key beside a plain column key (several keys: grouped with the state)
    plans for pyarrow; a WHERE keeps it DuckDB's (not a plain shape)."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (k VARCHAR, ts TIMESTAMP, v BIGINT)")
    both = "SELECT k, date_trunc('hour', ts) AS h, sum(v) AS s FROM t GROUP BY k, 2"
    plan = inspect(con.cursor(), both).plan
    assert plan is not None and plan.arrow is not None
    assert [i for i, _ in plan.arrow.buckets] == [1]
    where = "SELECT date_trunc('hour', ts) AS h, sum(v) AS s FROM t WHERE v > 0 GROUP BY 1"
    plan = inspect(con.cursor(), where).plan
    assert plan is not None and plan.arrow is None
