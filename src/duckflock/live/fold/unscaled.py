"""Subtracting a DELETE's partials from an exact state as int64s, all partials at once.

An exact retraction with one key (:mod:`duckflock.live.fold.retention`) subtracts the
deleted rows' partials group by group. Its counts are int64s and its sums — HUGEINT or
DECIMAL(38, s) in the state (Arrow's ``decimal128``), int64 or ``decimal128`` as pyarrow
summed the deleted rows — are nearly always small enough that their unscaled integers fit
an int64. Then numpy reads every column's buffer as it is, subtracts with an overflow
check, and writes the ``decimal128`` words back: a handful of Arrow calls per refresh,
where a cast to ``decimal256`` and back per sum cost ten times more. Whatever does not fit
(a value past int64, a difference that overflows, another type, a scale that differs, a
sum whose nulls are not its count's zeros) returns None, and the caller subtracts in
``decimal256`` as before: the result is the same, only slower.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from duckflock.live.fold.dense import KeyIndex
from duckflock.live.fold.retraction import Retracts
from duckflock.live.fold.words import built, one, words


def subtract(
    state: pa.Table,
    grouped: pa.Table,
    kinds: Sequence[Retracts],
    counts: Sequence[int],
    rows: int,
) -> pa.Table | None:
    """``state`` (``__k0``, then a partial per ``kinds``) less ``grouped`` (the deleted
    rows' key, then their partials, each group once), or None (see above). ``counts``:
    per sum, its count(x) partial; ``rows``: the count(*) partial. A sum whose count
    falls to 0 is NULL; a group whose count(*) does is gone, as in a full run."""
    width = len(kinds)
    if state.num_columns != width + 1 or grouped.num_columns != width + 1:
        return None
    if any(kind not in (Retracts.COUNT, Retracts.SUM) for kind in kinds):
        return None
    key = one(state.column(0))
    where = _positions(key, one(grouped.column(0)))
    if where is None:
        return None  # a deleted group the state lacks
    of, sums = _counted(kinds, counts)
    made = _MADE  # the state this made last, and its matrix: not read again
    reused = made is not None and made[0]() is state and made[1] == tuple(of)
    mine = (made[2], made[3]) if made is not None and reused else _matrix(state, of, sums)
    ahead = _AHEAD.get(id(grouped))  # read by the DELETE's caller (read_ahead)
    if ahead is not None and ahead[0]() is grouped and ahead[1] == tuple(of):
        gone = ahead[2]
    else:
        gone = _matrix(grouped, of, sums)
    if mine is None or gone is None or mine[1] != gone[1]:
        return None  # another type, a value past int64, a scale that differs
    a, b = mine[0], gone[0]
    if isinstance(where, np.ndarray):  # in the state's order; untouched groups lose 0
        spread = np.zeros((width, state.num_rows), np.int64)
        spread[:, where] = b
        b = spread
    new = a - b
    if (((a ^ b) & (a ^ new)) < 0).any():
        return None  # int64 overflowed
    valid = new[of] != 0  # a sum of no values is NULL
    alive = new[rows] > 0
    if not alive.all():  # a group with no rows left is gone
        keep = np.flatnonzero(alive)
        new, valid, key = new[:, keep], valid[:, keep], key.take(pa.array(keep))
    arrays: list[pa.Array] = [key]
    for i, field in enumerate(list(state.schema)[1:]):
        array = built(new[i], valid[i] if kinds[i] is Retracts.SUM else None, field.type)
        if array is None:
            return None
        arrays.append(array)
    out = pa.Table.from_arrays(arrays, schema=state.schema)
    _remember(out, tuple(of), np.where(sums[:, None] & ~valid, 0, new), mine[1])
    return out


def _counted(kinds: Sequence[Retracts], counts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Each partial's count (a sum's count(x), a count itself: a zero stays a zero),
    and which partials are sums."""
    of = np.array([counts[i] if kind is Retracts.SUM else i for i, kind in enumerate(kinds)])
    return of, np.array([kind is Retracts.SUM for kind in kinds])


def read_ahead(grouped: pa.Table, kinds: Sequence[Retracts], counts: Sequence[int]) -> None:
    """Read the deleted rows' partials ``grouped`` as :func:`subtract` will, now: on the
    DELETE's caller's thread (``retention.prepare``, which grouped them there), so that
    the refresh does not. Kept while ``grouped`` lives (held weakly, as _MADE)."""
    width = len(kinds)
    if grouped.num_columns != width + 1 or any(k not in _SUBTRACTED for k in kinds):
        return
    of, sums = _counted(kinds, counts)
    read = _matrix(grouped, of, sums)
    if read is not None:
        read[0].flags.writeable = False
    _AHEAD[id(grouped)] = (weakref.ref(grouped), tuple(of), read)
    weakref.finalize(grouped, _AHEAD.pop, id(grouped), None)


_SUBTRACTED = (Retracts.COUNT, Retracts.SUM)
# id(grouped) -> (grouped, held weakly; each partial's count; its matrix, or None where
# it does not fit): an entry leaves with its table, so an id is never another table's
_AHEAD: dict[
    int,
    tuple[weakref.ref[pa.Table], tuple[int, ...], tuple[np.ndarray, tuple[int, ...]] | None],
] = {}


# the table subtract made last, with its partials as _matrix reads them (a NULL sum as
# 0), for what they depend on (each partial's count): the next DELETE's refresh of the
# same analysis starts from that table and need not read it. One slot, replaced whole
# (several analyses only take turns in it); the table is held weakly, so an entry is
# never another table's.
_MADE: tuple[weakref.ref[pa.Table], tuple[int, ...], np.ndarray, tuple[int, ...]] | None = None


def _remember(
    table: pa.Table, of: tuple[int, ...], matrix: np.ndarray, scales: tuple[int, ...]
) -> None:
    global _MADE
    matrix.flags.writeable = False
    _MADE = (weakref.ref(table), of, matrix, scales)


def _positions(mine: pa.Array, theirs: pa.Array) -> np.ndarray | slice | None:
    """Where each of ``theirs`` (the deleted rows' groups) is among ``mine`` (the
    state's keys) — or ``slice(None)`` when the two are the same keys in the same order;
    None when one of ``theirs`` is not among ``mine``. Each holds a key once. Integer
    keys without NULLs are looked up in numpy (in a table kept while the state keeps its
    keys: :class:`~duckflock.live.fold.dense.KeyIndex`), others with ``index_in`` (NULL
    keys match each other, as groups do)."""
    groups = len(mine)
    if (
        mine.type == theirs.type
        and pa.types.is_integer(mine.type)
        and not (mine.null_count or theirs.null_count)
    ):
        keys, wanted = mine.to_numpy(), theirs.to_numpy()
        if groups == len(wanted) and (keys == wanted).all():
            return slice(None)
        at = _KEYS.positions(mine, theirs) if groups else None
        if at is None and groups:  # keys spread wide: by a sort
            order = np.argsort(keys, kind="stable")
            ranked = keys[order]
            near = np.minimum(np.searchsorted(ranked, wanted), groups - 1)
            at = np.where(ranked[near] == wanted, order[near], groups)
        if at is None or (at == groups).any():
            return None if len(wanted) else np.zeros(0, np.intp)
        return at
    found = pc.index_in(theirs, value_set=mine, skip_nulls=False)
    return None if found.null_count else found.to_numpy()


# the state's keys' lookup table: one slot (analyses that retract take turns in it)
_KEYS = KeyIndex()


def _matrix(
    table: pa.Table, of: np.ndarray, sums: np.ndarray
) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """``table``'s partials (its columns after the key: int64 or ``decimal128``) as one
    matrix of unscaled int64s, a row per partial, 0 where a value is NULL; and their
    scales. None for another type, a value past int64, a NULL count, or a NULL sum
    (``sums``) that is not where its count (``of``) is 0."""
    n = table.num_rows
    low = np.empty((len(of), n), np.int64)
    fits = np.empty((len(of), n), bool)
    nulls, scales = [], []
    for i, column in enumerate(table.columns[1:]):
        array = one(column)
        read = words(array)
        if read is None:
            return None
        low[i], fits[i] = read[0], read[1]
        nulls.append(array.null_count)
        scales.append(read[2])
    present = low[of] != 0  # what a NULL slot holds is unspecified: the counts decide
    if (np.asarray(nulls) != np.where(sums, n - np.count_nonzero(present, axis=1), 0)).any():
        return None  # a NULL where the count is not 0 (or the other way)
    if not (fits | ~present).all():
        return None
    return np.where(present, low, 0), tuple(scales)
