"""NaN and -0.0 in floating columns: where pyarrow and DuckDB part (DuckDB groups NaN
with NaN and -0.0 with 0.0, ranks NaN above every number), so every pyarrow fold checks
the floating values it reads (:meth:`duckflock.live.fold.arrow.ArrowPlan.has_nan`)."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc


def unlike_duckdb(values: pa.Array) -> bool:
    """Whether floating ``values`` hold NaN or -0.0, in two passes: a NaN makes the sum
    NaN (so do infinities of both signs: then each value is looked at), and -0.0's bits
    are the smallest signed integer of its width (no other float's are)."""
    total = pc.sum(values).as_py()
    if total is not None and math.isnan(total) and pc.any(pc.is_nan(values)).as_py():
        return True
    bits = {2: pa.int16(), 4: pa.int32(), 8: pa.int64()}[values.type.byte_width]
    lowest = pc.min(values.view(bits)).as_py()
    return lowest is not None and lowest == -(1 << (bits.bit_width - 1))


class Clean:
    """The floating state chunks the last check found free of NaN and -0.0, held (so
    that no other array reuses their buffers' addresses): a kept state's untouched rows
    are zero-copy slices of them (live/fold/positions.py) and are not checked again."""

    def __init__(self) -> None:
        self._held: dict[tuple[int, int], pa.Array] = {}

    def holds(self, chunk: pa.Array) -> bool:
        """Whether ``chunk`` is a slice of a clean chunk: the same data and validity
        buffers, within its range."""
        clean = self._held.get(_buffers(chunk))
        return (
            clean is not None
            and clean.type == chunk.type
            and clean.offset <= chunk.offset
            and chunk.offset + len(chunk) <= clean.offset + len(clean)
        )

    def keep(self, chunks: list[pa.Array]) -> None:
        """Hold ``chunks`` (all clean) instead of the last ones."""
        self._held = {_buffers(chunk): chunk for chunk in chunks}


def _buffers(chunk: pa.Array) -> tuple[int, int]:
    """The addresses of a fixed-width array's data and validity buffers (0: none)."""
    validity, data = chunk.buffers()[:2]
    return (data.address if data is not None else 0, validity.address if validity else 0)
