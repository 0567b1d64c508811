"""An exact retention subtracted in int64s (``live/fold/unscaled.py``) is the arithmetic
of Python's integers — or steps aside (None) where a value leaves int64, and the
decimal256 subtraction runs instead; through a Database, it is what a full run gives."""

from __future__ import annotations

import gc
import os
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import duckflock
from duckflock.live import internals
from duckflock.live.fold import unscaled
from duckflock.live.fold.retraction import Retracts
from duckflock.live.fold.words import built, words

EXAMPLES = int(os.environ.get("DUCKFLOCK_PROPERTY_EXAMPLES", "12"))
KINDS = (Retracts.COUNT, Retracts.COUNT, Retracts.SUM)  # count(*), count(x), sum(x)
COUNTS = (-1, -1, 1)
EDGES = [0, 1, -1, 2**63 - 1, -(2**63), 2**62, -(2**62), 2**63, -(2**63) - 1, 10**37]
VALUES = st.one_of(st.integers(-(2**64), 2**64), st.sampled_from(EDGES))


def _decimals(values: list[int | None], scale: int) -> pa.Array:
    kind = pa.decimal128(38, scale)
    return pa.array([None if v is None else Decimal(v).scaleb(-scale) for v in values], kind)


def _table(
    keys: list[Any], rows: list[tuple[int, int, int | None]], scale: int, key: pa.DataType
) -> pa.Table:
    """A state (or the deleted rows' partials): a key, count(*), count(x), sum(x) — as
    a slice of a longer table with a chunk more, to read past offsets and chunks."""
    pad: list[Any] = [keys[0] if keys else None]
    columns = [
        pa.array(pad + keys, key),
        pa.array([5] + [n for n, _, _ in rows], pa.int64()),
        pa.array([5] + [c for _, c, _ in rows], pa.int64()),
        _decimals([7] + [s for _, _, s in rows], scale),
    ]
    table = pa.Table.from_arrays(columns, names=["__k0", "__p0", "__p1", "__p2"]).slice(1)
    return pa.concat_tables([table.slice(0, len(keys) // 2), table.slice(len(keys) // 2)])


@settings(max_examples=EXAMPLES * 10, deadline=None)
@given(
    groups=st.lists(
        st.tuples(
            st.integers(1, 5), st.integers(0, 5), VALUES, st.integers(0, 5), st.integers(0, 5)
        ),
        min_size=0,
        max_size=12,
    ),
    gone_values=st.lists(VALUES, min_size=12, max_size=12),
    lost=st.booleans(),
    scale=st.sampled_from([0, 2]),
    key=st.sampled_from([pa.int32(), pa.string()]),
)
@example(  # int64 overflows: 2^63 - 1 less -1, and -2^63 less 1
    groups=[(2, 2, 2**63 - 1, 1, 1), (3, 1, -(2**63), 2, 1), (1, 1, 5, 1, 1)],
    gone_values=[-1, 1] + [5] * 10,
    lost=False,
    scale=0,
    key=pa.int32(),
)
def test_subtraction_in_int64s_is_integer_arithmetic(
    groups: list[tuple[int, int, int, int, int]],
    gone_values: list[int],
    lost: bool,
    scale: int,
    key: pa.DataType,
) -> None:
    """Each group's count(*), count(x) and sum(x) less the deleted rows' (a subset of
    the groups, in another order; a count falling to 0 makes the sum NULL, count(*) the
    group go): exactly Python's integers, whenever every value and difference fits an
    int64 — then it never steps aside; past that, None. A deleted group the state lacks
    (``lost``) is None too."""
    state_rows, gone_rows, expected, differences = [], [], {}, []
    keys = [i if key == pa.int32() else f"k{i}" for i in range(len(groups))]
    gone_keys = []
    for i, (rows, xs, total, rows_gone, xs_gone) in enumerate(groups):
        xs = min(xs, rows)
        state_rows.append((rows, xs, total if xs else None))
        if rows_gone:  # this group lost rows
            rows_gone, xs_gone = min(rows_gone, rows), min(xs_gone, xs)
            taken = gone_values[i] if xs_gone else None
            gone_keys.append(keys[i])
            gone_rows.append((rows_gone, xs_gone, taken))
        else:
            rows_gone, xs_gone, taken = 0, 0, None
        left = (total if xs else 0) - (taken or 0)
        differences.append(left)
        if rows - rows_gone:
            expected[keys[i]] = (rows - rows_gone, xs - xs_gone, left if xs - xs_gone else None)
    if lost:
        gone_keys.append(len(groups) if key == pa.int32() else "lost")
        gone_rows.append((1, 0, None))
    order = list(reversed(range(len(gone_keys))))
    gone_keys = [gone_keys[i] for i in order]
    gone_rows = [gone_rows[i] for i in order]
    state = _table(keys, state_rows, scale, key)
    gone = _table(gone_keys, gone_rows, scale, key).rename_columns(["a", "b", "c", "d"])
    got = unscaled.subtract(state, gone, KINDS, COUNTS, 0)
    inputs = [v for _, _, v in state_rows + gone_rows if v is not None]
    fits = all(-(2**63) <= v < 2**63 for v in inputs + differences)
    if lost:
        assert got is None
        return
    if got is None:
        assert not fits
        return
    assert got.schema == state.schema
    scaled = {
        k: (n, c, None if s is None else Decimal(s).scaleb(-scale))
        for k, (n, c, s) in expected.items()
    }
    assert {r["__k0"]: (r["__p0"], r["__p1"], r["__p2"]) for r in got.to_pylist()} == scaled
    assert got.num_rows == len(expected)


def test_the_next_subtraction_from_the_state_it_made_is_the_same_as_from_a_copy() -> None:
    """The state a subtraction made keeps its matrix for the next one (not read again):
    from it, or from an equal table read afresh, the next result is the same — NULL
    sums and an emptied group included."""
    state = _table([1, 2, 3], [(3, 2, 10), (2, 0, None), (4, 4, -(2**62))], 2, pa.int32())
    first = _table([3, 1], [(1, 1, 5), (2, 2, 10)], 2, pa.int32())
    second = _table([1, 3], [(1, 0, None), (2, 2, 7)], 2, pa.int32())
    made = unscaled.subtract(state, first, KINDS, COUNTS, 0)
    assert made is not None
    assert made.to_pylist() == [
        {"__k0": 1, "__p0": 1, "__p1": 0, "__p2": None},
        {"__k0": 2, "__p0": 2, "__p1": 0, "__p2": None},
        {"__k0": 3, "__p0": 3, "__p1": 3, "__p2": Decimal(-(2**62) - 5).scaleb(-2)},
    ]
    again = unscaled.subtract(made, second, KINDS, COUNTS, 0)  # from the kept matrix
    copy = pa.Table.from_pylist(made.to_pylist(), schema=made.schema)
    fresh = unscaled.subtract(copy, second, KINDS, COUNTS, 0)  # read from the table
    assert again is not None and fresh is not None
    assert again.equals(fresh)
    assert again.to_pylist() == [
        {"__k0": 2, "__p0": 2, "__p1": 0, "__p2": None},
        {"__k0": 3, "__p0": 1, "__p1": 1, "__p2": Decimal(-(2**62) - 12).scaleb(-2)},
    ]


def test_partials_read_ahead_subtract_as_partials_read_then() -> None:
    """The deleted rows' partials read by the DELETE's caller (``read_ahead``) give what
    reading them in the refresh gives — a value past int64 too (None) — and the entry
    leaves with the table."""
    state = _table([1, 2, 3], [(3, 2, 10), (2, 0, None), (4, 4, -(2**62))], 2, pa.int32())
    for rows in ([(1, 1, 5), (2, 2, 10)], [(1, 1, 2**64), (2, 2, 10)]):
        gone = _table([3, 1], rows, 2, pa.int32())
        copy = pa.Table.from_pylist(gone.to_pylist(), schema=gone.schema)
        unscaled.read_ahead(gone, KINDS, COUNTS)
        assert id(gone) in unscaled._AHEAD
        ahead = unscaled.subtract(state, gone, KINDS, COUNTS, 0)
        then = unscaled.subtract(state, copy, KINDS, COUNTS, 0)
        assert (ahead is None) == (then is None) == (rows[0][2] == 2**64)
        assert ahead is None or then is None or ahead.equals(then)
        key = id(gone)
        del gone
        gc.collect()
        assert key not in unscaled._AHEAD


def test_words_read_and_build_decimals_and_int64s() -> None:
    """A ``decimal128`` value's unscaled integer is its low word where the high word
    only extends its sign; built back, the words are the same values; a value past a
    small precision is refused."""
    values = [0, 1, -1, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, None]
    array = _decimals(values, 3).slice(1)
    low, fits, scale = words(array) or (None, None, None)
    assert scale == 3 and fits is not None and low is not None
    assert fits.tolist() == [True, True, True, True, False, False, True]
    present = array.is_valid().to_numpy(zero_copy_only=False)
    back = built(low, present, pa.decimal128(38, 3))
    assert back is not None
    assert back.to_pylist()[:4] == array.to_pylist()[:4]
    assert back.to_pylist()[-1] is None
    assert built(low[:1], None, pa.decimal128(4, 0)) is not None
    assert built(low[3:4], None, pa.decimal128(4, 0)) is None  # 2^63 - 1 has 19 digits
    assert words(pa.array([1.5])) is None


@pytest.mark.parametrize("key", ["INTEGER", "VARCHAR"])
def test_a_retention_delete_subtracts_in_int64s_and_equals_a_full_run(
    monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    """Through a Database: every DELETE of an exact shape (BIGINT and DECIMAL sums, an
    avg, counts; NULL values, a whole group gone) is subtracted in int64s — never the
    decimal256 path — and the result is the full run's, bit for bit."""
    import duckflock.live.fold.retention as retention

    slow: list[int] = []
    by_position = retention._subtract_by_position
    monkeypatch.setattr(
        retention, "_subtract_by_position", lambda *a: slow.append(1) or by_position(*a)
    )
    sql = (
        "SELECT k, count(*) AS n, count(i) AS ci, sum(i) AS si, sum(d) AS sd, avg(i) AS a "
        "FROM t GROUP BY k"
    )
    with duckflock.connect() as db:
        db.execute(f"CREATE TABLE t (k {key}, i BIGINT, d DECIMAL(18, 2), ts INTEGER)")
        db.execute(
            "INSERT INTO t SELECT (range % 7)::VARCHAR, CASE WHEN range % 5 = 0 THEN NULL "
            "ELSE range * 7919 % 10007 - 5000 END, (range % 101) * 0.37, range FROM range(700)"
        )
        db.analysis("a", sql)
        db.refresh("a")
        assert internals.analysis(db, "a").state.shape.plan.retract.exact
        for delete in [
            "DELETE FROM t WHERE ts < 70",
            "DELETE FROM t WHERE ts < 200 AND i IS NULL",
            "DELETE FROM t WHERE k = '3'",  # the whole group
            "DELETE FROM t WHERE ts < 400",
        ]:
            db.execute(delete)
            result = db.refresh("a", timeout=60)
            assert result.mode == "incremental", result.reason
            full = db.execute(sql).to_arrow_table()
            assert sorted(map(repr, result.table.to_pylist())) == sorted(
                map(repr, full.to_pylist())
            ), delete
        assert not slow
