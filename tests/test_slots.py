"""A window's state as dense (slot x group) arrays (live/fold/slots.py): bit for bit what
the grouping path (live/fold/coded.py, held to pyarrow's grouping by test_coded) gives
for the state's merge and the window's combine, within a bounded number of cells, and
declined where it does not apply."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import duckflock
from duckflock.live import bucketmerge, internals, sliding
from duckflock.live.fold import coded, physical, slots
from duckflock.live.fold.arrow import ArrowPlan, Output, OutputKind
from duckflock.live.fold.states import PartialKind
from duckflock.live.plan.probes import same
from test_coded import STAMP, WIDTH, _rows
from test_windows import NEW_YORK, SteppedClock, at

K = PartialKind
PARTIALS = ((K.COUNT_ALL, None), (K.SUM, "v"), (K.SUM, "v"), (K.COUNT, "v"), (K.SUM, "f"))
TYPES = [pa.int64(), pa.float64(), pa.float64(), pa.int64(), pa.float64()]


def _plan(keys: tuple[str, ...]) -> ArrowPlan:
    outputs = tuple(Output(OutputKind.PARTIAL, i) for i in range(len(PARTIALS)))
    names = tuple(f"o{i}" for i in range(len(PARTIALS)))
    schema = pa.schema([(name, TYPES[i]) for i, name in enumerate(names)])
    return ArrowPlan(keys, PARTIALS, outputs, names, schema, (), 0, None)


def _schema(keys: list[pa.DataType]) -> pa.Schema:
    return pa.schema(
        [(f"__k{i}", kind) for i, kind in enumerate(keys)]
        + [(f"__p{i}", kind) for i, kind in enumerate(TYPES)]
    )


BUCKETED, PLAIN = _plan(("k", "b")), _plan(("k",))
SCHEMA, NARROW = _schema([pa.int32(), STAMP]), _schema([pa.int32()])


def _stamps(rows: pa.Table, name: str = "b") -> np.ndarray:
    found = coded.instants(rows[name])
    assert found is not None
    return found


def _state(seed: int) -> tuple[np.random.Generator, pa.Table]:
    rng = np.random.default_rng(seed)
    rows = _rows(rng, 5_000, 30, 60)
    state = coded.merged(BUCKETED, [BUCKETED.partials_of(rows, SCHEMA)], first=1)
    assert state is not None
    return rng, state


def test_merges_and_combines_equal_grouping_bit_for_bit() -> None:
    rng, state = _state(1)
    arrays = slots.build(BUCKETED, state, WIDTH, 0)
    assert arrays is not None and same(state, slots.table(arrays), SCHEMA)
    for first in (58, 59, 75, 90):  # the last buckets, new ones, past the spare slots
        rows = _rows(rng, 2_000, 30, 4, first=first)
        found = slots.added(arrays, rows, _stamps(rows) // WIDTH)
        assert found is not None
        merged = bucketmerge.by_bucket(BUCKETED, state, BUCKETED.partials_of(rows, SCHEMA))
        assert merged is not None
        slots.store(arrays, found)
        assert same(merged, slots.table(arrays), SCHEMA)
        state = merged
    numbers = slots.used(arrays, None)
    inside = numbers[numbers > numbers[0] + 3]  # the cut bucket's rows come from the table
    cut = _rows(rng, 1_500, 30, 1, first=3)
    got = slots.combined(arrays, inside, cut, NARROW)
    kept = slots.table(arrays, inside, bucket=False)
    want = coded.combined(PLAIN, kept, cut)
    assert got is not None and want is not None and same(want, got, NARROW)
    # expired buckets leave the state
    gone = set(slots.starts(arrays, numbers[:5]).tolist())
    slots.clear(arrays, numbers[:5])
    kept = state.filter(pa.array([at not in gone for at in _stamps(state, "__k1").tolist()]))
    assert same(kept, slots.table(arrays), SCHEMA)
    assert len(slots.used(arrays, None)) == len(numbers) - 5


def test_it_declines_what_the_arrays_cannot_hold() -> None:
    rng, state = _state(2)
    arrays = slots.build(BUCKETED, state, WIDTH, 0)
    assert arrays is not None
    rows = _rows(rng, 500, 30, 2, first=59)
    assert slots.added(arrays, rows, _stamps(rows) // WIDTH) is not None
    wider = _rows(rng, 500, 31, 2, first=59)  # key 30: outside the coding
    assert slots.added(arrays, wider, _stamps(wider) // WIDTH) is None
    before = _rows(rng, 500, 30, 1, first=-1)  # a bucket before the first slot
    assert slots.added(arrays, before, _stamps(before) // WIDTH) is None
    missing = rows.set_column(1, "v", pa.array([None, *rows["v"].to_pylist()[1:]]))
    assert slots.added(arrays, missing, _stamps(rows) // WIDTH) is None  # a sum of no values
    for odd in (float("nan"), -0.0):  # where grouping and DuckDB part: has_nan's
        strange = rows.set_column(1, "v", pa.array([odd, *rows["v"].to_pylist()[1:]]))
        assert slots.added(arrays, strange, _stamps(rows) // WIDTH) is None
    far = _rows(rng, 10, 30, 1, first=slots.CELLS)  # too many slots
    assert slots.added(arrays, far, _stamps(far) // WIDTH) is None
    assert arrays.state is state  # nothing stored
    minimum = ArrowPlan(("k", "b"), ((K.MIN, "v"),), (), (), pa.schema([]), (), 0, None)
    assert slots.build(minimum, state.select([0, 1, 3]), WIDTH, 0) is None
    text = state.set_column(0, "__k0", pc.cast(state["__k0"], pa.string()))
    assert slots.build(BUCKETED, text, WIDTH, 0) is None
    assert slots.build(BUCKETED, state, WIDTH * 3 // 2, 0) is None  # not bucket starts
    many = pa.concat_tables([state, state.slice(0, 1)])  # buckets far apart
    at = pa.array([*_stamps(state, "__k1").tolist(), 2**61], pa.int64()).view(STAMP)
    assert slots.build(BUCKETED, many.set_column(1, "__k1", at), WIDTH, 0) is None


@pytest.mark.parametrize("column", ["ts", "tz"])
def test_a_window_refreshes_over_its_arrays_and_equals_a_full_run(
    column: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends into a window of integer keys refresh over the arrays (sliding.py): each
    result equals a full run at its instant, through new buckets, bucket crossings (the
    table path reads the new cut bucket, then the arrays are built again) and a new key
    (outside the coding: the table path), then NaN and a NULL key and a delete (the
    table path)."""
    sql = (
        "SELECT k, g, count(*) AS c, sum(v) AS s, avg(v) AS a, count(v) AS n FROM w "
        f"WHERE {column} > now() - INTERVAL 64 SECOND GROUP BY k, g"
    )
    fast: list[bool] = []
    refreshed = sliding.refreshed

    def counted(*args: Any) -> Any:
        found = refreshed(*args)
        fast.append(found is not None)
        return found

    monkeypatch.setattr(sliding, "refreshed", counted)
    clock = SteppedClock(datetime(2026, 12, 7, 12, 0, 0, 300_000, tzinfo=UTC))
    db = duckflock.connect()
    internals.use_clock(db, clock)
    db.execute("SET GLOBAL TimeZone = 'America/New_York'")
    db.execute("CREATE TABLE w (k INTEGER, g BIGINT, v DOUBLE, ts TIMESTAMP, tz TIMESTAMPTZ)")
    db.analysis("recent", sql)
    try:
        for round_ in range(24):
            keys = 5 if round_ < 9 else 6  # a new key
            # the first rows over the window and before it, then a few each round
            offsets = [-70 + i * 0.9 for i in range(90)] if not round_ else [-0.3] * 40
            rows = [
                {"k": (round_ + i) % keys, "g": 10 * (i % 3), "v": 0.25 * (i % 7), **at_}
                for i, at_ in enumerate(_stamps_at(clock.now(), offsets))
            ]
            if round_ == 16:  # NaN and a NULL key: the table path from here
                odd = _stamps_at(clock.now(), [-63.7])[0]
                rows += [
                    {"k": 1, "g": 0, "v": float("nan"), **odd},
                    {"k": None, "g": 0, "v": 1.0, **odd},
                ]
            db.insert("w", rows)
            if round_ == 20:  # a delete: the pinned path
                db.execute("DELETE FROM w WHERE k = 2 AND g = 10")
            result = db.refresh("recent")
            assert result.mode == "incremental", result.reason
            assert result.now is not None
            full = db.execute(at(sql, result.now)).fetchall()
            assert _exact(result.rows()) == _exact(full), round_
            clock.step(timedelta(milliseconds=400))  # 1 s buckets: a crossing per ~3
        assert sum(fast[:16]) >= 6, fast
    finally:
        db.close()


def _stamps_at(now: datetime, offsets: list[float]) -> list[dict[str, Any]]:
    """``ts`` (New York's local time) and ``tz`` at ``offsets`` seconds from ``now``."""
    out = []
    for offset in offsets:
        instant = now + timedelta(seconds=offset)
        out.append({"ts": instant.astimezone(NEW_YORK).replace(tzinfo=None), "tz": instant})
    return out


def _exact(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``rows`` sorted, each value as it is (floats by their bits) but NaN (one NaN)."""
    return sorted(
        (tuple("nan" if isinstance(x, float) and x != x else x for x in row) for row in rows),
        key=repr,
    )


def test_an_average_divided_in_numpy_is_pyarrows_divide() -> None:
    rng = np.random.default_rng(8)
    totals = rng.standard_normal(2_000) * 10.0 ** rng.integers(-300, 300, 2_000)
    totals[:4] = [np.inf, -np.inf, 0.0, 1.0]
    counts = rng.integers(0, 2**53, 2_000)
    counts[:6] = [1, 3, 7, 0, 0, 0]
    total, count = pa.array(totals), pa.array(counts, pa.int64())
    want = pc.divide(total, count)
    got = physical.divided(total, count)
    assert np.array_equal(
        got.to_numpy().view(np.int64), want.to_numpy().view(np.int64)
    )  # bit for bit, NaN and signs included
    holes = pa.array([1.0, None]), pa.array([2, 3], pa.int64())
    assert physical.divided(*holes).to_pylist() == [0.5, None]
    with pytest.raises(pa.ArrowInvalid):  # as Arrow's: a count past 2^53 is not rounded
        physical.divided(pa.array([1.0]), pa.array([2**53 + 1], pa.int64()))
