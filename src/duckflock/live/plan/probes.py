"""Probe rows for :mod:`duckflock.live.plan.computing`: the new rows' columns cycling
through values where pyarrow and DuckDB may part (negatives, zero, the ends of each
integer type, infinities, NULL, ASCII strings of both cases, the time buckets' probe
timestamps), and the exact comparison of two partials tables."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from duckflock.live.fold.buckets import PROBES

# DuckDB's integer types: their bits (negative: unsigned)
INTEGERS = {
    "TINYINT": 8,
    "SMALLINT": 16,
    "INTEGER": 32,
    "BIGINT": 64,
    "UTINYINT": -8,
    "USMALLINT": -16,
    "UINTEGER": -32,
    "UBIGINT": -64,
}
PROBED = frozenset(INTEGERS) | {"FLOAT", "DOUBLE", "VARCHAR", "BOOLEAN", "TIMESTAMP"}
_ROWS = 211  # probe rows: a prime, so that the columns' cycles of values mix


def probe_rows(
    source: pa.Schema, types: dict[str, str], read: set[str], *, ends: bool = True
) -> pa.Table:
    """Rows of ``source``'s schema whose read columns cycle through their type's probe
    values (each column a different cycle, so that values meet in many combinations);
    the other columns NULL."""
    columns = []
    for at, field in enumerate(source):
        name = field.name.lower()
        if name not in read:
            columns.append(pa.nulls(_ROWS, field.type))
            continue
        values = _values(types.get(name, ""), ends)
        step = at % 5 + 1
        picked = [values[(i * step + i // len(values)) % len(values)] for i in range(_ROWS)]
        columns.append(pa.array(picked).cast(field.type))
    return pa.Table.from_arrays(columns, schema=source)


def _values(kind: str, ends: bool) -> list[Any]:
    if kind in INTEGERS:
        bits = INTEGERS[kind]
        low, high = (0, 2**-bits - 1) if bits < 0 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        small = [0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 7, -7, 9, -10, 13, 100, -100]
        far = [low, high, low + 1, high - 1] if ends else []
        return [v for v in small if low <= v <= high] + far + [None]
    if kind in ("FLOAT", "DOUBLE"):
        return [0.0, 1.0, -1.0, 0.5, -2.25, 3.0, 1e30, -1e30, float("inf"), float("-inf"), None]
    if kind == "VARCHAR":
        return ["", "a", "A", "s1", "S1", "aBc", "ABC", "z", "Z", "0", " x ", "s10", None]
    if kind == "BOOLEAN":
        return [True, False, None, True]
    if kind == "TIMESTAMP":
        return [None if us is None else us for us in PROBES[:-3]] + [None]
    raise TypeError(f"no probe values of {kind}")


def same(want: pa.Table, got: pa.Table, schema: pa.Schema) -> bool:
    """Whether two partials tables hold the same rows, each value the same (floats and
    times by their bits), in any order."""
    if want.num_rows != got.num_rows:
        return False
    keys = [(name, "ascending") for name in schema.names if name.startswith("__k")]
    rows = []
    for table in (want.cast(schema), got):
        ordered = table.take(pc.sort_indices(table, sort_keys=keys))
        rows.append([_bits(column.combine_chunks()).to_pylist() for column in ordered.columns])
    return rows[0] == rows[1]


def _bits(values: pa.Array) -> pa.Array:
    """Fixed-width values as the integers of their bits (NaN, -0.0 and times past
    Python's dates compare exactly)."""
    kind = values.type
    if pa.types.is_floating(kind) or pa.types.is_temporal(kind):
        return values.view(pa.int64() if kind.bit_width == 64 else pa.int32())
    return values
