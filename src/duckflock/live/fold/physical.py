"""Arrow arrays as numpy arrays and back, without a pyarrow kernel: one array of a
column, the physical numbers of fixed-width values, and numbers as an array of a type
(a numpy call costs a few microseconds, a pyarrow kernel tens cold)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def single(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """``column`` as one array (its only chunk, as it is)."""
    if isinstance(column, pa.Array):
        return column
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def numbers(values: pa.Array) -> np.ndarray | None:
    """The physical numbers of integers, floats, dates, times and timestamps (ordered
    as DuckDB orders those values; NULLs' slots hold anything); None for other types."""
    kind = values.type
    if pa.types.is_integer(kind) or kind in (pa.float32(), pa.float64()):
        dtype = np.dtype(kind.to_pandas_dtype())
    elif pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_time(kind):
        dtype = np.dtype(f"int{kind.bit_width}")
    else:
        return None
    data = values.buffers()[1]
    if data is None:
        return None
    array: np.ndarray = np.frombuffer(data, dtype, count=values.offset + len(values))
    return array[values.offset :]


def typed(numbers: np.ndarray, has: np.ndarray, kind: pa.DataType) -> pa.Array:
    """``numbers`` as an array of ``kind`` (their physical type's), NULL where not ``has``."""
    validity = None if has.all() else pa.py_buffer(np.packbits(has, bitorder="little"))
    return pa.Array.from_buffers(kind, len(numbers), [validity, pa.py_buffer(numbers)])


def divided(
    total: pa.ChunkedArray | pa.Array, count: pa.ChunkedArray | pa.Array
) -> pa.ChunkedArray | pa.Array:
    """``pc.divide(total, count)`` of a double and an integer column: the count as a
    double, then IEEE division, NULL where either is — in numpy where neither holds a
    NULL and every count is a double exactly (the same bits, without a kernel)."""
    if total.null_count or count.null_count or total.type != pa.float64():
        return pc.divide(total, count)
    counts = single(count).to_numpy()
    if len(counts) and max(-int(counts.min()), int(counts.max())) > _EXACT:
        return pc.divide(total, count)  # (Arrow refuses to round such a count)
    with np.errstate(divide="ignore", invalid="ignore"):  # (x/0: inf or NaN, as Arrow's)
        quotient = single(total).to_numpy() / counts.astype(np.float64)
    return pa.array(quotient, pa.float64())


_EXACT = 2**53  # integers up to this size are doubles exactly
