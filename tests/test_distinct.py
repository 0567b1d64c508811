"""count(DISTINCT …) in the pyarrow fold (live/fold/sets.py): the state's distinct
lists merged by position, equal to a full run, with no DuckDB query per refresh, and
handed to DuckDB's fold and back without a difference."""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import duckdb
import pyarrow as pa
import pytest

import duckflock
from duckflock.live import internals
from duckflock.live.fold import sets, sketches
from duckflock.live.fold.states import PartialKind
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


@contextlib.contextmanager
def _analysed(name: str, sql: str, rows: list[dict[str, Any]]) -> Iterator[duckflock.Database]:
    """An in-memory database whose table ``t`` (TABLE) holds ``rows``, with the analysis
    ``name`` over it defined and its first result in."""
    with duckflock.connect() as db:
        db.execute(TABLE)
        db.insert("t", rows)
        db.analysis(name, sql)
        db.result(name, min_version=1, timeout=30)
        yield db


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
    with _analysed(name, sql, _rows(rng, 30)) as db:
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
    with _analysed("d", sql, _rows(rng, 30)) as db:
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


# approx_count_distinct: DuckDB's sketches merged and counted in numpy (fold/sketches.py)
APPROX = (
    "SELECT k, approx_count_distinct(u) AS au, approx_count_distinct(s) AS a_s, "
    "approx_count_distinct(f) AS af, count(*) AS n, sum(v) AS sv FROM t GROUP BY k"
)
FLOATS = [0.0, -0.0, math.nan, -math.nan, math.inf, 1.5, None]


def _sketches(con: duckdb.DuckDBPyConnection, values: str) -> pa.Table:
    return con.execute(
        "SELECT g, CAST(approx_count_distinct(x) EXPORT_STATE AS BLOB) AS b, "
        f"approx_count_distinct(x) AS n FROM ({values}) GROUP BY g ORDER BY g"
    ).to_arrow_table()


@pytest.mark.parametrize(
    "values",
    [
        "SELECT range % 9 AS g, range * range AS x FROM range(30000)",
        "SELECT range % 5 AS g, 'v' || (range % (range % 5 * 700 + 1)) AS x FROM range(20000)",
        "SELECT range % 4 AS g, CASE WHEN range % 3 = 0 THEN NULL "
        "ELSE [0.0, -0.0, 'nan'::DOUBLE, 1e300, -1.5][range % 5 + 1] END AS x FROM range(99)",
        "SELECT range % 3 AS g, NULL::INTEGER AS x FROM range(5)",
    ],
)
def test_sketches_merge_and_count_as_duckdb_does(values: str) -> None:
    """DuckDB's combine is order-independent and idempotent (each register's maximum);
    numpy's merge of two groups' sketches is DuckDB's sketch of both groups' values, and
    its count DuckDB's finalize."""
    con = duckdb.connect()
    groups = _sketches(con, values)
    assert sketches.count(groups["b"]).to_pylist() == groups["n"].to_pylist()
    pairs = _sketches(con, f"SELECT g // 2 AS g, x FROM ({values})")
    regs = sketches.registers(groups["b"])
    evens, odds = groups["b"].combine_chunks()[0::2], groups["b"].combine_chunks()[1::2]
    odds = pa.concat_arrays([odds, evens[len(odds) :]])  # an odd count: the last with itself
    assert sketches.merge(evens, odds).equals(pairs["b"].combine_chunks())
    assert len(regs) == len(groups) and sketches.agrees()
    empty = "(SELECT approx_count_distinct(NULL::INTEGER) EXPORT_STATE)"
    __duckflock_state = pa.table({"a": evens, "b": odds})
    both = con.execute(
        f"SELECT CAST(combine(combine({empty}, a), b) AS BLOB) AS ab, "
        f"CAST(combine(combine({empty}, b), a) AS BLOB) AS ba, "
        f"CAST(combine(combine({empty}, a), a) AS BLOB) AS aa, a FROM __duckflock_state"
    ).to_arrow_table()
    assert both["ab"].equals(both["ba"]) and both["aa"].equals(both["a"])
    assert both["ab"].combine_chunks().equals(sketches.merge(evens, odds))


def test_counts_are_kept_for_the_sketches_whose_registers_did_not_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kept count is the count of the same registers; only changed or added rows are
    counted again, and the skipped steps of an unused register value change no bit."""
    con = duckdb.connect()
    values = (
        "SELECT range % 6 AS g, CASE WHEN range % 6 = 5 THEN range ELSE range * 7 % 300 END AS x"
    )
    old = _sketches(con, f"{values} FROM range(3000)")
    new = _sketches(con, f"{values} FROM range(5400)")
    more = _sketches(con, "SELECT range % 8 AS g, range AS x FROM range(64000)")
    counted, rows = sketches.Counted(), []
    inner = sketches._counts
    monkeypatch.setattr(sketches, "_counts", lambda regs: rows.append(len(regs)) or inner(regs))
    for table in (old, new, new, more):
        assert counted.count(table["b"], 3).to_pylist() == table["n"].to_pylist()
    assert rows == [6, 1, 8]  # all; group 5; none; all (other registers at every row)
    monkeypatch.setattr(sketches.Counted, "KEPT", 7)  # too many to keep: counted each time
    for table in (more, more, more):
        assert counted.count(table["b"], 3).to_pylist() == table["n"].to_pylist()
    assert rows == [6, 1, 8, 8, 8]  # (the kept ones answer once more, then are let go)
    # a histogram with gaps (values 0, 1, 9, 59) counted by the full loop of Q steps
    regs = sketches.registers(more["b"])
    regs[:, :4] = [[0, 1, 9, sketches.Q + 1]] * len(regs)
    c = [[list(row).count(v) for v in range(sketches.Q + 2)] for row in regs.tolist()]
    expected = []
    for row in c:
        z = float(sketches._TAU[row[sketches.Q]])
        for k in range(sketches.Q, 0, -1):
            z = (z + row[k]) * 0.5
        z += float(sketches._SIGMA[row[0]])
        estimate = sketches.ALPHA * sketches.M * sketches.M / z
        expected.append(math.floor(estimate) + (estimate - math.floor(estimate) >= 0.5))
    assert inner(regs).tolist() == expected


def test_a_sketch_numpy_cannot_read_is_refused() -> None:
    """NULL, another length or a register past Q + 1: ValueError, and DuckDB folds."""
    for bad in ([None], [b"\x00" * 63], [bytes([sketches.Q + 2]) * sketches.M]):
        with pytest.raises(ValueError, match=r"sketch|register"):
            sketches.count(pa.array(bad, pa.binary()))
    assert sketches.counted("finalize(combine((SELECT x), __p0)) + 1") is None


@pytest.mark.parametrize("collation", ["", " COLLATE NOCASE"])
def test_approx_count_distinct_merges_row_by_row_and_equals_a_full_run(
    collation: str, fold_queries: Callable[[], list[str]]
) -> None:
    """One query over the new rows per refresh (their sketches), merged in numpy: equal
    to a full run through NULLs, NaN/-0.0, collated strings, groups whose every value
    the state has seen already, and deletes."""
    rng = random.Random(collation)
    with duckflock.connect() as db:
        db.execute(f"CREATE TABLE t (k VARCHAR, u BIGINT, s VARCHAR{collation}, f DOUBLE, v INT)")

        def rows(count: int) -> list[dict[str, Any]]:
            return [
                {"k": r["k"], "u": r["u"], "s": r["s"], "f": rng.choice(FLOATS), "v": r["v"]}
                for r in _rows(rng, count)
            ]

        db.insert(
            "t",
            [
                {"k": k, "u": u, "s": s, "f": f, "v": 1}
                for k in "abcd"
                for u in range(8)
                for s in ("x", "X")
                for f in FLOATS
            ],
        )
        db.analysis("a", APPROX)
        db.result("a", min_version=1, timeout=30)
        run = internals.analysis(db, "a").state
        merge = run.shape.plan.merge if run.shape.plan is not None else None
        assert merge is not None and PartialKind.SKETCH in merge.kinds
        queries = fold_queries()
        for size in (5, 1, 40, 0, 12):
            if size:
                db.insert("t", rows(size))
            _same(db, "a", APPROX)
        assert len(queries) <= 4 and all(
            "EXPORT_STATE" in q and "__duckflock_state" not in q for q in queries
        )
        db.insert("t", [{"k": None, "u": None, "s": None, "f": None, "v": None}])
        _same(db, "a", APPROX)
        db.execute("DELETE FROM t WHERE u = 3")  # a sketch cannot retract: rebuilt
        rebuilt = db.refresh("a")
        assert sorted(rebuilt.rows(), key=repr) == sorted(db.execute(APPROX).fetchall(), key=repr)
        db.insert("t", rows(9))
        _same(db, "a", APPROX)


@pytest.mark.parametrize(
    "kind", ["TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "UINTEGER", "UBIGINT"]
)
def test_numpy_sketches_of_integers_are_duckdbs(kind: str) -> None:
    """DuckDB's hash of each integer (its bits zero-extended: -1 is not 2**64 - 1) and
    InsertElement's register and rank, per group, against DuckDB's exported sketches:
    the ends of the type, negatives, NULLs, repeats."""
    con = duckdb.connect()
    bits = {"TINY": 8, "SMAL": 16, "INTE": 32, "BIGI": 64}[kind.removeprefix("U")[:4]]
    top = 2 ** (bits - 1)
    ends = [0, 1, 2, 63, 64, 127, top - 1]
    ends += [2 * top - 1] if kind.startswith("U") else [-1, -top]
    values = (
        f"SELECT range % 7 AS g, TRY_CAST(CASE WHEN range % 11 = 0 THEN NULL "
        f"WHEN range % 5 = 0 THEN (CAST({ends} AS HUGEINT[]))[range % {len(ends)} + 1] "
        f"ELSE range * 2654435761 % {top} END AS {kind}) "
        f"AS x FROM range(5000)"
    )
    want = _sketches(con, values)
    rows = con.execute(f"SELECT g, x FROM ({values})").to_arrow_table()
    __duckflock_state = pa.table({"g": rows["g"], "c": sketches.codes(rows["x"])})
    lists = con.execute(
        "SELECT g, list(DISTINCT c) FILTER (WHERE c IS NOT NULL) AS l "
        "FROM __duckflock_state GROUP BY g ORDER BY g"
    ).to_arrow_table()
    assert sketches.gathered(lists["l"]).equals(want["b"].combine_chunks())


def test_integer_approx_count_distinct_runs_no_query(
    fold_queries: Callable[[], list[str]],
) -> None:
    """With integer arguments the new rows' sketches are numpy's too (admitted by the
    partials' probes): no DuckDB query per refresh, equal to a full run through NULLs,
    groups whose values the state has seen, and a group that is new."""
    sql = "SELECT k, approx_count_distinct(u) AS au, count(*) AS n FROM t GROUP BY k"
    rng = random.Random(21)
    with _analysed("a", sql, _rows(rng, 60)) as db:
        run = internals.analysis(db, "a").state
        merge = run.shape.plan.merge if run.shape.plan is not None else None
        assert merge is not None and merge.computed is not None
        queries = fold_queries()
        for size in (5, 1, 40, 12):
            db.insert("t", _rows(rng, size))
            _same(db, "a", sql)
        db.insert("t", [{"k": "new", "u": 2**40}, {"k": None, "u": -(2**62)}])
        _same(db, "a", sql)
        assert queries == []


def test_a_filtered_approx_count_distinct_is_incremental_and_equals_a_full_run() -> None:
    """``approx_count_distinct(x) FILTER (WHERE …)`` exports its filtered sketch (the
    EXPORT_STATE after the FILTER): incremental, and equal to a full run through groups
    whose every row the filter drops, then some it keeps, and a delete."""
    sql = (
        "SELECT k, approx_count_distinct(u) FILTER (WHERE v > 0) AS au, "
        "approx_count_distinct(s) FILTER (WHERE v < 0 AND u IS NOT NULL) AS a_s, "
        "count(*) AS n FROM t GROUP BY k"
    )
    rng = random.Random(11)
    with _analysed("a", sql, [*_rows(rng, 40), {"k": "none", "u": 1, "s": "x", "v": 0}]) as db:
        assert internals.analysis(db, "a").state.shape.plan is not None
        for size in (5, 1, 30, 0):
            if size:
                db.insert("t", _rows(rng, size))
            _same(db, "a", sql)
        db.insert("t", [{"k": "none", "u": 2, "s": "y", "v": 3}])  # the filter keeps one
        _same(db, "a", sql)
        db.execute("DELETE FROM t WHERE u = 3")  # a sketch cannot retract: rebuilt
        rebuilt = db.refresh("a")
        assert rebuilt.error is None
        assert sorted(rebuilt.rows(), key=repr) == sorted(db.execute(sql).fetchall(), key=repr)
        db.insert("t", _rows(rng, 9))
        _same(db, "a", sql)
