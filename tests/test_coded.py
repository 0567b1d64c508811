"""Grouping by integer codes in numpy (live/fold/coded.py): bit for bit what pyarrow's
grouping gives for a window's three merges (the new rows' partials, the state's merge,
the combine of the buckets inside the window with the cut bucket's rows), declined where
it does not apply; the state ordered by bucket (live/bucketmerge.by_bucket); the
numpy time bucket (live/instants.bucket_of) equal to the pyarrow one."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from duckflock.live import bucketmerge, instants
from duckflock.live.fold import coded
from duckflock.live.fold.arrow import ArrowPlan, Output, OutputKind
from duckflock.live.fold.states import PartialKind
from duckflock.live.plan.probes import same
from test_dense import PARTIALS  # the partials of every kind the numpy folds take

K = PartialKind
TYPES = [pa.int64()] + [pa.float64()] * 4 + [pa.int64(), pa.float64(), pa.float32(), pa.int64()]
WIDTH = 4_687_500  # a window of 5 minutes in 64 buckets
STAMP = pa.timestamp("us")


def _schema(keys: list[pa.DataType]) -> pa.Schema:
    return pa.schema(
        [(f"__k{i}", kind) for i, kind in enumerate(keys)]
        + [(f"__p{i}", kind) for i, kind in enumerate(TYPES)]
    )


def _plan(keys: tuple[str, ...]) -> ArrowPlan:
    outputs = tuple(Output(OutputKind.PARTIAL, i) for i in range(len(PARTIALS)))
    names = tuple(f"o{i}" for i in range(len(PARTIALS)))
    schema = pa.schema([(name, TYPES[i]) for i, name in enumerate(names)])
    return ArrowPlan(keys, PARTIALS, outputs, names, schema, (), 0, None)


def _rows(
    rng: np.random.Generator, count: int, groups: int, buckets: int, first: int = 0
) -> pa.Table:
    """Doubles of every magnitude and sign (their sums depend on the order of the
    terms) and a bucket column of ``buckets`` buckets (multiples of WIDTH)."""
    wide = rng.standard_normal(count) * 10.0 ** rng.integers(-30, 30, count)
    at = (
        1_765_000_000_000_000 // WIDTH * WIDTH + rng.integers(first, first + buckets, count) * WIDTH
    )
    return pa.table(
        {
            "k": pa.array(rng.integers(-groups, groups, count), pa.int32()),
            "v": wide,
            "f": pa.array(wide, pa.float32()),
            "n": pa.array(rng.integers(-(2**62), 2**62, count), pa.int64()),
            "b": pa.array(at, pa.int64()).view(STAMP),
            "m": pa.array(rng.integers(0, 10**9, count) // 3 * 3, pa.int64()),  # sparse
        }
    )


@pytest.mark.parametrize("seed", range(4))
def test_a_windows_three_merges_equal_grouping_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    bucketed, plain = _plan(("k", "b")), _plan(("k",))
    schema, narrow = _schema([pa.int32(), STAMP]), _schema([pa.int32()])
    rows = _rows(rng, 6_000, 40, 65)
    state = coded.partials(bucketed, rows, schema)  # the new rows' partials
    assert state is not None and same(bucketed.partials_of(rows, schema), state, schema)
    for _ in range(3):
        rows = _rows(rng, 2_000, 45, 70)
        parts = bucketed.partials_of(rows, schema)
        merged = coded.merged(bucketed, [state, parts], first=1)  # the state's merge
        assert merged is not None
        assert same(bucketed.merge(state, parts, unique=False)[0], merged, schema)
        stamps = coded.integers(merged["__k1"])
        assert stamps is not None and not np.any(np.diff(stamps) < 0)  # by bucket first
        state = merged
    inside = state.drop_columns(["__k1"])
    cut = _rows(rng, 3_000, 50, 1)
    combined = coded.combined(plain, inside, cut)  # whole buckets, the cut one's rows
    assert combined is not None
    assert same(plain.fold(inside, cut, unique=False)[0], combined, narrow)


def test_sparse_keys_are_numbered_by_their_distinct_codes() -> None:
    rng = np.random.default_rng(4)
    plan, schema = _plan(("k", "m")), _schema([pa.int32(), pa.int64()])
    rows = _rows(rng, 3_000, 40, 1)
    rows = pa.concat_tables([rows, rows.slice(0, 500)])  # some groups of two rows
    state = coded.partials(plan, rows, schema)
    assert state is not None and same(plan.partials_of(rows, schema), state, schema)
    parts = plan.partials_of(rows.slice(100, 900), schema)
    merged = coded.merged(plan, [state, parts])
    assert merged is not None
    assert same(plan.merge(state, parts, unique=False)[0], merged, schema)


def test_the_state_merges_from_the_new_rows_first_bucket_on() -> None:
    rng = np.random.default_rng(11)
    plan, schema = _plan(("k", "b")), _schema([pa.int32(), STAMP])
    state = coded.merged(plan, [plan.partials_of(_rows(rng, 5_000, 30, 60), schema)], first=1)
    assert state is not None
    parts = plan.partials_of(_rows(rng, 1_000, 35, 3, first=58), schema)  # 2 new groups' worth
    merged = bucketmerge.by_bucket(plan, state, parts)
    assert merged is not None
    assert same(plan.merge(state, parts, unique=False)[0], merged, schema)
    # the buckets before the new rows' are the old state's rows, not copied
    assert merged.column(0).num_chunks > 1


def test_it_declines_what_it_cannot_code_or_add_exactly() -> None:
    rng = np.random.default_rng(3)
    plan, schema = _plan(("k", "b")), _schema([pa.int32(), STAMP])
    rows = _rows(rng, 500, 10, 5)
    nulls = rows.set_column(0, "k", pa.array([None, *rows["k"].to_pylist()[1:]], pa.int32()))
    assert coded.partials(plan, nulls, schema) is None  # a NULL key: pyarrow groups it
    text = rows.set_column(0, "k", pc.cast(rows["k"], pa.string()))
    assert coded.partials(plan, text, _schema([pa.string(), STAMP])) is None
    missing = rows.set_column(1, "v", pa.array([None, *rows["v"].to_pylist()[1:]]))
    assert coded.partials(plan, missing, schema) is None  # a sum of no values is NULL
    far = rows.set_column(0, "k", pa.array([-(2**62), *[2**62] * 499], pa.int64()))
    assert coded.partials(plan, far, _schema([pa.int64(), STAMP])) is None  # codes overflow
    exact = ArrowPlan(("k",), ((K.SUM, "n"),), (), (), pa.schema([]), (), 0, None)
    summed = pa.schema([("__k0", pa.int32()), ("__p0", pa.decimal128(38))])
    assert coded.partials(exact, rows, summed) is None


def test_look_up_is_index_in() -> None:
    rng = np.random.default_rng(5)
    values = pa.chunked_array([pa.array(rng.integers(0, 90, 700) * WIDTH, pa.int64()).view(STAMP)])
    found = pa.chunked_array([pa.array(rng.permutation(60) * WIDTH, pa.int64()).view(STAMP)])
    looked = coded.look_up(values, found)
    assert looked is not None
    want = pc.index_in(values, value_set=found.combine_chunks())
    assert looked[1].tolist() == want.is_valid().to_pylist()
    assert looked[0][looked[1]].tolist() == want.drop_null().to_pylist()
    assert coded.look_up(pc.cast(values, pa.string()), pc.cast(found, pa.string())) is None


@pytest.mark.parametrize("tz", [None, "UTC", "America/New_York"])
def test_the_numpy_time_bucket_is_the_pyarrow_one(tz: str | None) -> None:
    rng = np.random.default_rng(9)
    micros = [*rng.integers(-(2**59), 2**59, 2_000).tolist(), 0, -1, instants.ORIGIN - 1]
    kind = pa.timestamp("us", tz)
    for width in (1_000, WIDTH, 86_400_000_000, 7):
        values = pa.chunked_array([pa.array(micros, pa.int64()).view(kind)])
        with_null = pa.chunked_array([pa.array([*micros, None], pa.int64()).view(kind)])
        fast, slow = (
            instants.bucket_of(values, width, kind),
            instants.bucket_of(with_null, width, kind),
        )
        assert fast is not None and slow is not None and fast.type == slow.type == kind
        assert fast.combine_chunks().equals(slow.combine_chunks().slice(0, len(micros)))
    far = pa.chunked_array([pa.array([2**60], pa.int64()).view(kind)])
    assert instants.bucket_of(far, WIDTH, kind) is None
