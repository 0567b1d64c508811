"""Merging the new rows' partials into a pyarrow state by position, group by group.

A refresh's new rows touch few of the state's groups, and usually only groups the state
has already. Rather than grouping the whole state again with the partials (a hash
aggregation over every group), :func:`merge_touched` looks each state row's key up
among the touched groups' keys (only those are hashed; each state row is one probe),
merges the two rows' partials column by column (a count or sum adds, a min or max keeps
the smaller or larger), appends the groups the state had not seen, and keeps every
untouched group's row as it is: as zero-copy slices of the old state when the touched
rows are few (:data:`MAX_SLICES`), else copied by one filter — never aggregated again.
Used by :meth:`duckflock.live.fold.arrow.ArrowPlan.merge` for one key column (exact
sums add in ``decimal256`` and go back with an overflow check); more keys group the two
tables.

The state's row order is not the query's (an ORDER BY is applied to the result), so
moving the touched groups to the end changes nothing a reader sees.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from duckflock.live.fold import sets
from duckflock.live.fold.states import MAX_CHUNKS, PartialKind

MAX_SLICES = 32  # touched groups past which the untouched rows are copied by a filter


def merge_touched(
    state: pa.Table,
    partial: pa.Table,
    kinds: Sequence[PartialKind],
    twins: Sequence[int] | None = None,
) -> pa.Table | None:
    """The state with ``partial`` merged in; None where this cannot merge them (the
    caller groups the two tables then). ``state`` and ``partial`` have the same schema:
    the key ``__k0`` (unique in each), then one partial per ``kinds``. ``twins``: per
    partial, the first partial equal to it (the same aggregate of the same column, as
    an avg's sum beside a sum): merged once, and the merged column kept twice.

    Only the touched groups' keys are hashed: each state row looks its key up among
    them (a probe per state row, no aggregation)."""
    if state.schema != partial.schema or state.num_columns != len(kinds) + 1:
        return None
    at = pc.index_in(state.column(0), value_set=partial.column(0))  # null matches null
    matched = len(at) - at.null_count
    if matched == 0:  # only new groups: their partials are their state
        return _compact(pa.concat_tables([state, partial]))
    touched = None if matched == state.num_rows else pc.is_valid(at)
    old = state if touched is None else state.filter(touched)
    new = partial.take(at if touched is None else at.filter(touched))
    columns = [old.column(0)]
    try:
        for i, kind in enumerate(kinds):
            twin = i if twins is None else twins[i]
            if twin < i:
                columns.append(columns[twin + 1])
            else:
                columns.append(combine(kind, old.column(i + 1), new.column(i + 1)))
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError):  # no element-wise merge
        return None
    parts = [] if touched is None else [_untouched(state, touched, matched)]
    parts.append(pa.Table.from_arrays(columns, schema=state.schema))
    if matched < partial.num_rows:  # and groups the state had not seen
        seen = pc.is_in(partial.column(0), value_set=old.column(0))
        parts.append(partial.filter(pc.invert(seen)))
    return _compact(parts[0] if len(parts) == 1 else pa.concat_tables(parts))


def combine(
    kind: PartialKind, old: pa.ChunkedArray, new: pa.ChunkedArray
) -> pa.ChunkedArray | pa.Array:
    """One partial of the touched groups: the state's ``old`` merged with ``new``."""
    if kind in (PartialKind.COUNT_ALL, PartialKind.COUNT):
        return pc.add(old, new)  # counts are never null
    if kind is PartialKind.SUM and pa.types.is_decimal(old.type):
        # an exact sum: added in 256 bits, back to the state's type with a check (past
        # 38 digits it raises, and DuckDB folds instead: it raises its own error)
        wide = pa.decimal256(old.type.precision, old.type.scale)
        total = pc.cast(pc.add(pc.cast(old, wide), pc.cast(new, wide)), old.type)
        return _either(total, old, new)
    if kind is PartialKind.SUM:
        return _either(pc.add(old, new), old, new)
    if kind is PartialKind.MIN:
        return pc.min_element_wise(old, new)  # skipping nulls, as min does
    if kind is PartialKind.MAX:
        return pc.max_element_wise(old, new)
    if kind is PartialKind.SET:
        return sets.union(old, new)
    raise pa.ArrowNotImplementedError(f"no element-wise merge of {kind}")


def _either(
    total: pa.ChunkedArray | pa.Array, old: pa.ChunkedArray, new: pa.ChunkedArray
) -> pa.ChunkedArray | pa.Array:
    """Two sums added (``total``), where a sum of no values is null: the other side
    then (no nulls on either side, the usual case: ``total`` as it is)."""
    if not old.null_count and not new.null_count:
        return total
    return pc.coalesce(total, old, new)


def _untouched(state: pa.Table, touched: pa.Array | pa.ChunkedArray, count: int) -> pa.Table:
    """The state's rows other than the ``count`` ones ``touched`` marks: zero-copy
    slices between them when they are few, else one filter."""
    if count > MAX_SLICES:
        return state.filter(pc.invert(touched))
    slices, start = [], 0
    for position in pc.indices_nonzero(touched).to_pylist():
        if position > start:
            slices.append(state.slice(start, position - start))
        start = position + 1
    if start < state.num_rows:
        slices.append(state.slice(start))
    return pa.concat_tables(slices) if slices else state.slice(0, 0)


def _compact(state: pa.Table) -> pa.Table:
    """``state`` as one chunk per column once it has many (slices add chunks)."""
    if state.num_rows and state.column(0).num_chunks > MAX_CHUNKS:
        return state.combine_chunks()
    return state
