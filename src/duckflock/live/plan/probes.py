"""Probe rows for :mod:`duckflock.live.plan.computing`: the new rows' columns cycling
through values where pyarrow and DuckDB may part (negatives, zero, the ends of each
integer type, infinities, NULL, ASCII strings of both cases, the time buckets' probe
timestamps), and the exact comparison of two partials tables; and whether DuckDB's
arg_max/arg_min pick as ``>``/``<`` order a type (:func:`picks_as_compared`)."""

from __future__ import annotations

import re
from typing import Any

import duckdb
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
        # typed from the start: UBIGINT's top is past the int64 pyarrow would infer
        columns.append(pa.array(picked, type=field.type))
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


# values that, cast to a type, show where arg_max orders it otherwise than > does:
# intervals whose months, days and microseconds order otherwise than their sum does,
# times with offsets whose local order is not their UTC order; numbers, NaN and
# infinities, strings, times. (-0.0 against 0.0 is checked on every fold: merges.py.)
PAIRED = [
    *("1 month", "40 days", "30 days", "720 hours", "1 month -40 days", "0 days", "-1 day"),
    *("00:00:00+01", "01:00:00+02", "23:00:00-01", "12:00:00+00", "12:00:00"),
    *("0", "1", "-1", "2.5", "nan", "inf", "-inf", "a", "A", "b", "true", "false"),
    *("2024-01-01", "2024-01-01 00:00:00+05", "1969-12-31 23:59:59"),
]


def picks_as_compared(cursor: duckdb.DuckDBPyConnection, kind: str) -> bool:
    """Whether DuckDB's arg_max and arg_min, ordering by values of type ``kind`` (and of
    each type DuckDB names in it: a STRUCT's or LIST's members), pick of two rows the
    one ``>`` (``<``) says comes first, and the first row where neither does — so that
    winners kept apart merge by ``>`` to a full run's. DuckDB decides, over every pair
    of :data:`PAIRED` cast to the type; a type no value casts to has nothing to differ."""
    names = cursor.execute(
        "SELECT DISTINCT upper(type_name) FROM duckdb_types() WHERE database_name = 'system'"
    ).fetchall()
    atoms = [kind] + [
        str(name) for (name,) in names if re.search(rf"\b{re.escape(str(name))}\b", kind)
    ]
    for atom in dict.fromkeys(atoms):
        try:
            row = cursor.execute(_PICKED.format(kind=atom), [PAIRED]).fetchone()
        except duckdb.Error:
            continue  # no type by itself (STRUCT, LIST…): its members are probed
        if row is None or row[0]:
            return False
    return True


_PICKED = """WITH v AS (
    SELECT DISTINCT s, TRY_CAST(s AS {kind}) AS x FROM unnest(?::VARCHAR[]) AS u(s)
), pairs AS (
    SELECT row_number() OVER () AS p, a.x AS a, b.x AS b
    FROM v AS a, v AS b WHERE a.x IS NOT NULL AND b.x IS NOT NULL AND a.s <> b.s
)
SELECT count(*) FROM (
    SELECT arg_max(w, x ORDER BY w) AS hi, arg_min(w, x ORDER BY w) AS lo,
        any_value(CASE WHEN b > a THEN 2 ELSE 1 END) AS want_hi,
        any_value(CASE WHEN b < a THEN 2 ELSE 1 END) AS want_lo
    FROM pairs, LATERAL (SELECT 1 AS w, a AS x UNION ALL SELECT 2 AS w, b AS x)
    GROUP BY p
) WHERE hi <> want_hi OR lo <> want_lo"""
