"""Merging a sliding window's new partials into its bucketed state (windows.py), in
pyarrow.

The state has one row per (key…, bucket): a refresh's new rows touch few of them (the
latest bucket or two, times the keys). Rather than grouping the whole state again with
the partials, each (key…, bucket) becomes one integer — the position of each of its
values among the distinct values of that column in the state and the partials, mixed
into one code — and :func:`~duckflock.live.fold.positions.merge_touched` merges the
partials by that code, as a plain shape's state merges by its one key column: the
untouched rows are not aggregated again. The code names the same group as the columns
do: ``unique`` and ``index_in`` hash each column's values as ``group_by`` does (NULL
matches NULL), over the types where pyarrow's grouping is admitted at all (the window's
pyarrow plan, after ``has_nan``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from duckflock.live.fold import coded
from duckflock.live.fold.arrow import ArrowPlan
from duckflock.live.fold.positions import merge_touched

_CHUNKS = 4  # chunks past which a merged state is made one again (by_bucket)
_CODES = 1 << 62  # distinct (key…, bucket) combinations a code can hold


def merged(arrow: ArrowPlan, state: pa.Table, delta: pa.Table, out: pa.Table) -> pa.Table | None:
    """The state with ``out``'s partials of the new rows ``delta`` merged in, in pyarrow;
    None where pyarrow could differ from DuckDB (NaN, -0.0, types it refuses)."""
    schema = arrow.wide(state.schema) or state.schema
    try:
        parts = pa.Table.from_arrays(
            [
                pc.cast(out[name], field.type)
                for name, field in zip(state.column_names, schema, strict=True)
            ],
            schema=schema,
        )
        if arrow.has_nan(state, delta) or arrow.has_nan(parts, delta.slice(0, 0)):
            return None  # the new rows' keys and arguments, the state's and the partials
        if schema == state.schema:
            found = by_bucket(arrow, state, parts)
            if found is None:
                found = by_position(arrow, state, parts)
            if found is not None:
                return found
        return arrow.merge(state, parts, unique=False)[0]
    except (pa.ArrowException, TypeError, ValueError):
        return None


def by_bucket(arrow: ArrowPlan, state: pa.Table, parts: pa.Table) -> pa.Table | None:
    """``parts`` merged into ``state`` in numpy (:mod:`~duckflock.live.fold.coded`), the
    result ordered by bucket (the last key) first: where ``state`` is so ordered, only its
    rows from the new rows' first bucket on are merged, the rest kept as they are (a
    zero-copy slice). None where the keys are not integers (then :func:`by_position`)."""
    last = len(arrow.keys) - 1
    if not parts.num_rows or last < 0:
        return None
    buckets = coded.integers(state.column(last))
    new = coded.integers(parts.column(last))
    if buckets is None or new is None:
        return None
    start = 0
    if len(buckets) and not np.any(buckets[1:] < buckets[:-1]):  # ordered by bucket
        start = int(np.searchsorted(buckets, new.min(), "left"))
    merged = coded.merged(arrow, [state.slice(start), parts], first=last)
    if merged is None or not start:
        return merged
    both = pa.concat_tables([state.slice(0, start), merged])
    # few chunks: each consumer (the NaN check, the flags, the combine) pays per chunk
    return both.combine_chunks() if both.column(0).num_chunks > _CHUNKS else both


def by_position(arrow: ArrowPlan, state: pa.Table, parts: pa.Table) -> pa.Table | None:
    """``parts`` (the state's schema, one row per (key…, bucket)) merged into ``state``
    by each group's code (module docstring); None where the columns do not allow it
    (a floating or nested key, a partial without an element-wise merge, too many
    combinations)."""
    width = len(arrow.keys)
    kinds = [kind for kind, _ in arrow.partials]
    if state.num_columns != width + len(kinds) or parts.schema != state.schema:
        return None
    if not parts.num_rows or not state.num_rows:
        return None  # (grouped below: nothing to look up)
    values: list[pa.Array] = []
    old: pa.ChunkedArray | None = None
    new: pa.ChunkedArray | None = None
    combinations = 1
    for i in range(width):
        kind = state.schema.field(i).type
        if pa.types.is_floating(kind) or pa.types.is_nested(kind):
            return None  # -0.0 and 0.0, NaN: grouped as DuckDB groups them elsewhere
        both = pa.chunked_array([*state.column(i).chunks, *parts.column(i).chunks], type=kind)
        distinct = pc.unique(both)
        combinations *= len(distinct)
        if combinations >= _CODES:
            return None
        values.append(distinct)
        at_old = pc.cast(pc.index_in(state.column(i), value_set=distinct), pa.int64())
        at_new = pc.cast(pc.index_in(parts.column(i), value_set=distinct), pa.int64())
        size = len(distinct)
        old = at_old if old is None else pc.add(pc.multiply(old, size), at_old)
        new = at_new if new is None else pc.add(pc.multiply(new, size), at_new)
    assert old is not None and new is not None
    if old.null_count or new.null_count:
        return None
    names = ["__code", *state.column_names[width:]]
    merged = merge_touched(
        pa.Table.from_arrays([old, *state.columns[width:]], names=names),
        pa.Table.from_arrays([new, *parts.columns[width:]], names=names),
        kinds,
        arrow.twins,
    )
    if merged is None:
        return None
    keys: list[pa.Array | pa.ChunkedArray] = []
    rest = merged.column(0)
    for distinct in reversed(values):
        size = len(distinct)
        above = pc.divide(rest, size)  # integers: a truncating division
        keys.append(pc.take(distinct, pc.subtract(rest, pc.multiply(above, size))))
        rest = above
    return pa.Table.from_arrays([*reversed(keys), *merged.columns[1:]], schema=state.schema)
