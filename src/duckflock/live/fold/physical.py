"""Arrow arrays as numpy arrays and back, without a pyarrow kernel: one array of a
column, the physical numbers of fixed-width values, and numbers as an array of a type
(a numpy call costs a few microseconds, a pyarrow kernel tens cold)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


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
