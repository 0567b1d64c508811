"""Numbers: smallint, integer, bigint, oid, real, double precision, numeric."""

from __future__ import annotations

import decimal
import math
import struct
from typing import Any

import numpy as np

from duckflock.core.decimals import exact
from duckflock.server.pgwire.types.adapt import I2, I4, I8, Adapter
from duckflock.server.pgwire.types.table import Oid

_F4, _F8 = struct.Struct("!f"), struct.Struct("!d")


def _int_text(value: Any) -> bytes:
    return str(value).encode()


# PostgreSQL's float4out/float8out (extra_float_digits 1, its default since 12): the
# shortest digits that read back as the same float4/float8 (Ryu), in fixed notation when
# the first digit's decimal exponent is from -4 up to (not including) this, else as
# 1.5e+15 / 1e-05 (a sign and at least two exponent digits, as C's %e)
FIXED_BELOW_EXPONENT: dict[int, int] = {Oid.FLOAT4: 6, Oid.FLOAT8: 15}
FIXED_FROM_EXPONENT = -4


# From here on every float4/float8 is an integer whose rounding bounds (half a unit
# either side) can be decimals as short as its shortest digits: 2^24 and 2^53. Below,
# a bound is a binary fraction with more digits than any shortest digits have.
ROUND_BOUNDS_FROM: dict[int, float] = {Oid.FLOAT4: 2.0**24, Oid.FLOAT8: 2.0**53}
_MOST_DIGITS: dict[int, int] = {Oid.FLOAT4: 9, Oid.FLOAT8: 17}
_MANTISSA_BITS: dict[int, int] = {Oid.FLOAT4: 24, Oid.FLOAT8: 53}


def _shortest(value: float, oid: int) -> tuple[str, int]:
    """The shortest digits of a finite ``value`` > 0 strictly between its rounding
    bounds as ``oid``'s float, and the first one's exponent.

    Python's repr and numpy's float32 str give the shortest digits; but where those are
    a bound itself (which reads back as ``value`` by ties-to-even), PostgreSQL's Ryu
    takes the shortest digits strictly inside: 2.003485544858745e+16 (a bound) is
    -2.0034855448587448e+16 there."""
    text = str(np.float32(value)) if oid == Oid.FLOAT4 else repr(value)
    if value >= ROUND_BOUNDS_FROM[oid] and not _inside(text, value, oid):
        for count in range(len(text.replace(".", "").split("e")[0]), _MOST_DIGITS[oid] + 1):
            text = f"{value:.{count - 1}e}"
            if _inside(text, value, oid):
                break
    if "e" in text:
        mantissa, exponent = text.split("e")
        return mantissa.replace(".", "").rstrip("0") or "0", int(exponent)
    whole, fraction = text.split(".")
    if whole != "0":
        return (whole + fraction).rstrip("0"), len(whole) - 1
    digits = fraction.lstrip("0")
    return digits.rstrip("0"), len(digits) - len(fraction) - 1


def _inside(text: str, value: float, oid: int) -> bool:
    """Whether the decimal ``text`` is strictly between the rounding bounds of
    ``value`` (an integer: at least ROUND_BOUNDS_FROM), in quarters of a unit."""
    mantissa, exponent = math.frexp(value)  # a normal value: 0.5 <= mantissa < 1
    gap = 1 << (exponent - _MANTISSA_BITS[oid])  # at least 2
    below = gap if mantissa == 0.5 else 2 * gap  # a power of two: a finer step below
    exact = 4 * int(value)
    digits, _, power = text.partition("e")
    whole, _, fraction = digits.partition(".")
    scale = int(power or 0) - len(fraction)
    number = int(whole + fraction)
    if scale < 0:  # a fraction: inside unless it is a quarter's multiple on a bound
        quarters, rest = divmod(4 * number, 10**-scale)
        return bool(rest) or exact - below < quarters < exact + 2 * gap
    return bool(exact - below < 4 * number * 10**scale < exact + 2 * gap)


def bound_candidates(numbers: np.ndarray, oid: int) -> np.ndarray:
    """Which of ``numbers`` (oid's floats) may have a rounding bound as their shortest
    digits (Arrow's cast, Python's repr), which PostgreSQL's are not: a necessary
    condition, for the columnar path to send only those rows one by one.

    A value at least ROUND_BOUNDS_FROM is ``m * 2^q`` (``m`` the integer mantissa), its
    bounds ``(2m ± 1) * 2^(q-1)`` (``4m - 1`` below a power of two). Between them lie
    about ``2^q`` (at least 3/4 of it): a multiple of every ``10^k < 0.75 * 2^q``, so a
    bound can be shorter only when its odd factor has at least ``k`` factors five (and
    one at least: a bound without a trailing zero is never shorter than the value)."""
    bits = _MANTISSA_BITS[oid]
    with np.errstate(invalid="ignore"):  # NaN (signalling ones too)
        size = np.abs(numbers.astype(np.float64))
        big = (size >= ROUND_BOUNDS_FROM[oid]) & np.isfinite(size)
    if not big.any():  # most columns: the mantissa arithmetic below costs as much as a cast
        return big
    found = np.zeros(len(big), bool)
    found[big] = _bound_candidates(size[big], bits)
    return found


def _bound_candidates(size: np.ndarray, bits: int) -> np.ndarray:
    """:func:`bound_candidates` of finite values at least ROUND_BOUNDS_FROM (float64)."""
    fraction, exponent = np.frexp(size)
    m = np.ldexp(fraction, bits).astype(np.int64)
    q = exponent.astype(np.int64) - bits
    fives = np.floor(q * math.log10(2) + math.log10(0.75) - 1e-9).astype(np.int64)
    most = int(math.log(2.0 ** (bits + 1), 5))  # more fives than an odd factor holds
    divisor = 5 ** np.clip(fives, 1, most)
    down = np.where(m == 1 << (bits - 1), 4 * m - 1, 2 * m - 1)
    found = ((2 * m + 1) % divisor == 0) | (down % divisor == 0)
    return (fives <= most) & found  # type: ignore[no-any-return]


def float_text(value: float, oid: int) -> bytes:
    """A float4 or float8 as PostgreSQL's text spells it (``100``, ``1e+15``, ``-0``,
    ``0.1`` for float4's 0.1, ``NaN``, ``-Infinity``)."""
    if math.isnan(value):
        return b"NaN"
    if math.isinf(value):
        return b"Infinity" if value > 0 else b"-Infinity"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return f"{sign}0".encode()
    digits, exponent = _shortest(abs(value), oid)
    if not FIXED_FROM_EXPONENT <= exponent < FIXED_BELOW_EXPONENT[oid]:
        head = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{head}e{exponent:+03d}".encode()
    if exponent < 0:
        return f"{sign}0.{'0' * (-exponent - 1)}{digits}".encode()
    whole, fraction = digits[: exponent + 1].ljust(exponent + 1, "0"), digits[exponent + 1 :]
    return f"{sign}{whole}.{fraction}".encode() if fraction else f"{sign}{whole}".encode()


def _float4_text(value: float) -> bytes:
    return float_text(value, Oid.FLOAT4)


def _float8_text(value: float) -> bytes:
    return float_text(value, Oid.FLOAT8)


def _numeric_text(value: Any) -> bytes:
    if isinstance(value, decimal.Decimal):
        return b"NaN" if value.is_nan() else format(value, "f").encode()
    return str(value).encode()


def numeric_binary(value: Any) -> bytes:
    """PostgreSQL's numeric_send: base-10000 digits with weight, sign and scale."""
    number = decimal.Decimal(value)
    if number.is_nan():
        return struct.pack("!hhHh", 0, 0, 0xC000, 0)
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    scale = max(-exponent, 0)
    text = "".join(map(str, digits))
    if exponent >= 0:
        whole, fraction = text + "0" * exponent, ""
    else:  # 0.000001: the digits are padded to the left of the decimal point first
        padded = text.rjust(-exponent + 1, "0")
        whole, fraction = padded[:exponent], padded[exponent:]
    whole = whole.zfill((len(whole) + 3) // 4 * 4)
    fraction = fraction.ljust((len(fraction) + 3) // 4 * 4, "0")
    groups = [int(whole[i : i + 4]) for i in range(0, len(whole), 4)]
    weight = len(groups) - 1
    groups += [int(fraction[i : i + 4]) for i in range(0, len(fraction), 4)]
    while groups and groups[0] == 0:  # leading zero groups lower the weight
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    head = struct.pack("!hhHh", len(groups), weight, 0x4000 if sign else 0, scale)
    return head + struct.pack(f"!{len(groups)}H", *groups)


def _numeric_from_text(text: str) -> decimal.Decimal:
    return exact(decimal.Decimal(text))  # "1E+2" (psycopg's 100) bound as 100, not 1


def _numeric_from_binary(data: bytes) -> decimal.Decimal:
    count, weight, sign, scale = struct.unpack_from("!hhHh", data)
    if sign == 0xC000:
        return decimal.Decimal("NaN")
    groups = struct.unpack_from(f"!{count}H", data, 8)
    value = decimal.Decimal(0)
    for i, group in enumerate(groups):
        value += decimal.Decimal(group).scaleb(4 * (weight - i))
    value = value.quantize(decimal.Decimal(1).scaleb(-scale)) if scale else value
    return exact(-value if sign == 0x4000 else value)


def _unpacker(packer: struct.Struct) -> Any:
    return lambda data: packer.unpack(data)[0]


ADAPTERS = (
    Adapter(Oid.INT2, _int_text, I2.pack, int, _unpacker(I2)),
    Adapter(Oid.INT4, _int_text, I4.pack, int, _unpacker(I4)),
    Adapter(Oid.INT8, _int_text, I8.pack, int, _unpacker(I8)),
    Adapter(Oid.OID, load_text=int, load_binary=_unpacker(I4)),
    Adapter(Oid.FLOAT4, _float4_text, _F4.pack, float, _unpacker(_F4)),
    Adapter(Oid.FLOAT8, _float8_text, _F8.pack, float, _unpacker(_F8)),
    Adapter(Oid.NUMERIC, _numeric_text, numeric_binary, _numeric_from_text, _numeric_from_binary),
)
