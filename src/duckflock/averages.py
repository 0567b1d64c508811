"""avg finalised as DuckDB 1.5.5 finalises it, from an exact sum and a count.

DuckDB's ``avg`` of an integer or DECIMAL keeps the sum as an integer (a HUGEINT, or
the DECIMAL's unscaled value) and divides only at the end
(``extension/core_functions/aggregate/algebraic/avg.cpp``):

- SMALLINT and DECIMAL(≤4) (``IntegerAverageOperation``): ``double(sum) / divident``,
  in doubles;
- every other integer (TINYINT, INTEGER, BIGINT, the unsigned ones are cast to BIGINT or
  HUGEINT) and DECIMAL(5…18) (``IntegerAverageOperationHugeint``/``HugeintAverage…``):
  the HUGEINT sum converted to ``long double`` (``CastBigintToFloating``: the low and
  high 64-bit halves), divided by ``long double`` divident, then rounded to a double;

the divident being ``count``, times ``10^scale`` (a double) for a DECIMAL. ``long
double`` is x86's 80-bit extended type: numpy's ``longdouble`` on this platform, where a
test holds every result bit-equal to DuckDB's own avg. A sum divided by a count in
doubles is off in the last bits.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

import duckdb
import numpy as np
import pyarrow as pa

FUNCTION = "__duckflock_avg"
_LOW = (1 << 64) - 1
_TWO64 = np.longdouble(2.0) ** 64


class Division(StrEnum):
    """How DuckDB divides an exact sum by its count."""

    DOUBLE = "double"  # SMALLINT, DECIMAL(≤4)
    LONG_DOUBLE = "long double"  # other integers, DECIMAL(5…18)


def division(kind: str) -> tuple[Division, int] | None:
    """(division, scale) of DuckDB's avg over an argument of type ``kind``; None where
    the sum is floating (a double sum divided by the count: what a query over the
    state computes already) or not kept here (128-bit and wider DECIMAL sums)."""
    kind = kind.upper()
    if kind == "SMALLINT":
        return Division.DOUBLE, 0
    if kind in ("TINYINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"):
        return Division.LONG_DOUBLE, 0
    if kind.startswith("DECIMAL("):
        width, scale = (int(part) for part in kind[len("DECIMAL(") : -1].split(","))
        if width <= 4:
            return Division.DOUBLE, scale
        if width <= 18:
            return Division.LONG_DOUBLE, scale
    return None


def average(total: int, count: int, how: Division, scale: int) -> float:
    """DuckDB's avg of values whose unscaled sum is ``total`` over ``count`` rows."""
    factor = float(10**scale)  # AverageDecimalBindData keeps 10^scale as a double
    if how is Division.DOUBLE:
        divident = float(count) * factor if scale else float(count)
        return float(total) / divident
    upper, lower = total >> 64, total & _LOW
    if upper == -1:  # CastBigintToFloating's special case for small negatives
        value = -np.longdouble(np.uint64(_LOW - lower)) - np.longdouble(1)
    else:
        value = np.longdouble(np.uint64(lower)) + np.longdouble(np.int64(upper)) * _TWO64
    long_divident = np.longdouble(np.uint64(count))
    if scale:
        long_divident *= np.longdouble(factor)
    return float(value / long_divident)


def unscaled(text: str, scale: int) -> int:
    """The unscaled integer of a sum DuckDB printed (``123.450`` at scale 3: 123450)."""
    return int(Decimal(text).scaleb(scale))


def averages(
    totals: pa.Array | pa.ChunkedArray,
    counts: pa.Array | pa.ChunkedArray,
    how: Division,
    scale: int,
) -> pa.Array:
    """:func:`average` over arrays (NULL where the count is 0 or NULL)."""
    out: list[float | None] = []
    for total, count in zip(totals.to_pylist(), counts.to_pylist(), strict=True):
        if total is None or not count:
            out.append(None)
        else:
            out.append(average(unscaled(str(total), scale), int(count), how, scale))
    return pa.array(out, pa.float64())


def final_sql(total: str, count: str, how: Division, scale: int) -> str:
    """SQL of the avg from the state's exact sum and count partials."""
    return (
        f"{FUNCTION}(CAST({total} AS VARCHAR), CAST({count} AS BIGINT), "
        f"{scale}, {'true' if how is Division.LONG_DOUBLE else 'false'})"
    )


def _udf(totals: pa.Array, counts: pa.Array, scales: pa.Array, longs: pa.Array) -> pa.Array:
    """The SQL function: :func:`averages` (scale and division are final_sql's constants)."""
    if not len(totals):
        return pa.array([], pa.float64())
    how = Division.LONG_DOUBLE if longs[0].as_py() else Division.DOUBLE
    return averages(totals, counts, how, int(scales[0].as_py()))


def register(cursor: duckdb.DuckDBPyConnection) -> None:
    """Make :data:`FUNCTION` known to ``cursor``'s database (all its cursors share it)."""
    try:
        cursor.create_function(
            FUNCTION,
            _udf,
            [
                duckdb.sqltype("VARCHAR"),
                duckdb.sqltype("BIGINT"),
                duckdb.sqltype("INTEGER"),
                duckdb.sqltype("BOOLEAN"),
            ],
            duckdb.sqltype("DOUBLE"),
            type=duckdb.func.ARROW,
            side_effects=False,
        )
    except (duckdb.NotImplementedException, duckdb.CatalogException) as exc:
        if "already" not in str(exc):  # already there: one function per name and database
            raise
