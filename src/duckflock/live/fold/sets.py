"""count(DISTINCT …)'s SET partial in pyarrow: each group's distinct values as a list,
the layout DuckDB's ``list(DISTINCT x) FILTER (WHERE x IS NOT NULL)`` gives, so the
pyarrow and DuckDB folds hand the state over to each other. Admitted only for argument
types whose Arrow equality is DuckDB's (:func:`~duckflock.live.fold.merges.equal_in_arrow`,
not collated: :mod:`duckflock.live.plan.arrowpath`); NULLs are never in a list.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

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
