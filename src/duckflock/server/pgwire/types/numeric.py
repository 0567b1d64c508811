"""Numbers: smallint, integer, bigint, oid, real, double precision, numeric."""

from __future__ import annotations

import decimal
import struct
from typing import Any

from duckflock.server.pgwire.types.adapt import I2, I4, I8, Adapter
from duckflock.server.pgwire.types.table import Oid

_F4, _F8 = struct.Struct("!f"), struct.Struct("!d")


def _int_text(value: Any) -> bytes:
    return str(value).encode()


def _float_text(value: float) -> bytes:
    if value != value:
        return b"NaN"
    if value in (float("inf"), float("-inf")):
        return b"Infinity" if value > 0 else b"-Infinity"
    return repr(value).encode()


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


def _numeric_from_binary(data: bytes) -> decimal.Decimal:
    count, weight, sign, scale = struct.unpack_from("!hhHh", data)
    if sign == 0xC000:
        return decimal.Decimal("NaN")
    groups = struct.unpack_from(f"!{count}H", data, 8)
    value = decimal.Decimal(0)
    for i, group in enumerate(groups):
        value += decimal.Decimal(group).scaleb(4 * (weight - i))
    value = value.quantize(decimal.Decimal(1).scaleb(-scale)) if scale else value
    return -value if sign == 0x4000 else value


def _unpacker(packer: struct.Struct) -> Any:
    return lambda data: packer.unpack(data)[0]


ADAPTERS = (
    Adapter(Oid.INT2, _int_text, I2.pack, int, _unpacker(I2)),
    Adapter(Oid.INT4, _int_text, I4.pack, int, _unpacker(I4)),
    Adapter(Oid.INT8, _int_text, I8.pack, int, _unpacker(I8)),
    Adapter(Oid.OID, load_text=int, load_binary=_unpacker(I4)),
    Adapter(Oid.FLOAT4, _float_text, _F4.pack, float, _unpacker(_F4)),
    Adapter(Oid.FLOAT8, _float_text, _F8.pack, float, _unpacker(_F8)),
    Adapter(Oid.NUMERIC, _numeric_text, numeric_binary, decimal.Decimal, _numeric_from_binary),
)
