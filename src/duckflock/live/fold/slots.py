"""A sliding window's bucketed state as dense arrays, kept between refreshes.

The state of a window (:mod:`duckflock.live.windows`) has one row per (key…, bucket).
Where the query's keys are integer-like columns without NULL (:func:`coded.integers`)
and every partial is a count or a floating sum, the same state is held as one array per
partial, a row per bucket (its *slot*: the bucket's number of widths from the time
bucket's origin, less the first slot's) and a column per group (the keys' code,
:class:`coded.Coding`, fixed when the arrays are built). A refresh then adds the new
rows' partials with one ``bincount`` per partial over the slots they land in, and the
window's result sums the slots inside it (:meth:`Slots.inside`); no grouping.

Bit for bit what the grouping path gives (tests/test_slots.py): a cell's sum gains each
refresh's partial (``bincount`` of its rows from 0.0 in row order) as the grouped merge
adds it; the result adds a group's buckets in bucket order from 0.0 and then the cut
bucket's rows' partial, as :func:`coded.combined` does over the state ordered by bucket.
An empty cell holds 0 and 0.0: adding 0.0 leaves a sum that is not -0.0 as it is, and no
sum from 0.0 is -0.0 (a cell with -0.0 or NaN is refused when built or merged).

Memory is bounded: slots x groups ≤ :data:`CELLS`; beyond (many groups, buckets far
apart) no arrays are kept and the table path runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from duckflock.live.fold import coded
from duckflock.live.fold.arrow import ArrowPlan
from duckflock.live.fold.physical import single
from duckflock.live.fold.states import PartialKind

CELLS = 1 << 18  # slots x groups per array at most (2 MiB of int64 or double)
SPARE = 16  # slots kept past the last bucket, for the buckets to come
_COUNTS = (PartialKind.COUNT_ALL, PartialKind.COUNT)
_FAR = 1 << 62  # µs from the epoch: buckets past it stay in the table path


@dataclass(eq=False)
class Slots:
    """The arrays of one state (module docstring). Owner: the analysis thread."""

    arrow: ArrowPlan  # the bucketed plan (the query's keys, then the bucket)
    coding: coded.Coding  # the query's keys -> group code
    schema: pa.Schema  # the state's
    width: int  # µs per bucket
    origin: int  # every bucket's start is this many µs past a multiple of width
    first: int  # the bucket number of row 0
    rows: np.ndarray  # (slots, groups): rows per cell, > 0 where the state has a row
    values: list[np.ndarray | None]  # per partial, like rows (None: a twin's)
    state: pa.Table | None = None  # the state table they describe (None: none now)
    marks: Any = None  # the caller's view of the buckets' marks (live/sliding.py)

    @property
    def groups(self) -> int:
        return int(self.rows.shape[1])


def _kinds(arrow: ArrowPlan, schema: pa.Schema) -> bool:
    """Whether every partial is a count (int64) or a floating sum (double)."""
    width = len(arrow.keys)
    for i, (kind, _) in enumerate(arrow.partials):
        field = schema.field(width + i).type
        if kind in _COUNTS and field != pa.int64():
            return False
        if kind is PartialKind.SUM and field != pa.float64():
            return False
        if kind not in (*_COUNTS, PartialKind.SUM):
            return False
    return True


def _unlike(values: np.ndarray) -> bool:
    """NaN or -0.0 among float ``values`` (where grouping and DuckDB part): -0.0's bits
    are the smallest signed integer of its width (nans.unlike_duckdb)."""
    bits = np.dtype(f"i{values.dtype.itemsize}")
    return bool(np.isnan(values).any() or (values.view(bits) == np.iinfo(bits).min).any())


def build(arrow: ArrowPlan, state: pa.Table, width: int, origin: int) -> Slots | None:
    """The arrays of ``state`` (ordered or not), its buckets starting ``origin`` µs past
    multiples of ``width``; None where they do not apply."""
    keys = len(arrow.keys) - 1
    if (
        keys < 1
        or state.num_columns != keys + 1 + len(arrow.partials)
        or not state.num_rows
        or not _kinds(arrow, state.schema)
        or any(column.null_count for column in state.columns)
    ):
        return None
    columns = [coded.integers(state.column(i)) for i in range(keys)]
    buckets = coded.instants(state.column(keys))
    if buckets is None or any(column is None for column in columns):
        return None
    if int(buckets.min()) <= -_FAR or int(buckets.max()) >= _FAR:
        return None  # (infinity: the table path)
    found = coded.coding([[column for column in columns if column is not None]])
    numbers = _numbers(buckets, width, origin)
    if found is None or numbers is None:
        return None
    first, last = int(numbers.min()), int(numbers.max())
    count = last - first + 1 + SPARE
    if count * found.total > CELLS:
        return None
    code = found.encode([column for column in columns if column is not None])
    flat = (numbers - first) * found.total + code
    if len(np.unique(flat)) != len(flat):
        return None  # (a state has one row per cell)
    rows = np.zeros((count, found.total), np.int64)
    rows.ravel()[flat] = 1
    values: list[np.ndarray | None] = []
    for i, (kind, _) in enumerate(arrow.partials):
        if arrow.twins[i] < i:
            values.append(None)
            continue
        given = single(state.column(keys + 1 + i)).to_numpy(zero_copy_only=False)
        if kind is PartialKind.SUM and _unlike(given):
            return None
        array = np.zeros((count, found.total), given.dtype)
        array.ravel()[flat] = given
        values.append(array)
    slots = Slots(arrow, found, state.schema, width, origin, first, rows, values)
    slots.state = state
    return slots


def _numbers(buckets: np.ndarray, width: int, origin: int) -> np.ndarray | None:
    """Bucket instants (µs) as bucket numbers; None where one is not a bucket's start."""
    numbers, rest = np.divmod(buckets - origin, width)
    return None if rest.any() else numbers


@dataclass(frozen=True)
class Added:
    """New rows' partials merged into a block of slots, not yet stored (:func:`added`)."""

    first: int  # the bucket number of row 0 once stored (moved: another than now)
    start: int  # the block's first slot
    rows: np.ndarray  # the block's cells after the merge
    values: list[np.ndarray | None]
    moved: tuple[np.ndarray, list[np.ndarray | None]] | None  # the arrays, moved


def codes(slots: Slots, columns: list[pa.ChunkedArray]) -> np.ndarray | None:
    """The group code of each row's key values (None: one not in the coding)."""
    code = np.zeros(len(columns[0]) if columns else 0, np.int64)
    coding = slots.coding
    for column, low, step, size in zip(
        columns, coding.lows, coding.steps, coding.sizes, strict=True
    ):
        values = coded.integers(column)
        if values is None:
            return None
        digit = values - low
        if step > 1:
            if (digit % step).any():
                return None
            digit //= step
        if len(digit) and (int(digit.min()) < 0 or int(digit.max()) >= size):
            return None
        code = code * size + digit
    return code


def partials(
    arrow: ArrowPlan, rows: pa.Table, bins: np.ndarray, count: int
) -> tuple[np.ndarray, list[np.ndarray | None]] | None:
    """Per cell (``bins``, each < count) of ``rows``: how many rows, and each partial
    (None: a twin's) as :func:`coded.grouped` computes it; None where it does not apply
    (a NULL argument, a sum of integers, NaN or -0.0 summed: has_nan's refusal, for the
    only floating columns read here)."""
    members = np.bincount(bins, minlength=count)
    values: list[np.ndarray | None] = []
    for i, (kind, column) in enumerate(arrow.partials):
        given = None if column is None else rows[column]
        if arrow.twins[i] < i:
            values.append(None)
        elif given is not None and given.null_count:
            return None
        elif kind in _COUNTS:
            values.append(members)
        elif given is None or not pa.types.is_floating(given.type):
            return None
        else:
            numbers = single(given).to_numpy(zero_copy_only=False)
            if _unlike(numbers):
                return None
            values.append(np.bincount(bins, numbers.astype(np.float64), minlength=count))
    return members, values


def _moved(
    slots: Slots, start: int, high: int
) -> tuple[int, np.ndarray, list[np.ndarray | None]] | None:
    """The arrays moved to hold slots ``start``..``high`` (relative to now) with spare
    slots after: new copies, so that nothing is changed until stored."""
    count = high - start + 1 + SPARE
    if count * slots.groups > CELLS:
        return None
    keep = slice(start, min(high + 1, len(slots.rows)))

    def move(array: np.ndarray) -> np.ndarray:
        out = np.zeros((count, slots.groups), array.dtype)
        part = array[keep]
        out[: len(part)] = part
        return out

    moved = [None if array is None else move(array) for array in slots.values]
    return slots.first + start, move(slots.rows), moved


def added(slots: Slots, delta: pa.Table, numbers: np.ndarray) -> Added | None:
    """The new rows ``delta`` (each in the bucket ``numbers`` gives, widths from the
    origin) merged into the block of slots they land in; None where the arrays cannot
    hold them (a key outside the coding, a bucket before the first slot or too far on,
    NULLs, NaN)."""
    arrow = slots.arrow
    code = codes(slots, keys_of(arrow, delta))
    if code is None or not len(numbers):
        return None
    low, high = int(numbers.min()) - slots.first, int(numbers.max()) - slots.first
    if low < 0:
        return None
    first, rows, arrays = slots.first, slots.rows, slots.values
    moved = None
    if high >= len(rows):
        used = np.flatnonzero(rows.any(axis=1))
        start = min(int(used[0]), low) if len(used) else low
        found = _moved(slots, start, high)
        if found is None:
            return None
        first, rows, arrays = found
        moved = (rows, arrays)
        low, high = low - start, high - start
    span = high - low + 1
    bins = (numbers - first - low) * slots.groups + code
    found_parts = partials(arrow, delta, bins, span * slots.groups)
    if found_parts is None:
        return None
    members, parts = found_parts
    shape = (span, slots.groups)
    block = rows[low : high + 1] + members.reshape(shape)
    values: list[np.ndarray | None] = []
    for array, part in zip(arrays, parts, strict=True):
        if array is None or part is None:
            values.append(None)
            continue
        new = array[low : high + 1] + part.reshape(shape)
        if new.dtype.kind == "f" and np.isnan(new).any():
            return None  # (infinities of both signs: grouping's path declines it)
        values.append(new)
    return Added(first, low, block, values, moved)


def store(slots: Slots, found: Added) -> None:
    """Keep ``found``'s cells (:func:`added`): from here on the arrays hold them."""
    slots.state = None  # (until the caller sets the table they describe)
    if found.moved is not None:
        slots.first = found.first
        slots.rows, slots.values = found.moved
    end = found.start + len(found.rows)
    slots.rows[found.start : end] = found.rows
    for array, block in zip(slots.values, found.values, strict=True):
        if array is not None and block is not None:
            array[found.start : end] = block


def used(slots: Slots, found: Added | None, new: bool = False) -> np.ndarray:
    """The bucket numbers of the slots that hold rows (ascending), ``found`` stored
    (``new``: of its block's slots only)."""
    first = slots.first if found is None else found.first
    if new and found is not None:
        return np.flatnonzero(found.rows.any(axis=1)) + found.start + first
    rows = slots.rows if found is None or found.moved is None else found.moved[0]
    full = np.array(rows.any(axis=1), bool)
    if found is not None:
        full[found.start : found.start + len(found.rows)] = found.rows.any(axis=1)
    return np.flatnonzero(full) + first


def starts(slots: Slots, numbers: np.ndarray) -> np.ndarray:
    """The buckets' starts (µs) of bucket ``numbers``."""
    return numbers * slots.width + slots.origin


def clear(slots: Slots, numbers: np.ndarray) -> None:
    """Empty the slots of bucket ``numbers`` (expired buckets)."""
    at = numbers - slots.first
    slots.rows[at] = 0
    for array in slots.values:
        if array is not None:
            array[at] = 0


def _columns(slots: Slots, flat: np.ndarray, code: np.ndarray) -> list[pa.Array]:
    """The key columns of groups ``code``, then each partial at cells ``flat``."""
    keys = len(slots.coding.sizes)
    columns = [
        coded.cast(coded.typed(digits, slots.schema.field(i).type), slots.schema.field(i).type)
        for i, digits in enumerate(slots.coding.decode(code))
    ]
    partials: list[pa.Array] = []
    for i, array in enumerate(slots.values):
        twin = slots.arrow.twins[i]
        field = slots.schema.field(keys + 1 + i).type
        if array is None:
            partials.append(partials[twin])
        else:
            partials.append(pa.array(array.ravel()[flat], field))
    return [*columns, *partials]


def table(slots: Slots, numbers: np.ndarray | None = None, bucket: bool = True) -> pa.Table:
    """The state the arrays hold, ordered by bucket then group (only the buckets
    ``numbers``, if given; without the bucket column unless ``bucket``)."""
    groups = slots.groups
    if numbers is None:
        flat = np.flatnonzero(slots.rows.ravel())
    else:
        at = numbers - slots.first
        picked, code = np.divmod(np.flatnonzero(slots.rows[at].ravel()), groups)
        flat = at[picked] * groups + code
    slot, code = np.divmod(flat, groups)
    columns = _columns(slots, flat, code)
    keys = len(slots.coding.sizes)
    schema = slots.schema
    if bucket:
        kind = schema.field(keys).type
        start = pa.array(starts(slots, slot + slots.first), pa.int64()).view(kind)
        columns.insert(keys, start)
    else:
        schema = schema.remove(keys)
    return pa.Table.from_arrays(columns, schema=schema)


def combined(
    slots: Slots, numbers: np.ndarray, rows: pa.Table, schema: pa.Schema
) -> pa.Table | None:
    """Per group: the buckets ``numbers`` (ascending) merged, then the partials of
    ``rows`` (the cut buckets' rows) — :func:`coded.combined`'s sums in its order — in
    ``schema`` (the state's without the bucket); None where it does not apply."""
    arrow, groups = slots.arrow, slots.groups
    at = numbers - slots.first
    members = slots.rows[at].sum(axis=0)
    parts = None
    if rows.num_rows:
        code = codes(slots, keys_of(arrow, rows))
        found = None if code is None else partials(arrow, rows, code, groups)
        if found is None:
            return None
        members = members + found[0]
        parts = found[1]
    sums: list[np.ndarray | None] = []
    for i, array in enumerate(slots.values):
        if array is None:
            sums.append(None)
            continue
        picked = array[at]
        if array.dtype.kind == "f":  # in bucket order, one by one (no pairwise sum)
            total = np.add.accumulate(picked, axis=0)[-1] if len(at) else np.zeros(groups)
        else:
            total = picked.sum(axis=0)
        if parts is not None:
            part = parts[i]
            assert part is not None
            total = total + part
        sums.append(total)
    present = np.flatnonzero(members)
    keys = [
        coded.cast(coded.typed(digits, schema.field(i).type), schema.field(i).type)
        for i, digits in enumerate(slots.coding.decode(present))
    ]
    columns: list[pa.Array] = []
    for i, total in enumerate(sums):
        field = schema.field(len(keys) + i).type
        columns.append(
            columns[arrow.twins[i]] if total is None else pa.array(total[present], field)
        )
    return pa.Table.from_arrays([*keys, *columns], schema=schema)


def keys_of(arrow: ArrowPlan, rows: pa.Table) -> list[pa.ChunkedArray]:
    """The query's key values of source ``rows`` (the bucketed plan's keys but its last)."""
    return arrow.bucketed([rows[name] for name in arrow.keys[:-1]])
