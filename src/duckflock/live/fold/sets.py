"""count(DISTINCT …)'s SET partial in pyarrow: each group's distinct values as a list,
the layout DuckDB's ``list(DISTINCT x) FILTER (WHERE x IS NOT NULL)`` gives, so the
pyarrow and DuckDB folds hand the state over to each other. Admitted only for argument
types whose Arrow equality is DuckDB's (:func:`~duckflock.live.fold.merges.equal_in_arrow`,
not collated: :mod:`duckflock.live.plan.arrowpath`); NULLs are never in a list.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from duckflock.live.fold.physical import numbers, single

# the new rows' partial: a group's distinct non-NULL values (an all-NULL group: [])
AGGREGATION = ("distinct", pc.CountOptions(mode="only_valid"))


def union(old: pa.ChunkedArray, new: pa.ChunkedArray) -> pa.Array:
    """Row by row, the distinct values of ``old``'s and ``new``'s lists (aligned rows of
    the touched groups), in ``old``'s list type; a row with no value: NULL (as DuckDB's
    merge of lists that hold none; its count is 0 either way)."""
    rows = len(old)
    parents, values = [], []
    for column in (old, new):
        start = 0  # the chunk's first row
        for chunk in column.chunks:
            parent, value = _exploded(chunk)
            parents.append(pc.add(parent, start))
            values.append(value.cast(old.type.value_type))
            start += len(chunk)
    exploded = pa.table({"__r": pa.concat_arrays(parents), "__v": pa.concat_arrays(values)})
    grouped = exploded.group_by("__r", use_threads=False).aggregate([("__v", *AGGREGATION)])
    at = pc.index_in(pa.array(range(rows), pa.int64()), value_set=grouped["__r"])
    return grouped["__v_distinct"].combine_chunks().take(at).cast(old.type)


def folded(old: pa.ChunkedArray, at: np.ndarray, values: pa.ChunkedArray) -> pa.Array | None:
    """Per state row, its list ``old`` with the new ``values`` (row ``i``'s in state row
    ``at[i]``) added, in numpy: each (row, value) pair once, by a bitmap of the pairs
    where the values' range is narrow, else by sorting them; a row with no value: NULL,
    as :func:`union` gives. Integer, date, time and timestamp values (compared as their
    physical numbers: equal exactly where Arrow's equality finds them equal) in the
    list's own value type; None for other types, or where the lists already hold many
    more values than the new rows (the touched lists then merge by :func:`union`)."""
    lists, new = single(old), single(values)
    kind = lists.type.value_type
    parent, value = _exploded(lists)
    if new.type != kind or len(value) > _KEPT * max(len(new), 1):
        return None
    kept, given = numbers(value), numbers(new)
    if kept is None or given is None:
        return None
    if new.null_count:
        valid = pc.is_valid(new).to_numpy(zero_copy_only=False)
        at, given = at[valid], given[valid]
    rows = np.concatenate([parent.to_numpy(), at])
    found = np.concatenate([kept, given])
    groups = len(lists)
    if not len(found):
        return pa.nulls(groups, lists.type)
    span = int(found.max()) - int(found.min()) + 1
    if groups * span <= max(_BITMAP, 8 * len(found)):  # each pair's bit
        # in int64, where a difference below ``span`` is exact (UBIGINT's wrap cancels)
        low = found.min(keepdims=True).astype(np.int64)
        seen = np.zeros(groups * span, bool)
        seen[rows * span + (found.astype(np.int64) - low)] = True
        pairs = np.flatnonzero(seen)
        rows, found = pairs // span, (pairs % span + low).astype(found.dtype)
    else:
        order = np.lexsort((found, rows))
        rows, found = rows[order], found[order]
        first = np.ones(len(rows), bool)
        first[1:] = (rows[1:] != rows[:-1]) | (found[1:] != found[:-1])
        rows, found = rows[first], found[first]
    counts = np.bincount(rows, minlength=groups)
    offsets = np.zeros(groups + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    items = pa.Array.from_buffers(kind, len(found), [None, pa.py_buffer(found)])
    merged = pa.ListArray.from_arrays(pa.array(offsets), items, mask=pa.array(counts == 0))
    return merged.cast(lists.type)


# a bitmap of (row, value) pairs is used up to this many bits (or 8 per pair)
_BITMAP = 1 << 16
# kept values past this many per new row: the lists merge by union (only the touched)
_KEPT = 16


def _exploded(lists: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(row, value) of every value in ``lists`` (a slice too): ``list_parent_indices``
    counts the values a NULL list may still span, ``list_flatten`` does not, so both
    come from the offsets' range and the NULL lists' values are dropped."""
    parent = pc.list_parent_indices(lists).cast(pa.int64())
    offsets = lists.offsets
    first = offsets[0].as_py() if len(offsets) else 0
    value = lists.values.slice(first, len(parent))
    if lists.null_count:
        keep = pc.is_valid(lists).take(parent)
        return parent.filter(keep), value.filter(keep)
    return parent, value


def length(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """count(DISTINCT …) from its SET partial: the list's length, 0 for NULL."""
    return pc.fill_null(pc.list_value_length(values), 0).cast(pa.int64())
