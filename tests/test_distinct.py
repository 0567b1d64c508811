"""count(DISTINCT …) in the pyarrow fold (live/fold/sets.py): the state's distinct
lists merged by position, equal to a full run, with no DuckDB query per refresh, and
handed to DuckDB's fold and back without a difference."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import duckdb
import pyarrow as pa
import pytest

import duckflock
from duckflock.live import internals
from duckflock.live.fold import sets
from duckflock.live.plan.incremental import inspect

TABLE = "CREATE TABLE t (k VARCHAR, g INTEGER, u BIGINT, s VARCHAR, d DATE, v INTEGER)"
DISTINCT = {
    "int": "SELECT k, count(DISTINCT u) AS users FROM t GROUP BY k",
    "varchar": "SELECT g, count(DISTINCT s) AS ds, count(DISTINCT u) AS du FROM t GROUP BY g",
    "mixed": "SELECT k, count(*) AS n, count(DISTINCT s) AS ds, sum(v) AS sv, "
    "count(DISTINCT u) AS du, min(v) AS lo, count(DISTINCT d) AS dd, count(u) AS cu "
    "FROM t GROUP BY k ORDER BY ds DESC, k",
}


def _rows(rng: random.Random, count: int) -> list[dict[str, Any]]:
    def maybe(value: Any) -> Any:
        return None if rng.random() < 0.15 else value

    return [
        {
            "k": maybe(rng.choice("abcd")),
            "g": maybe(rng.randrange(3)),
            "u": maybe(rng.randrange(8)),  # duplicates within and across batches
            "s": maybe(rng.choice(["", "x", "X", "é", "e\u0301", "long string here"])),
            "d": maybe(f"2026-01-0{rng.randrange(1, 4)}"),
            "v": rng.randrange(-5, 5),
        }
        for _ in range(count)
    ]


def _same(db: duckflock.Database, name: str, sql: str) -> None:
    result = db.refresh(name)
    assert result.error is None and result.mode == "incremental", result.reason
    assert sorted(result.rows(), key=repr) == sorted(db.execute(sql).fetchall(), key=repr)


@pytest.mark.parametrize("name", sorted(DISTINCT))
def test_count_distinct_folds_in_pyarrow_alone_and_equals_a_full_run(
    name: str, fold_queries: Callable[[], list[str]]
) -> None:
    sql = DISTINCT[name]
    rng = random.Random(name)
    with duckflock.connect() as db:
        db.execute(TABLE)
        db.insert("t", _rows(rng, 30))
        db.analysis(name, sql)
        db.result(name, min_version=1, timeout=30)
        run = internals.analysis(db, name).state
        plan = run.shape.plan
        assert plan is not None and plan.arrow is not None and plan.arrow.sets
        queries = fold_queries()  # every DuckDB query a fold runs from here on
        for size in (1, 5, 0, 40, 3):
            if size:
                db.insert("t", _rows(rng, size))
            _same(db, name, sql)
        db.insert("t", [{"k": None, "g": None, "u": None, "s": None, "d": None, "v": 1}])
        _same(db, name, sql)
        assert queries == [] and run.fast  # every fold was pyarrow's
        run.fast = False  # the state pyarrow built, folded on by DuckDB
        db.insert("t", _rows(rng, 10))
        _same(db, name, sql)
        assert queries
        run.fast = True  # and DuckDB's state by pyarrow again
        db.insert("t", _rows(rng, 10))
        _same(db, name, sql)


def test_count_distinct_with_deletes_equals_a_full_run() -> None:
    sql = DISTINCT["mixed"]
    rng = random.Random(7)
    with duckflock.connect() as db:
        db.execute(TABLE)
        db.insert("t", _rows(rng, 30))
        db.analysis("d", sql)
        db.result("d", min_version=1, timeout=30)
        for step in range(4):
            db.insert("t", _rows(rng, 8))
            db.execute("DELETE FROM t WHERE u = ? OR k IS NULL", [step])
            result = db.refresh("d")
            assert result.error is None, result.reason
            assert sorted(result.rows(), key=repr) == sorted(db.execute(sql).fetchall(), key=repr)


@pytest.mark.parametrize(
    ("column", "admitted"),
    [
        ("BIGINT", True),
        ("VARCHAR", True),
        ("DATE", True),
        ("TIMESTAMP", True),
        ("DOUBLE", False),
        ("INTERVAL", False),
        ("VARCHAR COLLATE NOCASE", False),
        ("INTEGER[]", False),
        ("UUID", False),
        ("HUGEINT", False),
    ],
)
def test_count_distinct_folds_in_pyarrow_only_where_arrow_equality_is_duckdbs(
    column: str, admitted: bool
) -> None:
    con = duckdb.connect()
    con.execute(f"CREATE TABLE t (k VARCHAR, j INTEGER, x {column}, v INTEGER)")
    plan = inspect(con.cursor(), "SELECT k, count(DISTINCT x) AS n FROM t GROUP BY k").plan
    # (INTERVAL, DOUBLE…: not the pyarrow path's, or not incremental at all)
    assert (plan is not None and plan.arrow is not None) is admitted
    # a FILTER, or a second key: DuckDB folds (positions merge one key column's groups)
    for other in (
        "SELECT k, count(DISTINCT x) FILTER (WHERE v > 0) AS n FROM t GROUP BY k",
        "SELECT k, j, count(DISTINCT x) AS n FROM t GROUP BY k, j",
    ):
        plan = inspect(con.cursor(), other).plan
        assert plan is None or plan.arrow is None


def test_the_union_skips_values_a_null_list_still_spans() -> None:
    """A NULL list may span values in its array (offsets apart): none of them count."""
    lists = pa.ListArray.from_arrays(
        pa.array([0, 2, 4, 5, 5]),
        pa.array([1, 2, 3, 4, 5]),
        mask=pa.array([False, True, False, True]),
    )
    old = pa.chunked_array([lists.slice(0, 2), lists.slice(2)])
    new = pa.chunked_array([pa.array([[9], [9], None, [1, 1]], pa.list_(pa.int64()))])
    assert sets.union(old, new).to_pylist() == [[1, 2, 9], [9], [5], [1]]
    assert sets.length(pa.chunked_array([lists])).to_pylist() == [2, 0, 1, 0]
