"""Round 8's changes attacked from outside (helper attack8): each test failed on r8-base."""

from __future__ import annotations

import duckdb
import pytest

import duckflock
from duckflock.server import values

NESTED = (
    "SELECT k, list(t ORDER BY t) AS l, {'a': max(t)} AS s, map([max(t)], [min(t)]) AS m "
    "FROM t GROUP BY k"
)
TIMES = "SELECT * FROM (VALUES (1, TIME '24:00:00'), (2, TIME '01:00:00'), (1, TIME '02:00:00'))"


def test_a_nested_day_end_reads_back_as_duckdb_gives_it() -> None:
    """TIME '24:00:00' inside a list, struct or map: Result.rows() and HTTP JSON gave
    00:00:00 (the start of the day), only a top-level TIME column was looked at."""
    with duckflock.connect() as db:
        db.execute(f"CREATE TABLE t AS {TIMES} v(k, t)")
        db.analysis("nested", NESTED)
        got = db.result("nested", min_version=1, timeout=30).rows()
        assert sorted(got, key=repr) == sorted(db.execute(NESTED).fetchall(), key=repr)
    oracle = duckdb.connect()
    oracle.execute(f"CREATE TABLE t AS {TIMES} v(k, t)")
    table = oracle.execute(f"{NESTED} ORDER BY k").to_arrow_table()
    assert values.column(table["l"]) == [["02:00:00", "24:00:00"], ["01:00:00"]]
    assert values.column(table["s"])[0] == {"a": "24:00:00"}


@pytest.mark.parametrize("kind", ["TIME[]", "STRUCT(a TIME)"])
def test_a_nested_day_end_round_trips(kind: str) -> None:
    with duckflock.connect() as db:
        db.execute(f"CREATE TABLE n (v {kind})")
        value = "[TIME '24:00:00']" if kind == "TIME[]" else "{'a': TIME '24:00:00'}"
        db.execute(f"INSERT INTO n VALUES ({value})")
        db.analysis("n", "SELECT v, count(*) AS c FROM n GROUP BY v")
        got = db.result("n", min_version=1, timeout=30).rows()
        assert got == db.execute("SELECT v, count(*) AS c FROM n GROUP BY v").fetchall()
