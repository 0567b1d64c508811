"""The numpy fold of a small state by its positions (live/fold/dense.py): bit for bit
what grouping the new rows and merging them by position gives, and declined where it
does not apply; and the NaN/-0.0 check (live/fold/nans.py) on every column type."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import duckflock
from duckflock.live import internals
from duckflock.live.fold import dense
from duckflock.live.fold.arrow import ArrowPlan, Output, OutputKind
from duckflock.live.fold.nans import unlike_duckdb
from duckflock.live.fold.states import PartialKind
from duckflock.live.plan.probes import same

K = PartialKind
PARTIALS = (
    (K.COUNT_ALL, None),
    (K.SUM, "v"),
    (K.MIN, "v"),
    (K.MAX, "v"),
    (K.SUM, "v"),  # an avg's sum beside the sum: merged once
    (K.COUNT, "v"),
    (K.SUM, "f"),  # FLOAT, summed as DOUBLE
    (K.MIN, "f"),
    (K.MAX, "n"),
)
SCHEMA = pa.schema(
    [("__k0", pa.int32())]
    + [(f"__p{i}", kind) for i, kind in enumerate([pa.int64()] + [pa.float64()] * 4)]
    + [("__p5", pa.int64()), ("__p6", pa.float64()), ("__p7", pa.float32()), ("__p8", pa.int64())]
)


def _plan() -> ArrowPlan:
    outputs = tuple(Output(OutputKind.PARTIAL, i) for i in range(len(PARTIALS)))
    names = tuple(f"o{i}" for i in range(len(PARTIALS)))
    schema = pa.schema([(name, SCHEMA.field(i + 1).type) for i, name in enumerate(names)])
    return ArrowPlan(("k",), PARTIALS, outputs, names, schema, (), 0, None)


def _rows(rng: np.random.Generator, count: int, groups: int) -> pa.Table:
    """Doubles of every magnitude and sign: their sums depend on the order of the terms."""
    wide = rng.standard_normal(count) * 10.0 ** rng.integers(-30, 30, count)
    return pa.table(
        {
            "k": pa.array(rng.integers(0, groups, count), pa.int32()),
            "v": wide,
            "f": pa.array(wide, pa.float32()),
            "n": pa.array(rng.integers(-(2**62), 2**62, count), pa.int64()),
        }
    )


@pytest.mark.parametrize("seed", range(5))
def test_the_numpy_fold_equals_grouping_then_merging_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    plan = _plan()
    state = plan.partials_of(_rows(rng, 5_000, 40), SCHEMA)
    for _ in range(3):
        delta = _rows(rng, 3_000, 40)
        folded = dense.fold(state, delta["k"], delta, PARTIALS, plan.twins, plan._keys)
        assert folded is not None and folded[1]
        grouped = plan.merge(state, plan.partials_of(delta, SCHEMA))[0]
        assert same(grouped, folded[0], SCHEMA)
        state = folded[0]


def test_it_declines_new_groups_nulls_and_exact_sums() -> None:
    rng = np.random.default_rng(7)
    plan = _plan()
    state = plan.partials_of(_rows(rng, 1_000, 10), SCHEMA)
    fresh = _rows(rng, 100, 11)  # group 10 is new
    assert dense.fold(state, fresh["k"], fresh, PARTIALS, plan.twins) is None
    assert dense.fold(state, fresh["k"], fresh, PARTIALS, plan.twins, dense.KeyIndex()) is None
    nulls = _rows(rng, 100, 10)
    nulls = nulls.set_column(1, "v", pa.array([None, *nulls["v"].to_pylist()[1:]], pa.float64()))
    assert dense.fold(state, nulls["k"], nulls, PARTIALS, plan.twins) is None
    exact = ((K.SUM, "n"),)
    summed = pa.table(
        {"__k0": pa.array(range(10), pa.int32()), "__p0": pa.array(range(10), pa.decimal128(38))}
    )
    rows = _rows(rng, 100, 10)
    assert dense.fold(summed, rows["k"], rows, exact, (0,)) is None


def test_inf_minus_inf_is_merged_and_not_vouched_clean() -> None:
    plan = _plan()
    state = plan.partials_of(
        pa.table(
            {
                "k": pa.array([1], pa.int32()),
                "v": [float("inf")],
                "f": pa.array([1.0], pa.float32()),
                "n": [1],
            }
        ),
        SCHEMA,
    )
    delta = pa.table(
        {"k": pa.array([1], pa.int32()), "v": [-float("inf")], "f": pa.array([1.0], pa.float32())}
    ).append_column("n", pa.array([2], pa.int64()))
    folded = dense.fold(state, delta["k"], delta, PARTIALS, plan.twins)
    assert folded is not None and not folded[1]
    assert np.isnan(folded[0]["__p1"].to_pylist()[0])


def test_a_plain_refresh_folds_in_numpy_and_checks_only_the_new_rows() -> None:
    sql = "SELECT k, count(*) AS n, sum(v) AS s, min(v) AS lo FROM t GROUP BY k"
    with duckflock.connect() as db:
        db.execute("CREATE TABLE t AS SELECT range % 7 AS k, range / 4 AS v FROM range(100)")
        db.analysis("a", sql)
        db.result("a", min_version=1, timeout=30)
        run = internals.analysis(db, "a").state
        plan = run.shape.plan
        assert plan is not None and plan.arrow is not None
        for step in range(3):
            db.insert("t", [{"k": i % 7, "v": 0.5 * step - i} for i in range(10)])
            result = db.refresh("a")
            assert result.mode == "incremental"
            assert sorted(result.rows()) == sorted(db.execute(sql).fetchall())
            assert plan.arrow._clean.vouched(run.state)  # merged in numpy, found clean


@pytest.mark.parametrize(
    "kind",
    [getattr(pa, f"{sign}int{bits}")() for sign in ("", "u") for bits in (8, 16, 32, 64)],
)
def test_the_key_index_finds_what_index_in_finds(kind: pa.DataType) -> None:
    info = np.iinfo(kind.to_pandas_dtype())
    rng = np.random.default_rng(kind.bit_width)
    for low in sorted({int(info.min), -5 if info.min else 0, int(info.max) - 40}):
        keys = pa.array([low + int(i) for i in rng.permutation(40)], kind)
        # the keys, their neighbours and the type's ends: wrapped offsets fall past the table
        near = [*range(low - 3, low + 44), int(info.min), int(info.max), 0]
        inside = [value for value in near if info.min <= value <= info.max]
        new = pa.array([inside[i] for i in rng.integers(0, len(inside), 500)], kind)
        index = dense.KeyIndex()
        found = index.positions(keys, new)
        assert found is not None
        expected = pc.index_in(new, value_set=keys).fill_null(len(keys))
        assert found.tolist() == expected.to_pylist(), (kind, low)
        table = index._built
        assert index.positions(keys.slice(0), new) is not None and index._built is table  # kept
    wide = pa.array([0, dense.MAX_SPAN], pa.int64())
    assert dense.KeyIndex().positions(wide, pa.array([0], pa.int64())) is None
    assert dense.KeyIndex().positions(pa.array([0, 1]), pa.array([0, None])) is None
    assert dense.KeyIndex().positions(pa.array(["a"]), pa.array(["a"])) is None
    index = dense.KeyIndex()
    assert index.positions(pa.array([3, 4]), pa.array([4])).tolist() == [1]
    assert index.positions(pa.array([4, 3]), pa.array([4])).tolist() == [0]  # other keys: built


@pytest.mark.parametrize(
    ("values", "unlike"),
    [
        (pa.array([1, -128, None], pa.int8()), False),  # bits of no float: never NaN
        (pa.array([-(2**31), 0], pa.int32()), False),  # -0.0's bits, as an integer
        (pa.array(["a", None]), False),
        (pa.array([1.0, None, 2.0]), False),
        (pa.array([1.0, None, -0.0]), True),
        (pa.array([float("nan")], pa.float32()), True),
        (pa.array([-0.0], pa.float32()), True),
        (pa.array([], pa.float64()), False),
    ],
)
def test_unlike_duckdb_is_only_ever_true_for_floats(values: pa.Array, unlike: bool) -> None:
    assert unlike_duckdb(values) is unlike
