"""The computed programs' partials aligned to the state's rows in numpy
(live/fold/aligned.py) and count(DISTINCT)'s lists merged in numpy (sets.folded): bit for
bit what grouping the new rows and merging them gives, on hostile values (NULLs, each
integer type's ends, UBIGINT, ties), declined where they do not apply (a new group,
NaN or -0.0, an exact sum, no rows), and every refresh equal to a full run."""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import duckflock
from duckflock.live import internals
from duckflock.live.fold import aligned, merges, sets
from duckflock.live.plan.probes import INTEGERS, same

TABLE = (
    "CREATE TABLE t (k INTEGER, s VARCHAR, ok BOOLEAN, v DOUBLE, f FLOAT, ts TIMESTAMP, "
    "i8 TINYINT, i16 SMALLINT, i32 INTEGER, i64 BIGINT, "
    "u8 UTINYINT, u16 USMALLINT, u32 UINTEGER, u64 UBIGINT)"
)
SHAPES = {
    "one key": "SELECT k, count(*) FILTER (WHERE ok) AS good, count(i64) AS n, sum(v) AS sv, "
    "sum(f) FILTER (WHERE NOT ok) AS sf, min(i8) AS a, max(i16) AS b, "
    "min(i32) FILTER (WHERE ok) AS c, max(i64) AS d, min(u8) AS e, max(u16) AS g, "
    "min(u32) AS h, max(u64) AS i, min(u64) AS j, max(ts) AS l, min(v) AS m, max(f) AS o, "
    "bool_and(ok) AS p, bool_or(i32 > 0) FILTER (WHERE v > 0) AS q, "
    "arg_max(s, ts) AS latest, arg_min(u64, i64) AS low, arg_max(v, u64) AS top "
    "FROM t GROUP BY k",
    "two keys": "SELECT upper(s) AS us, k % 3 AS band, count(*) AS n, sum(v) AS total, "
    "avg(v) AS mean, max(u64) AS hi, arg_min(i8, v) AS lo FROM t "
    "WHERE i32 IS NULL OR i32 > -1000 GROUP BY upper(s), k % 3",
}
KEYS = [0, 1, -1, None]
TEXTS = ["a", "B", "c", None]


def _ends(kind: str) -> list[Any]:
    bits = INTEGERS[kind]
    low, high = (0, 2**-bits - 1) if bits < 0 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return [low, high, low + 1, high - 1, 0, 1, None]


COLUMNS = {"i8": "TINYINT", "i16": "SMALLINT", "i32": "INTEGER", "i64": "BIGINT"} | {
    "u8": "UTINYINT",
    "u16": "USMALLINT",
    "u32": "UINTEGER",
    "u64": "UBIGINT",
}


def _rows(rng: random.Random, count: int, keys: list[Any] = KEYS) -> list[dict[str, Any]]:
    """Rows over the known groups: each integer type's ends, NULLs, doubles of both
    signs and infinity (no NaN or -0.0), a few timestamps (ties on arg_max's key)."""
    rows = []
    for i in range(count):
        row: dict[str, Any] = {name: rng.choice(_ends(kind)) for name, kind in COLUMNS.items()}
        row |= {
            "k": keys[i % len(keys)] if i < len(keys) * 4 else rng.choice(keys),
            "s": TEXTS[(i // len(keys)) % len(TEXTS)] if i < len(keys) * 4 else rng.choice(TEXTS),
            "ok": rng.choice([True, False, None]),
            # sums exact in any order: a full run adds in another order than a fold
            # (tests/test_dense.py holds the fold's sums to the grouped ones' bits)
            "v": rng.choice([0.5, -1.25, 2.0**60, 2.0, math.inf, 0.0, None]),
            "f": rng.choice([0.25, -8.5, 3.0, None]),
            "ts": rng.choice([None, "2026-01-01 00:00:01", "2026-01-01", "1970-01-01"]),
        }
        rows.append(row)
    return rows


def _exact(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows that compare exactly (floats by their bits, any NaN as one), in any order."""
    return sorted((tuple(_bits(value) for value in row) for row in rows), key=repr)


def _bits(value: Any) -> Any:
    if not isinstance(value, float):
        return value
    return "NaN" if math.isnan(value) else struct.pack("<d", value)


class _Checked:
    """merges.fold wrapped: each fold's aligned partials compared with grouping and
    merging (``taken``: how many folds the aligned path took)."""

    def __init__(self) -> None:
        self.taken = 0
        self.declined = 0
        self.real = merges.fold

    def __call__(self, cursor: Any, merge: merges.Merge, state: pa.Table, delta: pa.Table) -> Any:
        program, rows = merges._program(merge, delta)
        got = None if program is None else merges._aligned(merge, program, state, rows)
        if got is None:
            self.declined += 1
        else:
            assert merge.computed is not None
            new = merge.computed.partials(delta, state.schema).cast(state.schema)
            want = merges.merged(merge, state, new)
            assert want is not None and same(want, got, state.schema)
            self.taken += 1
        return self.real(cursor, merge, state, delta)


def _analyses(db: duckflock.Database) -> None:
    db.execute(TABLE)
    db.insert("t", _rows(random.Random(0), 64))
    for name, sql in SHAPES.items():
        db.analysis(name, sql)
        db.result(name, min_version=1, timeout=30)
        merge = internals.analysis(db, name).state.shape.plan.merge
        assert merge is not None and merge.computed is not None, name


@pytest.mark.parametrize("seed", range(3))
def test_aligned_partials_equal_grouped_ones_and_a_full_run(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    checked = _Checked()
    monkeypatch.setattr(merges, "fold", checked)
    rng = random.Random(seed)
    with duckflock.connect() as db:
        _analyses(db)
        for rows in (
            _rows(rng, 40),
            _rows(rng, 40),
            [row | {"i32": -(2**31)} for row in _rows(rng, 40)],  # WHERE keeps none
            _rows(rng, 40, [*KEYS, 7]),  # a new group: declined, grouped
            _rows(rng, 40),
        ):
            db.insert("t", rows)
            for name, sql in SHAPES.items():
                result = db.refresh(name)
                assert result.mode == "incremental", result.reason
                assert _exact(result.rows()) == _exact(db.execute(sql).fetchall()), name
        assert (checked.taken, checked.declined) == (9, 1)  # one key: its new group
        for bad in ({"v": math.nan}, {"f": -0.0}):  # routed away: DuckDB folds them
            taken = checked.taken
            db.insert("t", [row | bad for row in _rows(rng, 40)])
            for name, sql in SHAPES.items():
                assert _exact(db.refresh(name).rows()) == _exact(db.execute(sql).fetchall())
            assert checked.taken == taken


def test_aligned_booleans_equal_grouped_ones_and_a_full_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bool_and/bool_or per group: one false (true) value among true (false) ones or
    NULLs, NULLs only, a group's first value, groups the batch does not touch."""
    checked = _Checked()
    monkeypatch.setattr(merges, "fold", checked)
    sql = (
        "SELECT k, bool_and(ok) AS a, bool_or(ok) AS o, count(ok) AS n, "
        "bool_or(ok) FILTER (WHERE k > 1) AS f FROM t GROUP BY k"
    )
    T, F, N = True, False, None
    batches = [
        {0: [T, T], 1: [F, F], 2: [N], 3: [T, F]},
        {0: [F, T, T], 1: [F, T], 2: [N, N], 3: [N]},
        {0: [T], 1: [F], 2: [T], 3: [T]},
        {2: [F, T, N, N]},
        {3: [N, N, N, N]},
    ]
    with duckflock.connect() as db:
        db.execute("CREATE TABLE t (k INTEGER, ok BOOLEAN)")
        for i, batch in enumerate(batches):
            db.insert("t", [{"k": k, "ok": ok} for k, oks in batch.items() for ok in oks])
            if i == 0:
                db.analysis("bools", sql)
                db.result("bools", min_version=1, timeout=30)
                continue
            result = db.refresh("bools")
            assert result.mode == "incremental", result.reason
            assert sorted(result.rows()) == sorted(db.execute(sql).fetchall())
    assert (checked.taken, checked.declined) == (len(batches) - 1, 0)


def test_a_joins_aligned_partials_equal_grouped_ones_and_a_full_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A one-key join to a dimension (live/fold/lookup.py): the joined rows' partials
    aligned to the state's; fact keys that join nothing or are NULL, a NULL site."""
    checked = _Checked()
    monkeypatch.setattr(merges, "fold", checked)
    sql = (
        "SELECT d.site, count(*) AS n, sum(f.v) AS s, max(f.k) AS hi, "
        "bool_or(f.v > 1) AS big FROM f JOIN d ON f.g = d.g GROUP BY d.site"
    )
    keys = ["a", "b", "c", None, "x", "e"]
    with duckflock.connect() as db:
        db.execute("CREATE TABLE f (k INTEGER, g VARCHAR, v DOUBLE)")
        db.execute("CREATE TABLE d (g VARCHAR, site VARCHAR)")
        db.execute("INSERT INTO d VALUES ('a', 'n'), ('b', 's'), ('c', NULL), ('e', 'n')")
        for round_ in range(6):
            db.insert(
                "f",
                [
                    {
                        "k": round_ * 100 - i,
                        "g": keys[(round_ + i) % 6],
                        "v": [0.5, -1.25, 2.0][i % 3],
                    }
                    for i in range(30)
                ],
            )
            if round_ == 0:
                db.analysis("joined", sql)
                db.result("joined", min_version=1, timeout=30)
                continue
            result = db.refresh("joined")
            assert result.mode == "incremental", result.reason
            assert _exact(result.rows()) == _exact(db.execute(sql).fetchall()), round_
    # the first fold after the build is the pinned one (no copy, no lookup: a query)
    assert (checked.taken, checked.declined) == (4, 1)


def test_aligned_partials_decline_what_they_do_not_compute() -> None:
    with duckflock.connect() as db:
        db.execute(TABLE)
        db.insert("t", _rows(random.Random(1), 64))
        db.analysis("exact", "SELECT k, sum(i32) AS total, count(*) AS n FROM t GROUP BY k")
        db.analysis("first", "SELECT k, first(v ORDER BY ts) AS fv FROM t GROUP BY k")
        for name in ("exact", "first"):
            db.result(name, min_version=1, timeout=30)
        batch = db.execute("SELECT * FROM t LIMIT 40").to_arrow_table()  # known groups
        for name in ("exact", "first"):
            run = internals.analysis(db, name).state
            merge = run.shape.plan.merge
            assert merge is not None and isinstance(merge.computed, aligned.Computed)
            assert aligned.partials(merge.computed, run.state, merge.keys, batch) is None
        run = internals.analysis(db, "exact").state
        merge = run.shape.plan.merge
        assert merge is not None and isinstance(merge.computed, aligned.Computed)
        for few in (batch.slice(0, 0), batch.slice(0, 2)):  # fewer rows than groups
            assert aligned.partials(merge.computed, run.state, merge.keys, few) is None


ARROW = {
    "TINYINT": pa.int8(),
    "SMALLINT": pa.int16(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "UTINYINT": pa.uint8(),
    "USMALLINT": pa.uint16(),
    "UINTEGER": pa.uint32(),
    "UBIGINT": pa.uint64(),
}


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("kind", [*INTEGERS, "TIMESTAMP", "DATE"])
def test_numpy_lists_hold_each_groups_distinct_values(kind: str, wide: bool) -> None:
    """count(DISTINCT x)'s lists merged in numpy (sets.folded) hold each group's
    distinct values (in another order than the union's: a list is read for its length)
    for each integer type's ends, times, NULL values, NULL and empty lists, a narrow
    range (a bitmap of pairs) and a wide one (sorted pairs); a list with none: NULL."""
    rng = random.Random(f"{kind}{wide}")
    value = ARROW.get(kind) or (pa.timestamp("us") if kind == "TIMESTAMP" else pa.date32())
    pool: list[Any] = list(range(-3, 9)) if kind not in ARROW or INTEGERS[kind] > 0 else []
    pool = pool or list(range(12))
    if wide and kind in ARROW:
        pool += [x for x in _ends(kind) if x is not None]
    elif wide:
        pool += [-(2**40), 2**40] if kind == "TIMESTAMP" else [-700_000, 2_900_000]
    physical = pa.int32() if kind == "DATE" else pa.int64()
    values = pa.array(pool, value if kind in ARROW else physical).view(value).to_pylist()
    kept = [None, [], *([rng.choice(values) for _ in range(rng.randrange(4))] for _ in range(6))]
    old = pa.chunked_array([pa.array(kept, pa.list_(pa.field("l", value)))])
    at = np.array([rng.randrange(len(kept)) for _ in range(60)], np.int64)
    added = [rng.choice([*values, None]) for _ in range(60)]
    got = sets.folded(old, at, pa.chunked_array([pa.array(added, value)]))
    assert got is not None and got.type == old.type
    want = []
    for group, lst in enumerate(kept):
        distinct = {x for x in lst or []} | {
            x for g, x in zip(at, added, strict=True) if g == group and x is not None
        }
        want.append(sorted(distinct) or None)
    assert [None if row is None else sorted(row) for row in got.to_pylist()] == want
    assert sets.length(pa.chunked_array([got])).to_pylist() == [len(w or []) for w in want]


def test_numpy_lists_decline_other_types_and_mismatched_values() -> None:
    old = pa.chunked_array([pa.array([["a"], None], pa.list_(pa.string()))])
    assert sets.folded(old, np.array([0, 1]), pa.chunked_array([pa.array(["b", "a"])])) is None
    ints = pa.chunked_array([pa.array([[1], None], pa.list_(pa.int32()))])
    assert sets.folded(ints, np.array([0, 1]), pa.chunked_array([pa.array([1, 2])])) is None
