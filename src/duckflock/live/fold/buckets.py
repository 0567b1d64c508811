"""Time-bucket keys computed in pyarrow: ``date_trunc`` and ``time_bucket`` of a
TIMESTAMP column, exactly as DuckDB computes them.

A TIMESTAMP (without time zone) is an int64 of microseconds since 1970-01-01, and a
fixed-width bucket of one (``date_trunc('second', ts)``, ``time_bucket(INTERVAL
'1 minute', ts)``) is the floor of its distance from an origin to a multiple of the
width: ``(us - origin) // width * width + origin``, with ``origin`` reduced modulo the
width (DuckDB's ``time_bucket`` reduces it so; ``date_trunc`` measures from the epoch).
``infinity`` and ``-infinity`` stay as they are (DuckDB's bucket of an infinite
timestamp is the same infinity). A finite value past +/-2^62 microseconds (about
146,000 years from 1970) is refused with :class:`pyarrow.ArrowInvalid`: near the ends of
the type DuckDB raises an overflow error where this arithmetic would not, so such rows
go to DuckDB (the caller's fallback), which decides.

The planner (:mod:`duckflock.live.plan.bucketing`) admits a bucket only after DuckDB
has computed the same key over :data:`PROBES` (negative epochs, boundaries, the
infinities, NULL): a unit, interval or function it does not compute so, or a macro of
the same name, keeps the key DuckDB's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

INFINITY = 2**63 - 1  # TIMESTAMP 'infinity' as Arrow's int64 microseconds; -INFINITY too
LIMIT = 2**62  # finite values at or past this distance from the epoch go to DuckDB
TIMESTAMP = pa.timestamp("us")

# microseconds since the epoch that a bucket is checked on at plan time: both sides of
# the epoch and of DuckDB's time_bucket origin (2000-01-03), of second, minute, hour and
# day boundaries, pre-1900 and far-future values, the infinities and NULL
PROBES: tuple[int | None, ...] = (
    0,
    1,
    -1,
    999,
    -999,
    1_000,
    -1_001,
    999_999,
    -500_000,
    -1_000_000,
    59_999_999,
    -60_000_001,
    3_599_999_999,
    -3_600_000_001,
    86_399_999_999,
    -86_400_000_001,
    946_857_600_000_000,  # 2000-01-03 00:00:00
    946_857_599_999_999,
    946_857_600_000_001,
    1_767_225_600_123_456,  # 2026-01-01 00:00:00.123456
    1_767_311_999_999_999,
    -2_208_988_800_000_001,  # 1899-12-31 23:59:59.999999
    -62_135_596_800_000_000,  # 0001-01-01
    -123_456_789_012_345_678,
    253_402_300_799_999_999,  # 9999-12-31 23:59:59.999999
    4_611_686_018_427_387_903,  # LIMIT - 1
    -4_611_686_018_427_387_903,
    INFINITY,
    -INFINITY,
    None,
)


@dataclass(frozen=True)
class Bucket:
    """A fixed-width bucket of a TIMESTAMP: ``width`` microseconds (> 0) from
    ``origin`` (0 <= origin < width)."""

    width: int
    origin: int

    def of(self, values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
        """Each TIMESTAMP (microseconds, no time zone) of ``values`` floored to its
        bucket's start; NULL stays NULL, the infinities stay. Raises ArrowInvalid for a
        finite value at or past :data:`LIMIT` microseconds from the epoch."""
        if values.type != TIMESTAMP:
            raise pa.ArrowInvalid(f"a bucket of {values.type}, not of {TIMESTAMP}")
        chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
        return pa.chunked_array([self._floored(chunk) for chunk in chunks], TIMESTAMP)

    def _floored(self, chunk: pa.Array) -> pa.Array:
        ticks = chunk.view(pa.int64())
        valid = None if not chunk.null_count else chunk.is_valid().to_numpy(zero_copy_only=False)
        us = ticks.fill_null(0).to_numpy() if valid is not None else ticks.to_numpy()
        finite = (us != INFINITY) & (us != -INFINITY)
        if np.any(finite & ((us >= LIMIT) | (us <= -LIMIT))):
            raise pa.ArrowInvalid(
                f"a TIMESTAMP {LIMIT:,} or more microseconds from 1970: DuckDB buckets it"
            )
        # (a finite value is within +/-2^62 here: no step below overflows int64)
        floored = (np.where(finite, us, 0) - self.origin) // self.width * self.width
        out = np.where(finite, floored + self.origin, us)
        mask = None if valid is None else np.logical_not(valid)
        return pa.array(out, pa.int64(), mask=mask).view(TIMESTAMP)
