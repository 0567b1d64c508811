"""avg of integers and DECIMALs finalised by DuckDB's own avg, from an exact sum and count.

DuckDB's ``avg`` of an integer or DECIMAL keeps its sum exact (a HUGEINT, or the
DECIMAL's unscaled value) and divides only at the end
(``extension/core_functions/aggregate/algebraic/avg.cpp``): in ``long double`` (x86's
80-bit type) for most integer types, in doubles for SMALLINT; a DECIMAL's divident is
``count * 10^scale``. A sum divided by a count in SQL (doubles) is off in the last bits.

Rather than re-implement that division, the kept sum and count are handed to DuckDB's
avg itself: an ``avg`` aggregate state (``AvgState``: the count as a little-endian
``uint64``, then the sum as ``int64`` for SMALLINT, ``hugeint`` otherwise) is written
as a BLOB, ``combine``d into an empty state of the right type and ``finalize``d. The
layout is DuckDB 1.5.5's memory image (pinned; tests/test_exact.py holds it bit-equal
to DuckDB's avg over random inputs).

A DECIMAL's avg cannot export its state (it has bind data), so its sum is handed to the
integer avg with the count multiplied by ``10^scale``: the same division while that
product is exact, below 2^53 (DECIMAL(≤4), divided in doubles) or 2^64 (wider) — for
scales up to 6, groups of up to 9·10^11 and 1.8·10^13 rows; wider scales run in full.
"""

from __future__ import annotations

import re

_INTEGERS = {
    # argument type: (the avg overload whose state it fills, bytes of its sum)
    "TINYINT": ("BIGINT", 16),
    "SMALLINT": ("SMALLINT", 8),
    "INTEGER": ("BIGINT", 16),
    "BIGINT": ("BIGINT", 16),
    "UTINYINT": ("BIGINT", 16),
    "USMALLINT": ("BIGINT", 16),
    "UINTEGER": ("BIGINT", 16),
    "UBIGINT": ("HUGEINT", 16),
}
MAX_SCALE = 6  # DECIMAL avgs of wider scales run in full (see the module docstring)


class Inexact(Exception):
    """DuckDB's avg of this type cannot be finalised from the kept state here."""


def final_sql(total: str, count: str, kind: str) -> str | None:
    """SQL of DuckDB's avg over an argument of type ``kind`` from the state's exact sum
    (``total``) and count partials; None for a floating sum (its avg is the double sum
    over the count, which SQL over the state computes as DuckDB does). Raises
    :class:`Inexact` for a DECIMAL of a scale over :data:`MAX_SCALE`."""
    kind = kind.upper()
    if kind in _INTEGERS:
        overload, width = _INTEGERS[kind]
        return _finalised(overload, width, f"CAST({count} AS BIGINT)", f"CAST({total} AS HUGEINT)")
    found = re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", kind)
    if found is None:
        return None
    precision, scale = int(found.group(1)), int(found.group(2))
    if scale > MAX_SCALE:
        raise Inexact(f"avg() of {kind}: a scale over {MAX_SCALE}")
    # the unscaled sum, exactly: DuckDB prints a DECIMAL with all its scale's digits
    unscaled = f"CAST(replace(CAST({total} AS VARCHAR), '.', '') AS HUGEINT)"
    overload, width = ("SMALLINT", 8) if precision <= 4 else ("BIGINT", 16)
    return _finalised(overload, width, f"CAST({count} AS BIGINT) * {10**scale}", unscaled)


def _finalised(overload: str, width: int, count: str, total: str) -> str:
    value = f"CAST({total} AS {'HUGEINT' if width == 16 else 'BIGINT'})"
    state = f"from_hex({_little_endian(count, 8)} || {_little_endian(value, width)})"
    empty = f"(SELECT avg(CAST(NULL AS {overload})) EXPORT_STATE)"
    return f"finalize(combine({empty}, {state}))"


def _little_endian(sql: str, width: int) -> str:
    """Hex of the integer ``sql`` as ``width`` little-endian bytes (two's complement:
    DuckDB's to_hex gives a negative number's full width)."""
    digits = f"lpad(to_hex({sql}), {2 * width}, '0')"
    return f"array_to_string(list_reverse(regexp_extract_all({digits}, '..')), '')"
