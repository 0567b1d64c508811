"""The plain fold merges a refresh's partials into the state group by group
(duckflock.live.fold.positions): the untouched groups are not aggregated again and, when
the touched ones are few, not even copied — their rows stay in the old state's buffers.
Results stay DuckDB's, exactly (compared with a full run as exact text)."""

from __future__ import annotations

import pyarrow as pa
import pytest

import duckflock
from duckflock.live import internals
from duckflock.live.fold import positions
from duckflock.live.fold.states import PartialKind

SQL = (
    "SELECT k, count(*) AS n, count(v) AS nv, sum(v) AS s, min(v) AS lo, max(v) AS hi, "
    "avg(v) AS mean FROM t GROUP BY k"
)


def exact(table: pa.Table) -> list[str]:
    """Rows as exact text, in key order (repr keeps a double's last bit)."""
    return sorted(repr(tuple(row.values())) for row in table.to_pylist())


def buffers(state: pa.Table) -> set[int]:
    """The addresses of the value buffers of ``state``'s partials."""
    return {
        chunk.buffers()[1].address
        for column in state.columns[1:]
        for chunk in column.chunks
        if len(chunk)
    }


def in_buffers(state: pa.Table, addresses: set[int]) -> int:
    """How many of ``state``'s rows have every partial in one of ``addresses``."""
    counts = [
        sum(len(chunk) for chunk in column.chunks if chunk.buffers()[1].address in addresses)
        for column in state.columns[1:]
    ]
    return min(counts)


@pytest.fixture
def grouped() -> duckflock.Database:
    db = duckflock.connect()
    db.execute("CREATE TABLE t (k INTEGER, v DOUBLE)")
    db.execute("INSERT INTO t SELECT range % 2000, (range % 97) / 8 FROM range(20000)")
    db.analysis("g", SQL, on_change=False)
    assert db.result("g", min_version=1, timeout=60) is not None
    return db


def test_a_refresh_keeps_the_untouched_groups_rows_where_they_were(
    grouped: duckflock.Database,
) -> None:
    run = internals.analysis(grouped, "g").state
    before = run.state
    assert before is not None and before.num_rows == 2000
    grouped.insert("t", [(5, 1.5), (7, None), (5, 0.25), (1999, -3.0)])
    result = grouped.refresh("g", timeout=60)
    assert result.mode == "incremental", result.reason
    assert exact(result.table) == exact(grouped.execute(SQL).to_arrow_table())
    after = run.state
    assert after is not None and after.num_rows == 2000
    # 1,997 groups untouched: still in the old state's buffers, neither aggregated
    # again (an aggregation writes new buffers) nor copied
    assert in_buffers(after, buffers(before)) == 1997


def test_new_groups_null_keys_and_null_values_merge_as_duckdb_does(
    grouped: duckflock.Database,
) -> None:
    batches = [
        [(None, 1.0), (3, None), (2500, None)],  # a null key, a null value, a new group
        [(None, None), (2500, 4.0), (3, 2.0), (2501, 1e300)],
        [(2501, 1e300), (2501, -1e300), (None, 2.0)],
    ]
    for batch in batches:
        grouped.insert("t", batch)
        result = grouped.refresh("g", timeout=60)
        assert result.mode == "incremental", result.reason
        assert exact(result.table) == exact(grouped.execute(SQL).to_arrow_table())


def test_an_aggregate_asked_twice_is_merged_once(grouped: duckflock.Database) -> None:
    """avg(v) keeps a sum and a count of v beside sum(v) and count(v): the state's two
    columns hold the same values, so the touched rows are merged once and kept twice."""
    run = internals.analysis(grouped, "g").state
    assert run.shape.plan is not None and run.shape.plan.arrow is not None
    partials = run.shape.plan.arrow.partials
    twins = [(partials.index(p), i) for i, p in enumerate(partials) if partials.index(p) < i]
    assert len(twins) == 2  # avg's sum and count
    grouped.insert("t", [(5, 1.5), (6, None), (6, 2.0)])
    result = grouped.refresh("g", timeout=60)
    assert result.mode == "incremental", result.reason
    assert exact(result.table) == exact(grouped.execute(SQL).to_arrow_table())
    state = run.state
    assert state is not None
    for first, twin in twins:  # the last chunk: the touched groups, merged
        merged = state.column(1 + first).chunks[-1]
        assert len(merged) == 2
        assert merged.buffers()[1].address == state.column(1 + twin).chunks[-1].buffers()[1].address


def test_many_touched_groups_merge_by_one_filter(grouped: duckflock.Database) -> None:
    touched = positions.MAX_SLICES + 40
    grouped.insert("t", [(k * 7, float(k)) for k in range(touched)])
    result = grouped.refresh("g", timeout=60)
    assert result.mode == "incremental", result.reason
    assert exact(result.table) == exact(grouped.execute(SQL).to_arrow_table())


def test_the_state_is_made_one_chunk_again_once_slices_pile_up(
    grouped: duckflock.Database,
) -> None:
    run = internals.analysis(grouped, "g").state
    for k in range(positions.MAX_CHUNKS):  # one touched group per refresh: 2 slices more
        grouped.insert("t", (k * 11, 1.0))
        grouped.refresh("g", timeout=60)
        assert run.state is not None
        assert run.state.column(0).num_chunks <= positions.MAX_CHUNKS
    result = grouped.refresh("g", timeout=60)
    assert exact(result.table) == exact(grouped.execute(SQL).to_arrow_table())


def test_a_partial_kind_without_an_elementwise_merge_is_declined() -> None:
    state = pa.table({"__k0": [1, 2], "__p0": [1, 2]})
    partial = pa.table({"__k0": [2], "__p0": [5]})
    assert positions.merge_touched(state, partial, [PartialKind.SUM]) is not None
    assert positions.merge_touched(state, partial, [PartialKind.SUM, PartialKind.SUM]) is None
    booleans = pa.table({"__k0": [1, 2], "__p0": [True, False]})
    merged = positions.merge_touched(booleans, booleans.slice(1), [PartialKind.MIN])
    if merged is not None:  # pyarrow merges booleans element-wise, or declines
        assert merged.num_rows == 2


def test_exact_sums_merge_by_position() -> None:
    """A BIGINT's sum (DuckDB's HUGEINT: a decimal in the state) merges by position too,
    in 256 bits and back with a check: the untouched groups stay where they were, and
    the sums and averages are DuckDB's. (Past 38 digits the check raises:
    tests/test_exact.py, test_an_exact_sum_past_38_digits_raises_in_pyarrow.)"""
    db = duckflock.connect()
    sql = "SELECT k, count(*) AS n, sum(v) AS s, avg(v) AS mean FROM t GROUP BY k"
    db.execute("CREATE TABLE t (k INTEGER, v BIGINT)")
    db.execute("INSERT INTO t SELECT range % 500, range * 1000000007 FROM range(5000)")
    db.analysis("s", sql, on_change=False)
    assert db.result("s", min_version=1, timeout=60) is not None
    run = internals.analysis(db, "s").state
    before = run.state
    assert before is not None and pa.types.is_decimal(before.column(2).type)
    big = 2**62
    db.insert("t", [(1, 7), (2, -9), (2, None), (600, 1), (3, big), (3, big), (3, big)])
    result = db.refresh("s", timeout=60)
    assert result.mode == "incremental", result.reason
    assert exact(result.table) == exact(db.execute(sql).to_arrow_table())
    assert run.state is not None and in_buffers(run.state, buffers(before)) == 497
    db.close()
