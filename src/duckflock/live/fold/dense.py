"""Folding new rows into a small state in numpy, by the state's positions.

Each pyarrow kernel a refresh calls costs tens of microseconds cold (its dispatch,
options, an Acero plan for ``group_by``), more than its work over 10,000 rows; a numpy
call costs a few. Where the plain shape's state has one key column and at most
:data:`MAX_GROUPS` groups, and the new rows only touch groups it has, :func:`fold`
merges them without grouping them first (not past as many groups as new rows, nor for
a time bucket's key: its new rows mostly open new buckets):

1. each new row's key is looked up among the state's (``index_in``: the same
   equality ``merge_touched`` uses; a row whose group is new makes it decline);
2. per state row, ``numpy.bincount`` counts the new rows and adds up their floating
   values, ``numpy.minimum.at``/``maximum.at`` fold their min/max into the state's,
   and the merged partials replace the state's columns (untouched groups keep theirs).

It gives what grouping then merging gives (:meth:`ArrowPlan.fold`), bit for bit:
``bincount`` adds a group's values one by one in row order from 0.0, as pyarrow's
grouped sum does (tests/test_dense.py holds the two to the same bits), and the state's
sum is then added to that partial, as :func:`~duckflock.live.fold.positions.combine`
adds them. min/max do not depend on the order: the caller has found no NaN or -0.0
(:meth:`ArrowPlan.has_nan`). It declines (None) where a value is NULL, a sum is exact
(integers, decimals: their state's DECIMAL merges in ``positions``), or a type is not
a number numpy orders as DuckDB does (integers, floats).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from duckflock.live.fold import sets
from duckflock.live.fold.physical import single
from duckflock.live.fold.states import PartialKind

# groups past which the state's columns are not copied whole (merge_touched splices);
# nor past the new rows' count: each fold costs O(groups)
MAX_GROUPS = 1 << 16


def fold(
    state: pa.Table,
    key: pa.ChunkedArray,
    delta: pa.Table,
    partials: Sequence[tuple[PartialKind, str | None]],
    twins: Sequence[int],
) -> tuple[pa.Table, bool] | None:
    """``state`` (the key ``__k0``, unique, then one partial per ``partials``) with the new
    rows ``delta`` merged in: their ``key`` values and, per partial, its kind and the
    column it reads (None: count(*)); ``twins`` as :func:`merge_touched` takes them. And
    whether the merged floating partials are free of NaN (the caller has checked the
    rest: no other NaN or -0.0 can arise). None where this does not apply (the caller
    groups and merges then)."""
    groups = state.num_rows
    if not 0 < groups <= min(MAX_GROUPS, len(key)) or key.type != state.schema.field(0).type:
        return None
    keys = single(state.column(0))  # one array: a chunked value set is joined per call
    found = pc.index_in(single(key), value_set=keys)  # null matches null, as GROUP BY
    if found.null_count:  # a group the state has not seen
        return None
    at = found.to_numpy()
    counts = np.bincount(at, minlength=groups)
    rows = _Rows(delta, at, counts)
    columns: list[pa.ChunkedArray | pa.Array] = [keys]
    clean = True
    for i, (kind, name) in enumerate(partials):
        old = state.column(i + 1)
        if twins[i] < i:
            columns.append(columns[twins[i] + 1])
            continue
        if kind is PartialKind.SET:  # count(DISTINCT …)'s lists (NULLs left out)
            assert name is not None
            lists = sets.folded(old, at, delta[name])
            if lists is None:
                return None
            columns.append(lists)
            continue
        if old.null_count or (name is not None and delta[name].null_count):
            return None
        with np.errstate(all="ignore"):  # inf + -inf is NaN, as in DuckDB (has_nan finds it)
            merged = _merged(kind, old, name, rows)
        if merged is None:
            return None
        if kind is PartialKind.SUM:  # min/max keep values checked; counts are integers
            clean = clean and not np.isnan(merged).any()
        columns.append(pa.array(merged, type=old.type))
    return pa.Table.from_arrays(columns, schema=state.schema), clean


class _Rows:
    """The new rows' positions in the state, their count per state row, and their
    columns as numpy arrays (each converted once)."""

    def __init__(self, delta: pa.Table, at: np.ndarray, counts: np.ndarray) -> None:
        self.delta, self.at, self.counts = delta, at, counts
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = _numpy(self.delta[name])
        return self._arrays[name]


def _merged(
    kind: PartialKind, old: pa.ChunkedArray, name: str | None, rows: _Rows
) -> np.ndarray | None:
    """One partial's merged values per state row, or None where numpy does not merge it."""
    argument = None if name is None else rows.delta.schema.field(name).type
    if kind in (PartialKind.COUNT_ALL, PartialKind.COUNT):  # no NULL among the values
        return _numpy(old) + rows.counts if old.type == pa.int64() else None
    if name is None or argument is None or not _numeric(argument):
        return None
    if kind is PartialKind.SUM:
        if not pa.types.is_floating(argument) or old.type != pa.float64():
            return None  # an exact sum: positions.combine adds it in decimal256
        weights = rows.array(name).astype(np.float64)  # FLOAT sums as DOUBLE (sum_terms)
        kept = _numpy(old)
        total = kept + np.bincount(rows.at, weights, minlength=len(kept))
        merged: np.ndarray = np.where(rows.counts > 0, total, kept)
        return merged
    if kind in (PartialKind.MIN, PartialKind.MAX) and argument == old.type:
        merged = _numpy(old).copy()
        extreme = np.minimum if kind is PartialKind.MIN else np.maximum
        extreme.at(merged, rows.at, rows.array(name))
        return merged
    return None


def _numpy(column: pa.ChunkedArray) -> np.ndarray:
    """A column of numbers without NULLs as a numpy array."""
    array: np.ndarray = single(column).to_numpy(zero_copy_only=False)
    return array


def _numeric(kind: pa.DataType) -> bool:
    """Integers and floats: numpy orders and adds them as pyarrow does."""
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind))
