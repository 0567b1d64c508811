"""has_nan's cache (live/fold/nans.py): a kept state's untouched rows, slices of chunks
found clean, are not checked again; any other chunk is, so a NaN or -0.0 that a fold
brings in is always found."""

from __future__ import annotations

import math

import pyarrow as pa

import duckflock
from duckflock.live import internals
from duckflock.live.fold.nans import Clean, unlike_duckdb


def test_only_slices_of_held_clean_chunks_are_held() -> None:
    clean = Clean()
    chunk = pa.array([1.0, None, 3.0, 4.0])
    clean.keep([chunk])
    assert clean.holds(chunk) and clean.holds(chunk.slice(1, 2))
    assert not clean.holds(pa.array([1.0, None, 3.0, 4.0]))  # equal values, other buffers
    assert not clean.holds(pa.array([1.0, 2.0]))
    clean.keep([])
    assert not clean.holds(chunk.slice(1, 2))


def test_nan_and_negative_zero_are_found_in_each_width_and_position() -> None:
    """unlike_duckdb's two reductions: NaN (either sign) anywhere, -0.0 but not 0.0,
    NULLs left out (all NULL: nothing to find)."""
    for kind in (pa.float16(), pa.float32(), pa.float64()):
        for value, found in ((math.nan, True), (-math.nan, True), (-0.0, True), (0.0, False)):
            for at in (0, 2):
                values = [1.0, -math.inf, math.inf]
                values[at] = value
                assert unlike_duckdb(pa.array(values, kind)) is found, (kind, value, at)
        assert not unlike_duckdb(pa.array([None, None], kind))
        assert unlike_duckdb(pa.array([None, -0.0], kind))
    assert not unlike_duckdb(pa.array([1, 2]))


def test_a_nan_a_fold_brings_into_a_kept_state_is_found() -> None:
    """Many groups, few touched per refresh: the untouched ones are not checked again,
    and a NaN in a touched group, in a new group, or made by adding inf and -inf is
    still found (the analysis goes to DuckDB and equals a full run)."""
    sql = "SELECT g, count(*) AS n, sum(v) AS s, max(v) AS hi FROM t GROUP BY g"
    with duckflock.connect() as db:
        db.execute(
            "CREATE TABLE t AS SELECT range % 500 AS g, (range * 0.5)::DOUBLE AS v FROM range(2000)"
        )
        db.analysis("a", sql)
        db.result("a", min_version=1, timeout=30)
        run = internals.analysis(db, "a").state
        plan = run.shape.plan
        assert plan is not None and plan.arrow is not None
        for rows in (
            [{"g": 3, "v": 1.0}],
            [{"g": 4, "v": math.inf}],
            [{"g": 4, "v": -math.inf}],  # inf + -inf: NaN in the state's sum
            [{"g": 9, "v": 2.0}],
        ):
            db.insert("t", rows)
            result = db.refresh("a")
            assert sorted(map(repr, result.rows())) == sorted(map(repr, db.execute(sql).fetchall()))
            if rows[0]["v"] == -math.inf:
                assert plan.arrow.has_nan(run.state, pa.table({"g": pa.array([], pa.int64())}))
