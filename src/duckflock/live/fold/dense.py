"""Folding new rows into a small state in numpy, by the state's positions.

Each pyarrow kernel a refresh calls costs tens of microseconds cold (its dispatch,
options, an Acero plan for ``group_by``), more than its work over 10,000 rows; a numpy
call costs a few. Where the plain shape's state has one key column and at most
:data:`MAX_GROUPS` groups, and the new rows only touch groups it has, :func:`fold`
merges them without grouping them first (not past as many groups as new rows, nor for
a time bucket's key: its new rows mostly open new buckets):

1. each new row's key is looked up among the state's (a row whose group is new makes
   it decline): integer keys without NULL in a table kept between refreshes
   (:class:`KeyIndex`), others by ``index_in`` (the equality ``merge_touched`` uses);
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
    index: KeyIndex | None = None,
) -> tuple[pa.Table, bool] | None:
    """``state`` (the key ``__k0``, unique, then one partial per ``partials``) with the new
    rows ``delta`` merged in: their ``key`` values and, per partial, its kind and the
    column it reads (None: count(*)); ``twins`` as :func:`merge_touched` takes them;
    ``index``: the state's keys' lookup table, kept by the caller. And whether the merged
    floating partials are free of NaN (the caller has checked the rest: no other NaN or
    -0.0 can arise). None where this does not apply (the caller groups and merges then)."""
    groups = state.num_rows
    if not 0 < groups <= min(MAX_GROUPS, len(key)) or key.type != state.schema.field(0).type:
        return None
    keys = single(state.column(0))  # one array: a chunked value set is joined per call
    at = None if index is None else index.positions(keys, single(key))
    if at is None:
        found = pc.index_in(single(key), value_set=keys)  # null matches null, as GROUP BY
        if found.null_count:  # a group the state has not seen
            return None
        at = found.to_numpy()
    counts = np.bincount(at, minlength=groups + 1)  # position ``groups``: not a state key
    if counts[groups]:
        return None
    rows = _Rows(delta, at, counts[:groups])
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


MAX_SPAN = 1 << 18  # integer keys spread wider than this are looked up by index_in


class KeyIndex:
    """The state's integer keys as a table from ``key - low`` to the key's position
    (the state's group count where no key has that value), built once per key column
    and kept while the state keeps that column (a refresh whose rows touch only known
    groups keeps it; the column is held, so its buffer's address is not reused)."""

    def __init__(self) -> None:
        # (the keys, their lowest value, the table, with the state's group count last)
        self._built: tuple[pa.Array, int, np.ndarray | None] | None = None

    def positions(self, keys: pa.Array, new: pa.Array) -> np.ndarray | None:
        """Per value of ``new``, its position among the unique ``keys`` (of the same
        type), or ``len(keys)`` where no key has it; None where ``keys`` or ``new`` are
        not integers free of NULL, or ``keys`` spread past :data:`MAX_SPAN`."""
        if new.null_count or not pa.types.is_integer(new.type):
            return None
        low, table = self._table(keys)
        if table is None:
            return None
        values = new.to_numpy()
        width = values.dtype.itemsize
        offsets = (values - values.dtype.type(low) if low else values).view(f"u{width}")
        if width == 8:  # (take casts 64-bit unsigned indices to signed: bound them first)
            offsets = np.minimum(offsets, len(table) - 1)
        found: np.ndarray = table.take(offsets, mode="clip")  # wrapped below low: past it
        return found

    def _table(self, keys: pa.Array) -> tuple[int, np.ndarray | None]:
        built = self._built
        if built is not None and _same(built[0], keys):
            return built[1], built[2]
        low, table = 0, None
        if not keys.null_count and pa.types.is_integer(keys.type):
            values = keys.to_numpy()
            if values.dtype.itemsize < 8:  # key - low in the key's type wraps past its half
                values = values.astype(np.int64)
            low, high = int(values.min()), int(values.max())
            if high - low < MAX_SPAN:
                table = np.full(high - low + 2, len(values), np.intp)
                offsets = (values - values.dtype.type(low)).astype(np.intp)  # < MAX_SPAN
                table[offsets] = np.arange(len(values))
        self._built = (keys, low, table)
        return low, table


def _same(held: pa.Array, keys: pa.Array) -> bool:
    """Whether ``keys`` are the values of ``held`` (kept alive: the same buffer, offset,
    length and type hold the same values)."""
    if held.type != keys.type or held.offset != keys.offset or len(held) != len(keys):
        return False
    return bool(held.buffers()[1].address == keys.buffers()[1].address)


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
