"""Arrow's int64 and ``decimal128`` arrays read as numpy int64s, without a cast.

A ``decimal128`` value is two little-endian 64-bit words, the low one unsigned; where
the high word only extends the low one's sign, the unscaled value is the low word as a
signed int64. Small per-group arithmetic (a retention's subtraction, an average's
quotient) then runs in a few numpy calls instead of one Arrow cast per column.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

INT64 = pa.int64()


def one(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """``column`` as one array (its only chunk, without a copy, when it has one)."""
    if isinstance(column, pa.Array):
        return column
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def words(array: pa.Array) -> tuple[np.ndarray, np.ndarray, int] | None:
    """The low words of ``array``'s values (int64s, or a decimal's unscaled integers as
    signed int64s), where each value fits an int64 (its high word only extends the
    sign), and its scale (0 for int64); None for another type. A NULL slot holds
    whatever it holds: the caller masks it."""
    kind, n = array.type, len(array)
    if kind == INT64:
        if n == 0:
            return np.zeros(0, np.int64), np.ones(0, bool), 0
        low = np.frombuffer(array.buffers()[1], np.int64, n, array.offset * 8)
        return low, np.ones(n, bool), 0
    if not isinstance(kind, pa.Decimal128Type):
        return None
    if n == 0:
        return np.zeros(0, np.int64), np.ones(0, bool), kind.scale
    data = array.buffers()[1]
    pairs = np.frombuffer(data, np.int64, 2 * n, array.offset * 16).reshape(n, 2)
    low = pairs[:, 0]
    return low, pairs[:, 1] == (low >> 63), kind.scale


def valid(array: pa.Array) -> np.ndarray:
    """Where ``array`` has a value, as numpy booleans."""
    n = len(array)
    if not array.null_count:
        return np.ones(n, bool)
    bitmap = np.frombuffer(array.buffers()[0], np.uint8)
    bits = np.unpackbits(bitmap, bitorder="little")
    return bits[array.offset : array.offset + n].astype(bool)


def built(values: np.ndarray, present: np.ndarray | None, kind: pa.DataType) -> pa.Array | None:
    """``values`` (unscaled int64s) as an array of ``kind`` (int64 or decimal128), null
    where not ``present``; None where a value does not fit ``kind``'s precision or
    ``kind`` is another type."""
    mask, nulls = None, 0
    if present is not None and not present.all():
        mask = pa.py_buffer(np.packbits(present, bitorder="little"))
        nulls = len(values) - int(np.count_nonzero(present))
        values = np.where(present, values, 0)
    values = np.ascontiguousarray(values, np.int64)
    if kind == INT64:
        return pa.Array.from_buffers(kind, len(values), [mask, pa.py_buffer(values)], nulls)
    if not isinstance(kind, pa.Decimal128Type):
        return None
    if kind.precision < 19:
        bound = 10**kind.precision
        if ((values <= -bound) | (values >= bound)).any():
            return None
    pairs = np.empty((len(values), 2), np.int64)
    pairs[:, 0], pairs[:, 1] = values, values >> 63
    return pa.Array.from_buffers(kind, len(values), [mask, pa.py_buffer(pairs)], nulls)
