"""NaN and -0.0 in floating columns: where pyarrow and DuckDB part (DuckDB groups NaN
with NaN and -0.0 with 0.0, ranks NaN above every number), so every pyarrow fold checks
the floating values it reads (:meth:`duckflock.live.fold.arrow.ArrowPlan.has_nan`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def unlike_duckdb(values: pa.Array) -> bool:
    """Whether ``values`` hold NaN or -0.0 (never, unless they are floating). In numpy:
    a call there costs microseconds, a pyarrow kernel's tens cold. -0.0's bits are the
    smallest signed integer of its width (no other float's are); NULLs are left out."""
    if not pa.types.is_floating(values.type) or not len(values):
        return False
    if values.null_count:
        values = pc.drop_null(values)
    data = values.to_numpy(zero_copy_only=False)
    bits, lowest = _SIGNED[data.dtype.itemsize]
    # two reductions, no temporary: a minimum is NaN where any value is (numpy's
    # propagates it), and only -0.0's bits are the least signed integer
    return bool(len(data) and (np.isnan(data.min()) or data.view(bits).min() == lowest))


# per float width in bytes: the signed integer of that width, and its smallest value
_SIGNED = {
    size: (kind, np.iinfo(kind).min) for size, kind in ((2, np.int16), (4, np.int32), (8, np.int64))
}


class Clean:
    """The floating state chunks the last check found free of NaN and -0.0, held (so
    that no other array reuses their buffers' addresses): a kept state's untouched rows
    are zero-copy slices of them (live/fold/positions.py) and are not checked again."""

    def __init__(self) -> None:
        self._held: dict[tuple[int, int], pa.Array] = {}
        self._whole: pa.Table | None = None  # a state found clean as a whole

    def vouch(self, table: pa.Table) -> None:
        """Hold ``table``, found free of NaN and -0.0 in every floating column."""
        self._whole = table

    def vouched(self, table: pa.Table) -> bool:
        """Whether ``table`` is the one last vouched for (held: its identity is not reused)."""
        return table is self._whole

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
