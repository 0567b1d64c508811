"""Whole result columns in wire form at once: a few Arrow casts and numpy operations per
column instead of one Python call per value.

:func:`encode_column` gives one Arrow column's values in text or binary form as an Arrow
binary array (NULL stays null), spelled byte for byte as the per-value dumpers of the
family modules spell them (a differential test holds the two together). Rows those
spellings cannot be computed for at once (infinities, years before 1 or past 9999, a
time of 24:00:00, floats Arrow spells in another notation than PostgreSQL) are
handed to ``per_value``: the per-value dumpers, for those rows only. A column whose type
has no whole-column form here gives None, and the caller encodes it value by value.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from duckflock.server import temporal
from duckflock.server.pgwire.types.adapt import Format
from duckflock.server.pgwire.types.numeric import (
    FIXED_BELOW_EXPONENT,
    FIXED_FROM_EXPONENT,
    bound_candidates,
)
from duckflock.server.pgwire.types.table import Oid

# some rows of a column -> their wire values, encoded one by one (None: NULL)
PerValue = Callable[[pa.Array], list[bytes | None]]

_MICROS_1970_TO_2000 = temporal.DAYS_1970_TO_2000 * temporal.MICROS_PER_DAY
# what Python's date and datetime hold (years 1 to 9999), in days and seconds since 1970
_FIRST_DAY, _LAST_DAY = -719_162, 2_932_896
_FIRST_SECOND, _END_SECOND = _FIRST_DAY * 86_400, (_LAST_DAY + 1) * 86_400
_WIDTHS: dict[int, str] = {Oid.INT2: ">i2", Oid.INT4: ">i4", Oid.INT8: ">i8"}
_HEX = np.frombuffer(b"".join(b"%02x" % i for i in range(256)), np.uint8).reshape(256, 2)
_INTERVAL = np.dtype([("months", "<i4"), ("days", "<i4"), ("nanos", "<i8")])
_INTERVAL_WIRE = np.dtype([("micros", ">i8"), ("days", ">i4"), ("months", ">i4")])


def encode_column(column: pa.Array, oid: int, fmt: Format, per_value: PerValue) -> pa.Array | None:
    """``column``'s wire values (a binary array, NULL as null), or None when its type is
    encoded value by value."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
        kind = column.type
    binary = fmt == Format.BINARY
    if oid in (Oid.TEXT, Oid.JSON) or (oid == Oid.UUID and not binary):
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return _utf8(column)
        return None
    if oid in _WIDTHS or (oid == Oid.NUMERIC and not binary):
        return _integers(column, oid, binary, per_value)
    if oid in (Oid.FLOAT4, Oid.FLOAT8) and pa.types.is_floating(kind):
        return _floats(column, oid, binary, per_value)
    if oid == Oid.BOOL and pa.types.is_boolean(kind):
        return _booleans(column, binary)
    if oid == Oid.DATE and pa.types.is_date32(kind):
        return _dates(column, binary, per_value)
    if oid in (Oid.TIMESTAMP, Oid.TIMESTAMPTZ) and pa.types.is_timestamp(kind):
        return _timestamps(column, binary, per_value)
    if oid == Oid.TIME and pa.types.is_time64(kind) and kind.unit == "us":
        return _times(column, binary, per_value)
    if oid == Oid.INTERVAL and kind == pa.month_day_nano_interval():
        return _intervals(column, binary)
    if oid == Oid.BYTEA and pa.types.is_binary(kind):
        return column if binary else _hex(column)
    return None


# -- building blocks -------------------------------------------------------------------------


def _numbers(column: pa.Array, dtype: str) -> np.ndarray:
    """The values buffer of a fixed-width column as numpy (nulls hold anything)."""
    data = np.frombuffer(column.buffers()[1], dtype=dtype)
    return data[column.offset : column.offset + len(column)]


def _validity(column: pa.Array) -> pa.Buffer | None:
    return None if column.null_count == 0 else pc.is_valid(column).buffers()[1]


def _fixed(values: np.ndarray, column: pa.Array) -> pa.Array:
    """Fixed-width wire values (big-endian numpy values) as a binary array, with
    ``column``'s nulls."""
    count, width = len(values), values.dtype.itemsize
    offsets = np.arange(0, (count + 1) * width, width, dtype=np.int32)
    data = np.ascontiguousarray(values).view(np.uint8)
    buffers = [_validity(column), pa.py_buffer(offsets), pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.binary(), count, buffers, null_count=column.null_count)


def _patch(
    values: pa.Array, special: np.ndarray, column: pa.Array, per_value: PerValue
) -> pa.Array:
    """``values`` with the ``special`` rows encoded one by one instead."""
    if not special.any():
        return values
    mask = pa.array(special)
    encoded = per_value(column.filter(mask))
    return pc.replace_with_mask(values, mask, pa.array(encoded, values.type))


def _blank(column: pa.Array, special: np.ndarray) -> pa.Array:
    """``column`` with the ``special`` rows null (Arrow cannot spell them; they are
    patched in afterwards)."""
    if not special.any():
        return column
    return pc.if_else(pa.array(special), pa.scalar(None, column.type), column)


def _utf8(strings: pa.Array) -> pa.Array:
    """Text as bytes: the same buffers (a cast would copy them)."""
    return strings.view(
        pa.large_binary() if pa.types.is_large_string(strings.type) else pa.binary()
    )


def _dtype(kind: pa.DataType) -> str:
    """The numpy dtype of an Arrow integer or floating type."""
    letter = "f" if pa.types.is_floating(kind) else "i" if pa.types.is_signed_integer(kind) else "u"
    return f"{letter}{kind.bit_width // 8}"


# -- families --------------------------------------------------------------------------------


def _integers(column: pa.Array, oid: int, binary: bool, per_value: PerValue) -> pa.Array | None:
    """Integers (text or binary); numeric's text of integers and decimals (Arrow spells
    decimals as ``format(Decimal, "f")`` does, but for scientific notation below 1e-6:
    those rows go one by one)."""
    if pa.types.is_decimal(column.type) and not binary:
        text = column.cast(pa.string())
        special = pc.fill_null(pc.match_substring(text, "E"), False)
        return _patch(_utf8(text), special.to_numpy(zero_copy_only=False), column, per_value)
    if not pa.types.is_integer(column.type):
        return None
    if not binary:
        return _utf8(column.cast(pa.string()))
    return _fixed(_numbers(column, _dtype(column.type)).astype(_WIDTHS[oid]), column)


def _floats(column: pa.Array, oid: int, binary: bool, per_value: PerValue) -> pa.Array:
    # float4 in float32 (its shortest digits are float32's), float8 in float64
    width = pa.float32() if oid == Oid.FLOAT4 else pa.float64()
    if column.type != width:
        column = column.cast(width)
    numbers = _numbers(column, _dtype(width))
    if binary:
        return _fixed(numbers.astype(">f4" if oid == Oid.FLOAT4 else ">f8"), column)
    # PostgreSQL's text (numeric.float_text): Arrow's cast spells the same shortest
    # digits, in fixed notation from 1e-6 to 1e10 (PostgreSQL's: 1e-4 to 1e15, float4
    # 1e6), in exponent notation else (one exponent digit down to 1e-9; PostgreSQL at
    # least two). Where the notations differ the regular expressions of _RESPELL turn
    # one into the other; float8's integral values from 1e10 to 1e15 (epoch
    # milliseconds) are their integer; NaN, the infinities and the rows whose Arrow
    # digits may be a rounding bound (PostgreSQL's never are) go one by one.
    one = numbers.dtype.type
    fixed_low, fixed_high = one(10.0**FIXED_FROM_EXPONENT), one(10.0 ** FIXED_BELOW_EXPONENT[oid])
    arrow_high, short_exponent = one(1e10), one(1e-10)
    with np.errstate(invalid="ignore"):
        size = np.abs(numbers)
        special = ~np.isfinite(numbers) | bound_candidates(numbers, oid)
        integral = (size >= arrow_high) & (size < fixed_high) & (numbers == np.trunc(numbers))
        respelled = (
            ~special
            & ~integral
            & (
                (size >= short_exponent) & (size < fixed_low)  # 1e-05 (Arrow 0.00001, 1e-7)
                | (size >= fixed_high) & (size < arrow_high)  # float4's 1.6777216e+07
                | (size >= arrow_high) & (size < fixed_high)  # float8's 12345678901.5
            )
        )
    if column.null_count:
        valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
        special &= valid
        integral &= valid
    text = _blank(column, special | integral).cast(pa.string())
    if respelled.any():
        # the first digit's decimal exponent (the powers of ten in the float's own type)
        exponent = np.full(len(numbers), 99)
        powers = _POWERS.astype(numbers.dtype)
        exponent[respelled] = np.searchsorted(powers, size[respelled], side="right") - 11
        for power in np.unique(exponent[respelled]):
            mask = pa.array(exponent == power)
            part = text.filter(mask)
            for pattern, replacement in _respelling(int(power)):
                part = pc.replace_substring_regex(part, pattern, replacement)
            text = pc.replace_with_mask(text, mask, part)
    if integral.any():
        mask = pa.array(integral)
        whole = pa.array(numbers[integral].astype(np.int64)).cast(pa.string())
        text = pc.replace_with_mask(text, mask, whole)
    return _patch(_utf8(text), special, column, per_value)


_POWERS = np.array([float(f"1e{power}") for power in range(-10, 16)])  # 1e-10 .. 1e15


def _respelling(power: int) -> list[tuple[str, str]]:
    """Regular expressions turning Arrow's text of a float whose first digit's exponent
    is ``power`` into PostgreSQL's, where their notations differ (a row is matched by
    one of them): 1.5e-7 -> 1.5e-07; 0.0000123 -> 1.23e-05; float4's 16777216 ->
    1.6777216e+07 (then the mantissa's trailing zeros and point go: 1.0000000e+07 ->
    1e+07); float8's 1.23456789015e+10 -> 12345678901.5."""
    if power <= -7:
        return [(r"e-(\d)$", r"e-0\1")]
    if power < 0:
        zeros = "0" * (-power - 1)
        return [
            (rf"^(-?)0\.{zeros}(\d)$", rf"\1\2e{power:+03d}"),
            (rf"^(-?)0\.{zeros}(\d)(\d+)$", rf"\1\2.\3e{power:+03d}"),
        ]
    if power < 10:
        return [
            (rf"^(-?)(\d)(\d{{{power}}})(?:\.(\d+))?$", rf"\1\2.\3\4e{power:+03d}"),
            (r"\.?0+e", "e"),
        ]
    return [(rf"^(-?)(\d)\.(\d{{{power}}})(\d+)e\+{power}$", r"\1\2\3.\4")]


def _booleans(column: pa.Array, binary: bool) -> pa.Array:
    """One byte a value: 1 and 0 in binary, ``t`` and ``f`` in text (the bits unpacked
    by numpy: about half the CPU of Arrow's ``if_else`` on binary scalars)."""
    bits = np.unpackbits(np.frombuffer(column.buffers()[1], np.uint8), bitorder="little")
    bits = bits[column.offset : column.offset + len(column)]
    values = bits if binary else np.where(bits, np.uint8(ord("t")), np.uint8(ord("f")))
    return _fixed(values, column)


def _dates(column: pa.Array, binary: bool, per_value: PerValue) -> pa.Array:
    days = _numbers(column, "int32")
    special = (days < _FIRST_DAY) | (days > _LAST_DAY)
    if column.null_count:
        special &= pc.is_valid(column).to_numpy(zero_copy_only=False)
    if binary:
        values = _fixed((days.astype(np.int64) - temporal.DAYS_1970_TO_2000).astype(">i4"), column)
    else:
        values = _utf8(_blank(column, special).cast(pa.string()))
    return _patch(values, special, column, per_value)


def _timestamps(column: pa.Array, binary: bool, per_value: PerValue) -> pa.Array:
    kind = column.type
    ticks = _numbers(column, "int64")
    per_second = temporal.TICKS_PER_SECOND[kind.unit]
    low = max(_FIRST_SECOND * per_second, -temporal.TIMESTAMP_INFINITY + 1)
    high = min(_END_SECOND * per_second - 1, temporal.TIMESTAMP_INFINITY - 1)
    special = (ticks < low) | (ticks > high)  # and the infinities, the int64 extremes
    if column.null_count:
        special &= pc.is_valid(column).to_numpy(zero_copy_only=False)
    # microseconds, as the per-value path has them (nanoseconds: Arrow's cast, toward zero)
    micros = _blank(column, special)
    if kind.unit == "us":  # the same numbers: a view, not a copying cast
        micros = micros.view(pa.timestamp("us"))
    else:
        micros = micros.cast(pa.timestamp("us"), safe=False)
    if binary:
        since_2000 = _numbers(micros, "int64") - _MICROS_1970_TO_2000
        values = _fixed(since_2000.astype(">i8"), micros)
    else:
        # Arrow: 2024-01-02 03:04:05.500000; PostgreSQL: 2024-01-02 03:04:05.5
        text = _fraction_trimmed(micros)
        if kind.tz is not None:  # sent in UTC, which Arrow holds
            text = pc.binary_join_element_wise(text, b"+00", b"")
        values = text
    return _patch(values, special, column, per_value)


def _times(column: pa.Array, binary: bool, per_value: PerValue) -> pa.Array:
    micros = _numbers(column, "int64")
    if binary:
        return _fixed(micros.astype(">i8"), column)
    special = (micros < 0) | (micros >= temporal.MICROS_PER_DAY)  # 24:00:00
    if column.null_count:
        special &= pc.is_valid(column).to_numpy(zero_copy_only=False)
    text = _fraction_trimmed(_blank(column, special))
    return _patch(text, special, column, per_value)


def _fraction_trimmed(moments: pa.Array) -> pa.Array:
    """Timestamps or times of day (microseconds) as Arrow spells them, with their
    fraction's trailing zeros trimmed, and its point when nothing is left after it
    (``10:00:00.500000`` -> ``10:00:00.5``, ``10:00:00.000000`` -> ``10:00:00``), as
    PostgreSQL spells them."""
    text = _utf8(pc.fill_null(moments, 0).cast(pa.string()))  # one width: years 1 to 9999
    offsets = _offsets(text)
    width = int(offsets[1] - offsets[0]) if len(text) else 0
    if (np.diff(offsets) != width).any():  # not one width after all: Arrow's regex
        trimmed = pc.replace_substring_regex(moments.cast(pa.string()), r"\.?0+$", "")
        return _utf8(trimmed)
    # one width: each has the point and six digits, and the point is the only one
    trimmed = pc.ascii_rtrim(pc.ascii_rtrim(text.view(pa.string()), "0"), ".")
    return _with_nulls(_utf8(trimmed), moments)


def _with_nulls(values: pa.Array, column: pa.Array) -> pa.Array:
    """``values`` (a binary array without nulls) with ``column``'s nulls."""
    if not column.null_count:
        return values
    buffers = [_validity(column), *values.buffers()[1:]]
    return pa.Array.from_buffers(values.type, len(values), buffers, null_count=column.null_count)


def _intervals(column: pa.Array, binary: bool) -> pa.Array:
    parts = np.frombuffer(column.buffers()[1], dtype=_INTERVAL)
    parts = parts[column.offset : column.offset + len(column)]
    micros = parts["nanos"] // 1000  # toward minus infinity, as Python's // does
    if binary:
        wire = np.empty(len(parts), dtype=_INTERVAL_WIRE)
        wire["micros"], wire["days"], wire["months"] = micros, parts["days"], parts["months"]
        return _fixed(wire.view("V16"), column)
    # PostgreSQL's text (datetime.interval_text): its shown parts joined by spaces
    months = parts["months"].astype(np.int64)
    years = np.abs(months) // 12 * np.sign(months)  # toward zero, as interval_fields
    fields = ((years, "year"), (months - years * 12, "mon"), (parts["days"], "day"))
    shown: list[pa.Array] = []
    before = np.zeros(len(parts), dtype=bool)  # the last field shown is negative
    for value, unit in fields:
        if not value.any():  # a field no row shows (no months, say)
            continue
        plus = pc.if_else(pa.array(before & (value > 0)), "+", "")
        plural = pc.if_else(pa.array(value == 1), "", "s")
        text = pc.binary_join_element_wise(plus, _digits(value), f" {unit}", plural, "")
        shown.append(pc.if_else(pa.array(value != 0), text, pa.scalar(None, pa.string())))
        before = np.where(value != 0, value < 0, before)
    empty = (months == 0) & (parts["days"] == 0)
    seconds, fraction = np.divmod(np.abs(micros), 1_000_000)
    sign = pc.if_else(pa.array(micros < 0), "-", pc.if_else(pa.array(before), "+", ""))
    clock = pc.binary_join_element_wise(
        _digits(seconds // 3600, 2), _digits(seconds // 60 % 60, 2), _digits(seconds % 60, 2), ":"
    )
    point = pc.utf8_rtrim(pc.binary_join_element_wise(".", _digits(fraction, 6), ""), "0")
    clock = pc.binary_join_element_wise(
        sign, clock, pc.if_else(pa.array(fraction != 0), point, ""), ""
    )
    shown.append(pc.if_else(pa.array((micros != 0) | empty), clock, pa.scalar(None, pa.string())))
    text = pc.binary_join_element_wise(*shown, " ", null_handling="skip")
    return _utf8(pc.if_else(pc.is_valid(column), text, pa.scalar(None, pa.string())))


def _digits(numbers: np.ndarray, width: int = 0) -> pa.Array:
    """Integers as decimal text, zero-padded to ``width``."""
    text = pa.array(numbers).cast(pa.string())
    return pc.utf8_lpad(text, width, "0") if width else text


def _hex(column: pa.Array) -> pa.Array:
    """bytea's text form, ``\\x`` and two hex digits a byte, for a whole column."""
    offsets = _offsets(column)
    data = np.frombuffer(column.buffers()[2] or b"", np.uint8)[offsets[0] : offsets[-1]]
    digits = _HEX[data].reshape(-1)
    rebased = (offsets - offsets[0]) * 2
    hexed = pa.Array.from_buffers(
        pa.binary(),
        len(column),
        [_validity(column), pa.py_buffer(rebased.astype(np.int32)), pa.py_buffer(digits)],
        null_count=column.null_count,
    )
    return pc.binary_join_element_wise(pa.scalar(b"\\x", pa.binary()), hexed, b"")


def _offsets(column: pa.Array) -> np.ndarray:
    """A binary or string column's offsets (int64), from its own offset on."""
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int32)
    return offsets[column.offset : column.offset + len(column) + 1].astype(np.int64)
