"""Grouping by integer codes in numpy, for a sliding window's small merges.

A window's refresh groups three small tables (:mod:`duckflock.live.windows`): the new
rows by (key…, bucket), the state's buckets with those partials by (key…, bucket), and
the buckets inside the window with the cut bucket's rows by the query's keys. Each
pyarrow hash kernel costs tens of microseconds cold (an Acero plan per ``group_by``,
``unique`` and ``index_in`` per key column), more than its work over a few thousand
rows. Where every key column holds integers without NULL (integer types, TIMESTAMP,
DATE, TIME, durations: their values are equal exactly where their integers
are), each row's group is one integer computed in numpy — per column its
distance from the smallest value, in steps (a time bucket's width, where every value is
a multiple of it from there), mixed into one code (:class:`Coding`) — and the
aggregates are ``numpy.bincount``/``ufunc.at`` over those codes.

Bit for bit what grouping gives (tests/test_coded.py holds the two to the same bits):
``bincount`` adds a group's floating values one by one in row order from 0.0, as
pyarrow's grouped sum does (:mod:`duckflock.live.fold.dense`); merging partials
(``merged``) over the tables concatenated in the caller's order is the same order as
grouping their concatenation. Integer counts add exactly; min/max do not depend on the
order (the caller has found no NaN or -0.0: ``ArrowPlan.has_nan``). It declines (None)
where a key is not such an integer column, a value is NULL, a sum is exact (integers,
decimals) or the codes would not fit in 62 bits. The groups come out in code order, not
pyarrow's first-seen order (a window's state: by bucket first, so that a merge can
leave its older buckets as they are): a state's or an unordered result's row order is
no one's to rely on (an ORDER BY sorts the result).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from duckflock.live.fold.arrow import ArrowPlan
from duckflock.live.fold.physical import single
from duckflock.live.fold.states import PartialKind

_SPAN = 1 << 62  # codes below this: no int64 step below overflows
_DENSE = 1 << 16  # codes used as group numbers as they are, up to this many (or 4 per row)

Columns = Sequence[pa.ChunkedArray | pa.Array]


def integers(column: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """A key column as int64 numpy values, where equal integers are equal keys and it
    holds no NULL; else None."""
    kind = column.type
    if column.null_count:
        return None
    array = single(column) if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_signed_integer(kind):
        pass
    elif (
        pa.types.is_timestamp(kind)
        or pa.types.is_date64(kind)
        or pa.types.is_time64(kind)
        or pa.types.is_duration(kind)
    ):
        array = array.view(pa.int64())
    elif pa.types.is_date32(kind) or pa.types.is_time32(kind):
        array = array.view(pa.int32())
    else:
        return None
    values: np.ndarray = array.to_numpy(zero_copy_only=False)
    return values.astype(np.int64, copy=False)


@dataclass(frozen=True)
class Coding:
    """How key values become one code: per column its smallest value, its step and how
    many steps it spans; the code is the columns' steps from there, mixed radix."""

    lows: tuple[int, ...]
    steps: tuple[int, ...]
    sizes: tuple[int, ...]

    @property
    def total(self) -> int:
        total = 1
        for size in self.sizes:
            total *= size
        return total

    def encode(self, columns: Sequence[np.ndarray]) -> np.ndarray:
        code = np.zeros(len(columns[0]) if columns else 0, np.int64)
        for values, low, step, size in zip(columns, self.lows, self.steps, self.sizes, strict=True):
            digit = values - low
            if step > 1:
                digit //= step
            code = code * size + digit
        return code

    def decode(self, code: np.ndarray) -> list[np.ndarray]:
        """The columns' int64 values of each code (:meth:`encode`'s inverse)."""
        columns = []
        for low, step, size in reversed(list(zip(self.lows, self.steps, self.sizes, strict=True))):
            code, digit = np.divmod(code, size)
            columns.append(digit * step + low)
        return columns[::-1]


def coding(tables: Sequence[Sequence[np.ndarray]]) -> Coding | None:
    """The coding of key columns over several tables (``tables[t][i]``: table t's column
    i, as :func:`integers` gives it); None where the codes would not fit. A column
    spanning more values than the tables have rows steps by the greatest common divisor
    of its distances from its smallest value (a time bucket's width)."""
    lows, used, sizes = [], [], []
    total = 1
    rows = sum(len(table[0]) for table in tables)
    for i in range(len(tables[0])):
        parts = [table[i] for table in tables if len(table[i])]
        if not parts:
            return None
        low = min(int(part.min()) for part in parts)
        high = max(int(part.max()) for part in parts)
        if high - low >= _SPAN:
            return None
        step = 1
        if high - low > 4 * rows:
            step = int(np.gcd.reduce([int(np.gcd.reduce(part - low)) for part in parts]))
            step = max(step, 1)
        size = (high - low) // step + 1
        total *= size
        if total >= _SPAN:
            return None
        lows.append(low)
        used.append(step)
        sizes.append(size)
    return Coding(tuple(lows), tuple(used), tuple(sizes))


def _groups(code: np.ndarray, total: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Each row's group number, and each number's code (None: the numbers are the codes,
    ``total`` of them, some maybe empty)."""
    if total <= max(_DENSE, 4 * len(code)):
        return code, None
    found, inverse = np.unique(code, return_inverse=True)
    return inverse.reshape(-1), found


def typed(values: np.ndarray, kind: pa.DataType) -> pa.Array:
    """int64 ``values`` (:func:`integers`' view) back as an array of ``kind``."""
    if pa.types.is_signed_integer(kind):  # (each value was one of kind's: no kernel)
        return pa.array(values.astype(kind.to_pandas_dtype(), copy=False), kind)
    if pa.types.is_date32(kind) or pa.types.is_time32(kind):
        return pa.array(values.astype(np.int32), pa.int32()).view(kind)
    return pa.array(values, pa.int64()).view(kind)


def _reduce(
    kind: PartialKind, merging: bool, bins: np.ndarray, count: int, values: np.ndarray | None
) -> np.ndarray | None:
    """One aggregate per group number: of the rows (``merging`` False) or of partials."""
    if kind in (PartialKind.COUNT_ALL, PartialKind.COUNT):
        if not merging:
            return np.bincount(bins, minlength=count).astype(np.int64)
        assert values is not None
        if values.dtype != np.int64:
            return None
        out = np.zeros(count, np.int64)
        np.add.at(out, bins, values)
        return out
    if values is None:
        return None
    if kind is PartialKind.SUM:
        if values.dtype.kind != "f":
            return None  # an exact sum: merged in decimal256 elsewhere
        summed: np.ndarray = np.bincount(bins, values.astype(np.float64), minlength=count)
        return summed
    if kind in (PartialKind.MIN, PartialKind.MAX) and values.dtype.kind in "iuf":
        out = np.empty(count, values.dtype)
        out[bins] = values  # any of a group's values, then the extreme over all
        (np.minimum if kind is PartialKind.MIN else np.maximum).at(out, bins, values)
        return out
    return None


def _numbers(column: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """A column of numbers without NULL as numpy (None: NULLs or not numbers)."""
    kind = column.type
    if column.null_count or not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        return None
    array = single(column) if isinstance(column, pa.ChunkedArray) else column
    values: np.ndarray = array.to_numpy(zero_copy_only=False)
    return values


def grouped(
    keys: Sequence[Columns],
    values: Sequence[Columns | None],
    kinds: Sequence[PartialKind],
    twins: Sequence[int],
    schema: pa.Schema,
    merging: bool,
    first: int = 0,
) -> pa.Table | None:
    """Per group of the key columns, one row: the keys, then per ``kinds`` the aggregate
    of its ``values`` (per table, like ``keys``: the tables are taken concatenated, in
    order), in ``schema``. ``merging``: the values are partials to merge (a count adds
    counts), else the rows' own values (a count counts rows); a None values column: a
    count(*)'s. ``twins``: per aggregate, the first equal one (computed once). None where
    this does not apply (module docstring). ``first``: the key column whose value is the
    code's most significant digit (the rows come out ordered by it first)."""
    if not keys or not len(keys[0]):  # no key column (a window without GROUP BY)
        return None
    coded: list[list[np.ndarray]] = []
    for table in keys:
        ordered = (*table[first : first + 1], *table[:first], *table[first + 1 :])
        numbered = [integers(column) for column in ordered]
        if any(column is None for column in numbered):
            return None
        coded.append([column for column in numbered if column is not None])
    found = coding(coded)
    if found is None:
        return None
    code = np.concatenate([found.encode(table) for table in coded])
    bins, codes = _groups(code, found.total)
    count = found.total if codes is None else len(codes)
    members = np.bincount(bins, minlength=count)
    present = np.flatnonzero(members)
    width = len(keys[0])
    decoded = found.decode(present if codes is None else codes[present])
    order = [first, *range(first), *range(first + 1, width)]  # the coded columns' keys
    columns: list[pa.Array | pa.ChunkedArray] = [pa.array([])] * width
    for digits, i in zip(decoded, order, strict=True):
        columns[i] = cast(typed(digits, keys[0][i].type), schema.field(i).type)
    for i, kind in enumerate(kinds):
        if twins[i] < i:
            columns.append(columns[width + twins[i]])
            continue
        given = values[i]
        parts = None
        if not merging and kind in (PartialKind.COUNT_ALL, PartialKind.COUNT):
            if given is not None and any(column.null_count for column in given):
                return None  # counts the rows: where none is NULL
        elif given is not None:
            numbers = [_numbers(column) for column in given]
            if any(part is None for part in numbers):
                return None
            parts = np.concatenate([part for part in numbers if part is not None])
        reduced = _reduce(kind, merging, bins, count, parts)
        if reduced is None:
            return None
        columns.append(pa.array(reduced[present], schema.field(width + i).type))
    return pa.Table.from_arrays(columns, schema=schema)


def cast(column: pa.ChunkedArray | pa.Array, kind: pa.DataType) -> pa.ChunkedArray | pa.Array:
    return column if column.type == kind else column.cast(kind)


def rows(table: pa.Table, keep: np.ndarray) -> pa.Table:
    """The rows of ``table`` that ``keep`` marks: a zero-copy slice where they are one
    run (a state ordered by bucket, rows ordered by time), else a filter."""
    at = np.flatnonzero(keep)
    if not len(at):
        return table.slice(0, 0)
    if int(at[-1]) - int(at[0]) + 1 == len(at):
        return table.slice(int(at[0]), len(at))
    return table.filter(pa.array(keep))


def instants(column: pa.ChunkedArray) -> np.ndarray | None:
    """A microsecond timestamp column without NULL as int64 numpy (else None)."""
    if not pa.types.is_timestamp(column.type) or column.type.unit != "us":
        return None
    return integers(column)


def look_up(
    values: pa.ChunkedArray, value_set: pa.ChunkedArray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Per value, its position in ``value_set`` (distinct, the same type) and whether it
    is there — ``index_in`` by a sort of the set and a binary search, for integer
    columns without NULL (:func:`integers`); else None."""
    found, within = integers(values), integers(value_set)
    if found is None or within is None or values.type != value_set.type:
        return None
    if not len(within):
        return np.zeros(len(found), np.int64), np.zeros(len(found), bool)
    order = np.argsort(within, kind="stable")
    ordered = within[order]
    at = np.minimum(np.searchsorted(ordered, found), len(ordered) - 1)
    return order[at], ordered[at] == found


def partials(arrow: ArrowPlan, rows: pa.Table, schema: pa.Schema) -> pa.Table | None:
    """:meth:`ArrowPlan.partials_of` in numpy (None: it does not apply)."""
    if not rows.num_rows or arrow.wide(schema) is not None:
        return None
    values = [None if column is None else [rows[column]] for _, column in arrow.partials]
    kinds = [kind for kind, _ in arrow.partials]
    return grouped([arrow.key_columns(rows)], values, kinds, arrow.twins, schema, False)


def merged(arrow: ArrowPlan, tables: Sequence[pa.Table], first: int = 0) -> pa.Table | None:
    """Partials of the same groups in ``tables`` (each the state's schema) merged into
    one row per group: what grouping their concatenation gives (None: not here), ordered
    by the key column ``first``'s codes first (:func:`grouped`)."""
    tables = [table for table in tables if table.num_rows]
    if not tables:
        return None
    schema = tables[0].schema
    width = len(arrow.keys)
    if any(table.schema != schema for table in tables) or len(schema) != width + len(
        arrow.partials
    ):
        return None
    keys = [table.columns[:width] for table in tables]
    values = [[table.column(width + i) for table in tables] for i in range(len(arrow.partials))]
    kinds = [kind for kind, _ in arrow.partials]
    return grouped(keys, values, kinds, arrow.twins, schema, True, first)


def combined(arrow: ArrowPlan, inside: pa.Table, rows: pa.Table) -> pa.Table | None:
    """A window's buckets inside it (``inside``, the state's schema without the bucket)
    merged by the query's keys with the partials of the cut buckets' ``rows``, as
    ``arrow.fold(inside, rows, unique=False)`` groups them; None where it does not apply."""
    parts = partials(arrow, rows, inside.schema) if rows.num_rows else None
    if rows.num_rows and parts is None:
        return None
    return merged(arrow, [inside] if parts is None else [inside, parts])
