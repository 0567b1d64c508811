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

import contextlib
import math
import random
import re

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from duckflock.live.fold.words import one, valid, words

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


# -- the same division in Python, for the pyarrow fast path -------------------------------
#
# DuckDB's avg of an integer (not SMALLINT) divides ``long double(sum) / long double(count)``
# and rounds the quotient to a double: two roundings, the first to the significand of the
# platform's ``long double`` (64 bits on x86-64, 113 on aarch64 Linux, 53 where it is a
# double). Python integers round exactly, so the division is reproduced bit for bit once
# the width is known; DuckDB is asked which width it uses (:func:`long_double_bits`).
# Only sums below 2^64 in magnitude and counts below 2^53, which both convert to ``long double``
# exactly (larger sums take several roundings in DuckDB's hugeint cast: those go to DuckDB).

# sums and counts whose quotients 64 and 53 bits round differently (found by a search
# over random ones, about one in 2,000; tests/test_exact.py checks they still split)
SPLITTING = (
    (-3506188481146959567, 699621),
    (2238726102243525723, 258566),
    (3574289346616037679, 364882),
    (-1239555541141383368, 108740),
    (4093312794802079694, 71776),
    (-2980786009457544773, 679358),
    (-2510622839713595414, 375680),
    (-2802248003512015713, 570758),
)
_bits: dict[str, int | None] = {}


def divided_in_long_double(kind: str) -> bool:
    """Whether DuckDB's avg of integer type ``kind`` divides a hugeint sum in ``long
    double`` (every integer type but SMALLINT, whose sum is a BIGINT divided in doubles)."""
    found = _INTEGERS.get(kind.upper())
    return found is not None and found[1] == 16


def quotient(total: int, count: int, bits: int) -> float:
    """``total / count`` rounded to ``bits`` significant bits, then to a double (both to
    nearest, ties to even), as a ``long double`` division assigned to a double is.
    Raises :class:`Inexact` outside the exact conversions (see above)."""
    if not (abs(total) < 2**64 and 0 < count < 2**53):
        raise Inexact(f"avg of a sum of {total} over {count} rows: DuckDB's hugeint cast")
    if total == 0:
        return 0.0
    sign = -1 if total < 0 else 1
    num, den = abs(total), count
    # 2^e <= num/den < 2^(e+1)
    e = num.bit_length() - den.bit_length()
    if (num << max(0, -e)) < (den << max(0, e)):
        e -= 1
    shift = bits - 1 - e  # the significand: num/den * 2^shift, in [2^(bits-1), 2^bits)
    scaled_num, scaled_den = (num << shift, den) if shift >= 0 else (num, den << -shift)
    significand, rest = divmod(scaled_num, scaled_den)
    if 2 * rest > scaled_den or (2 * rest == scaled_den and significand & 1):
        significand += 1
    # float() of an int rounds to nearest, ties to even: the second rounding; scaling
    # by a power of two is exact (no such average is subnormal)
    return sign * math.ldexp(float(significand), -shift)


# numpy's longdouble is x87's 80-bit type on x86-64 Linux: a 64-bit significand, and
# its division rounds to nearest, ties to even, like the C++ DuckDB was built from
_NUMPY_LONG_DOUBLE_BITS = np.finfo(np.longdouble).nmant + 1


def quotients(totals: pa.ChunkedArray, counts: pa.ChunkedArray, bits: int) -> pa.Array:
    """:func:`quotient` of each group (None where the count is 0 or the total null), as
    doubles. When numpy's ``long double`` has DuckDB's width and every total fits an
    int64 (then it converts to ``long double`` exactly), numpy divides them all at once,
    as DuckDB does; else one :func:`quotient` per group. Raises :class:`Inexact` where
    :func:`quotient` does."""
    wide = pa.types.is_decimal(totals.type) or pa.types.is_integer(totals.type)
    if bits == _NUMPY_LONG_DOUBLE_BITS == 64 and wide:
        read = _in_numpy(totals, counts)  # int64s and decimal128s: read as they are
        if read is not None:
            return read
        with contextlib.suppress(pa.ArrowInvalid):  # a total past int64: one by one
            whole = pc.fill_null(pc.cast(totals, pa.int64()), 0)
            many = pc.fill_null(pc.cast(counts, pa.int64()), 0)
            largest = pc.max(many).as_py() or 0
            if largest >= 2**53:
                raise Inexact(f"avg over {largest} rows: DuckDB's hugeint cast")
            absent = pc.invert(pc.and_(pc.is_valid(totals), pc.greater(many, 0))).to_numpy()
            num = whole.to_numpy().astype(np.longdouble)
            den = np.maximum(many.to_numpy(), 1).astype(np.longdouble)
            values = (num / den).astype(np.float64)
            return pa.array(values, pa.float64(), mask=absent)
    return pa.array(
        [
            None if not count or total is None else quotient(int(total), count, bits)
            for total, count in zip(totals.to_pylist(), counts.to_pylist(), strict=True)
        ],
        pa.float64(),
    )


def _in_numpy(totals: pa.ChunkedArray, counts: pa.ChunkedArray) -> pa.Array | None:
    """:func:`quotients` for int64 or ``decimal128(p, 0)`` totals and int64 counts
    that fit an int64, from their buffers (:mod:`duckflock.live.fold.words`), with
    numpy's 64-bit ``long double``; None for anything else (the casts then decide)."""
    total, count = one(totals), one(counts)
    whole, many = words(total), words(count)
    if whole is None or many is None or whole[2] or many[2]:
        return None
    if not (total.null_count or count.null_count) and whole[1].all() and many[1].all():
        largest = int(many[0].max(initial=0))  # no NULL, every value an int64
        if int(many[0].min(initial=1)) > 0 and largest < 2**53:  # every group has rows
            num, den = whole[0].astype(np.longdouble), many[0].astype(np.longdouble)
            return pa.array((num / den).astype(np.float64), pa.float64())
    has_total, has_count = valid(total), valid(count)
    if not ((whole[1] | ~has_total).all() and (many[1] | ~has_count).all()):
        return None  # a value past int64
    rows = np.where(has_count, many[0], 0)
    largest = int(rows.max(initial=0))
    if largest >= 2**53:
        raise Inexact(f"avg over {largest} rows: DuckDB's hugeint cast")
    present = has_total & (rows > 0)
    num = np.where(present, whole[0], 0).astype(np.longdouble)
    den = np.maximum(rows, 1).astype(np.longdouble)
    return pa.array((num / den).astype(np.float64), pa.float64(), mask=~present)


def long_double_bits(cursor: duckdb.DuckDBPyConnection) -> int | None:
    """The significand width DuckDB's avg divides with (see above), from its own answers;
    None when no width explains every answer (pyarrow then leaves such averages to
    DuckDB). Asked once per process, over sums and counts whose quotients the widths
    round differently (:data:`SPLITTING`) and random ones. Below 2^64 / 2^53,
    113 bits always round as 53 do (a quotient is at least 1/count from a halfway point),
    so 53 stands for both."""
    if "bits" in _bits:
        return _bits["bits"]
    rng = random.Random(19)
    totals = [t for t, _ in SPLITTING] + [rng.randrange(-(2**62), 2**62) for _ in range(56)]
    counts = [c for _, c in SPLITTING] + [rng.randrange(1, 2**40) for _ in range(56)]
    finalised = final_sql("t", "c", "BIGINT")
    try:
        rows = cursor.execute(
            f"SELECT {finalised} FROM (SELECT unnest(?::HUGEINT[]) AS t, unnest(?::BIGINT[]) AS c)",
            [totals, counts],
        ).fetchall()
    except duckdb.Error:
        rows = []
    answers = [row[0] for row in rows]
    fits = [
        bits
        for bits in (64, 53)
        if len(answers) == len(totals)
        and all(
            quotient(t, c, bits).hex() == a.hex()
            for t, c, a in zip(totals, counts, answers, strict=True)
        )
    ]
    _bits["bits"] = fits[0] if len(fits) == 1 else None
    return _bits["bits"]
