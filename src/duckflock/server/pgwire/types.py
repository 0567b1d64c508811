"""DuckDB types as PostgreSQL sees them: type OIDs, and values in text or binary form.

A column's OID comes from DuckDB's own type name (the cursor's ``description``: Arrow
alone cannot tell JSON or UUID from text); its values come from the Arrow batch. Types
PostgreSQL has no match for (STRUCT, MAP, UNION, BIT, nested lists) are sent as ``text``
holding their JSON, so every client can at least read them. Parameters arrive in text or
binary form with the OID the client chose; they are decoded to Python values DuckDB
binds (text of an unknown type stays a string, and DuckDB casts it where it is used).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import json
import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

# OIDs of the built-in types (pg_type.oid), and their array types
BOOL, BYTEA, INT8, INT2, INT4, TEXT, JSON, FLOAT4, FLOAT8 = 16, 17, 20, 21, 23, 25, 114, 700, 701
UNKNOWN, VARCHAR, BPCHAR, NAME, OID, CHAR = 705, 1043, 1042, 19, 26, 18
DATE, TIME, TIMESTAMP, TIMESTAMPTZ, INTERVAL, TIMETZ = 1082, 1083, 1114, 1184, 1186, 1266
NUMERIC, UUID, JSONB = 1700, 2950, 3802
ARRAY_OF = {
    BOOL: 1000,
    BYTEA: 1001,
    INT2: 1005,
    INT4: 1007,
    TEXT: 1009,
    INT8: 1016,
    FLOAT4: 1021,
    FLOAT8: 1022,
    JSON: 199,
    DATE: 1182,
    TIME: 1183,
    TIMESTAMP: 1115,
    TIMESTAMPTZ: 1185,
    INTERVAL: 1187,
    NUMERIC: 1231,
    UUID: 2951,
}
TYPE_SIZE = {BOOL: 1, INT2: 2, INT4: 4, INT8: 8, FLOAT4: 4, FLOAT8: 8, DATE: 4, TIME: 8}
TYPE_SIZE |= {TIMESTAMP: 8, TIMESTAMPTZ: 8, INTERVAL: 16, UUID: 16}


@dataclass(frozen=True)
class PgType:
    """A built-in type as PostgreSQL's catalog names it: the one table the catalog
    (pg_type, format_type, information_schema) and the parameter casts derive from."""

    name: str  # pg_type.typname, information_schema's udt_name
    spelled: str  # format_type's spelling, information_schema's data_type
    receive: str  # pg_type.typreceive (ADBC maps types by it)
    array: int  # the OID of its array type


PG_TYPES = {
    BOOL: PgType("bool", "boolean", "boolrecv", 1000),
    BYTEA: PgType("bytea", "bytea", "bytearecv", 1001),
    CHAR: PgType("char", '"char"', "charrecv", 1002),
    NAME: PgType("name", "name", "namerecv", 1003),
    INT8: PgType("int8", "bigint", "int8recv", 1016),
    INT2: PgType("int2", "smallint", "int2recv", 1005),
    INT4: PgType("int4", "integer", "int4recv", 1007),
    TEXT: PgType("text", "text", "textrecv", 1009),
    OID: PgType("oid", "oid", "oidrecv", 1028),
    JSON: PgType("json", "json", "json_recv", 199),
    FLOAT4: PgType("float4", "real", "float4recv", 1021),
    FLOAT8: PgType("float8", "double precision", "float8recv", 1022),
    UNKNOWN: PgType("unknown", "unknown", "unknownrecv", 0),
    BPCHAR: PgType("bpchar", "character", "bpcharrecv", 1014),
    VARCHAR: PgType("varchar", "character varying", "varcharrecv", 1015),
    DATE: PgType("date", "date", "date_recv", 1182),
    TIME: PgType("time", "time without time zone", "time_recv", 1183),
    TIMESTAMP: PgType("timestamp", "timestamp without time zone", "timestamp_recv", 1115),
    TIMESTAMPTZ: PgType("timestamptz", "timestamp with time zone", "timestamptz_recv", 1185),
    INTERVAL: PgType("interval", "interval", "interval_recv", 1187),
    TIMETZ: PgType("timetz", "time with time zone", "timetz_recv", 1270),
    NUMERIC: PgType("numeric", "numeric", "numeric_recv", 1231),
    UUID: PgType("uuid", "uuid", "uuid_recv", 2951),
    JSONB: PgType("jsonb", "jsonb", "jsonb_recv", 3807),
}

_SCALARS = {
    "BOOLEAN": BOOL,
    "TINYINT": INT2,
    "SMALLINT": INT2,
    "UTINYINT": INT2,
    "INTEGER": INT4,
    "USMALLINT": INT4,
    "BIGINT": INT8,
    "UINTEGER": INT8,
    "UBIGINT": NUMERIC,
    "HUGEINT": NUMERIC,
    "UHUGEINT": NUMERIC,
    "BIGNUM": NUMERIC,
    "VARINT": NUMERIC,
    "FLOAT": FLOAT4,
    "DOUBLE": FLOAT8,
    "VARCHAR": TEXT,
    "BLOB": BYTEA,
    "DATE": DATE,
    "TIME": TIME,
    "TIMESTAMP": TIMESTAMP,
    "TIMESTAMP_S": TIMESTAMP,
    "TIMESTAMP_MS": TIMESTAMP,
    "TIMESTAMP_NS": TIMESTAMP,
    "TIMESTAMP WITH TIME ZONE": TIMESTAMPTZ,
    "INTERVAL": INTERVAL,
    "UUID": UUID,
    "JSON": JSON,
}
_EPOCH_DATE = dt.date(2000, 1, 1)
_EPOCH = dt.datetime(2000, 1, 1)
_EPOCH_TZ = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Clock:
    """A time of day in microseconds: Python's time stops before 24:00:00, which DuckDB
    and PostgreSQL both have (it arrived as 00:00:00)."""

    micros: int

    def __str__(self) -> str:
        seconds, micro = divmod(self.micros, 1_000_000)
        text = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        return f"{text}.{micro:06d}" if micro else text


@dataclass(frozen=True)
class Beyond:
    """A date or timestamp Python's datetime cannot hold (``infinity``, a year before 1
    or past 9999) that PostgreSQL can: ``text`` is its PostgreSQL text (``0044-03-15
    BC``), ``since_2000`` its binary value (days or microseconds from 2000-01-01;
    PostgreSQL's infinities are the integer type's extremes)."""

    text: bytes
    since_2000: int


@dataclass(frozen=True)
class Unrepresentable:
    """A date or timestamp DuckDB holds and PostgreSQL cannot (a DATE past 5874897 AD,
    anything before 4713 BC): its encoders raise :class:`OutOfRange`; inside JSON text
    (a struct, a map) it is DuckDB's own spelling."""

    text: str
    kind: str  # date or timestamp


class OutOfRange(ValueError):
    """A value PostgreSQL's type cannot carry (SQLSTATE 22008, naming the column)."""


def _representable(value: Beyond | Unrepresentable) -> Beyond:
    if isinstance(value, Unrepresentable):
        raise OutOfRange(f"{value.kind} out of range for PostgreSQL: {value.text}")
    return value


_I2, _I4, _I8 = struct.Struct("!h"), struct.Struct("!i"), struct.Struct("!q")
_F4, _F8 = struct.Struct("!f"), struct.Struct("!d")
_INTERVAL = struct.Struct("!qii")

Encoder = Callable[[Any], bytes]


@dataclass(frozen=True)
class ColumnType:
    """How one result column goes over the wire."""

    oid: int
    size: int  # pg_type.typlen: -1 for variable length
    text: Encoder  # a non-null Python value -> text form
    binary: Encoder  # a non-null Python value -> binary form


def _oid_of(duck_type: str) -> int | None:
    if re.search(r"\[\d*\]$", duck_type):  # a list: DECIMAL(3,1)[] is not a numeric
        return None
    if duck_type.startswith("DECIMAL"):
        return NUMERIC
    if duck_type.startswith("ENUM"):
        return TEXT
    return _SCALARS.get(duck_type)


def column_type(duck_type: str) -> ColumnType:
    """The wire form of a column whose DuckDB type is named ``duck_type``."""
    oid = _oid_of(duck_type)
    if oid is not None:
        return ColumnType(oid, TYPE_SIZE.get(oid, -1), _TEXT[oid], _BINARY[oid])
    element = re.fullmatch(r"(.+)\[\]", duck_type)
    inner = _oid_of(element.group(1)) if element else None
    if inner is not None:
        text_of, binary_of = _TEXT[inner], _BINARY[inner]
        quoted = inner in (TEXT, JSON, BYTEA, UUID, TIMESTAMP, TIMESTAMPTZ, INTERVAL, DATE, TIME)
        return ColumnType(
            ARRAY_OF[inner],
            -1,
            lambda v: _text_array(v, text_of, quoted),
            lambda v: _binary_array(v, inner, binary_of),
        )
    # no PostgreSQL match: JSON text that any client can read
    return ColumnType(TEXT, -1, _as_json_text, _as_json_text)


# -- text forms ------------------------------------------------------------------------------


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


def _datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    found: dt.datetime = value.to_pydatetime()  # a pandas Timestamp (nanoseconds)
    return found


def _timestamp_text(value: Any) -> bytes:
    if isinstance(value, Beyond | Unrepresentable):
        return _representable(value).text
    moment = _datetime(value)
    zone = b""
    if moment.tzinfo is not None:
        moment, zone = moment.astimezone(dt.UTC).replace(tzinfo=None), b"+00"
    text = moment.isoformat(sep=" ").encode()
    return (text.rstrip(b"0") if moment.microsecond else text) + zone  # .5, as PostgreSQL


def _interval_parts(value: Any) -> tuple[int, int, int]:
    """(months, days, microseconds) of a month_day_nano value or a timedelta."""
    if isinstance(value, dt.timedelta):
        return 0, value.days, value.seconds * 1_000_000 + value.microseconds
    return int(value.months), int(value.days), int(value.nanoseconds) // 1000


def _interval_text(value: Any) -> bytes:
    months, days, micros = _interval_parts(value)
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    seconds, micro = divmod(micros, 1_000_000)
    clock = f"{sign}{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    if micro:
        clock += f".{micro:06d}"
    return f"{months} mons {days} days {clock}".encode()


def _json_default(value: Any) -> str:
    if isinstance(value, Beyond):
        return value.text.decode()
    return value.text if isinstance(value, Unrepresentable) else str(value)


def _as_json_text(value: Any) -> bytes:
    """Nested values as JSON; a scalar PostgreSQL has no type for (TIMETZ, BIT) as its
    own text."""
    if isinstance(value, bytes):  # BIT's storage, say: as bytea's text, valid UTF-8
        return b"\\x" + value.hex().encode()
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=_json_default, ensure_ascii=False).encode()
    return str(value).encode()


def _text_array(values: list[Any], encode: Encoder, quoted: bool) -> bytes:
    parts = []
    for value in values:
        if value is None:
            parts.append(b"NULL")
            continue
        text = encode(value)
        if quoted or not text or re.search(rb'[{},"\\\s]', text) or text.upper() == b"NULL":
            text = b'"' + text.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        parts.append(text)
    return b"{" + b",".join(parts) + b"}"


_TEXT: dict[int, Encoder] = {
    BOOL: lambda v: b"t" if v else b"f",
    INT2: lambda v: str(v).encode(),
    INT4: lambda v: str(v).encode(),
    INT8: lambda v: str(v).encode(),
    FLOAT4: _float_text,
    FLOAT8: _float_text,
    NUMERIC: _numeric_text,
    TEXT: lambda v: v.encode() if isinstance(v, str) else str(v).encode(),
    JSON: lambda v: v.encode() if isinstance(v, str) else _as_json_text(v),
    BYTEA: lambda v: b"\\x" + bytes(v).hex().encode(),
    DATE: lambda v: (
        _representable(v).text
        if isinstance(v, Beyond | Unrepresentable)
        else v.isoformat().encode()
    ),
    TIME: lambda v: str(v).encode() if isinstance(v, Clock) else v.isoformat().encode(),
    TIMESTAMP: _timestamp_text,
    TIMESTAMPTZ: _timestamp_text,
    INTERVAL: _interval_text,
    UUID: lambda v: str(v).encode(),
}

# -- binary forms ----------------------------------------------------------------------------


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


def _micros_since_2000(value: Any) -> int:
    if isinstance(value, Beyond | Unrepresentable):
        return _representable(value).since_2000
    moment = _datetime(value)
    delta = moment - (_EPOCH if moment.tzinfo is None else _EPOCH_TZ)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _days_since_2000(value: Any) -> int:
    if isinstance(value, Beyond | Unrepresentable):
        return _representable(value).since_2000
    return int((value - _EPOCH_DATE).days)


def _time_binary(value: Any) -> bytes:
    if isinstance(value, Clock):
        return _I8.pack(value.micros)
    micros = ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000
    return _I8.pack(micros + value.microsecond)


def _interval_binary(value: Any) -> bytes:
    months, days, micros = _interval_parts(value)
    return _INTERVAL.pack(micros, days, months)


_BINARY: dict[int, Encoder] = {
    BOOL: lambda v: b"\x01" if v else b"\x00",
    INT2: _I2.pack,
    INT4: _I4.pack,
    INT8: _I8.pack,
    FLOAT4: _F4.pack,
    FLOAT8: _F8.pack,
    NUMERIC: numeric_binary,
    TEXT: _TEXT[TEXT],
    JSON: _TEXT[JSON],
    BYTEA: bytes,
    DATE: lambda v: _I4.pack(_days_since_2000(v)),
    TIME: _time_binary,
    TIMESTAMP: lambda v: _I8.pack(_micros_since_2000(v)),
    TIMESTAMPTZ: lambda v: _I8.pack(_micros_since_2000(v)),
    INTERVAL: _interval_binary,
    UUID: lambda v: uuid.UUID(str(v)).bytes,
}


def _binary_array(values: list[Any], element: int, encode: Encoder) -> bytes:
    has_null = any(v is None for v in values)
    out = [struct.pack("!iiiii", 1, int(has_null), element, len(values), 1)]
    for value in values:
        if value is None:
            out.append(b"\xff\xff\xff\xff")
        else:
            data = encode(value)
            out.append(_I4.pack(len(data)) + data)
    return b"".join(out)


_ARROW_TEXT = {INT2, INT4, INT8, TEXT, JSON, UUID}  # Arrow's own cast spells these as we do


def encoded_by_arrow(
    column: pa.Array | pa.ChunkedArray, oid: int, binary: bool
) -> list[bytes | None] | None:
    """The column's values in wire form, cast by Arrow in one call instead of one Python
    call per value; None when this type needs the Python encoders."""
    if oid not in _ARROW_TEXT or (binary and oid not in (TEXT, JSON)):
        return None
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if not (pa.types.is_integer(column.type) or pa.types.is_string(column.type)):
        return None
    if not pa.types.is_string(column.type):
        column = column.cast(pa.string())
    return column.cast(pa.binary()).to_pylist()  # type: ignore[no-any-return]


def column_values(column: pa.Array | pa.ChunkedArray, duck_type: str) -> list[Any]:
    """The Python values of one Arrow column (dictionary-encoded ENUMs as strings)."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    return _values(column)


def _has_moments(kind: pa.DataType) -> bool:
    if pa.types.is_date32(kind) or pa.types.is_timestamp(kind) or pa.types.is_time(kind):
        return True
    if pa.types.is_map(kind):
        return _has_moments(kind.key_type) or _has_moments(kind.item_type)
    if pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind):
        return _has_moments(kind.value_type)
    if pa.types.is_struct(kind):
        return any(_has_moments(field.type) for field in kind)
    return False


def _values(column: pa.Array | pa.ChunkedArray) -> list[Any]:
    """Python values, with dates, timestamps and times as :func:`_moments` and
    :func:`_clocks` give them, nested ones too (an infinite date in a list failed the
    whole result with XX000)."""
    kind = column.type
    if not _has_moments(kind):
        return column.to_pylist()  # type: ignore[no-any-return]
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_date32(kind) or pa.types.is_timestamp(kind):
        return _moments(column)
    if pa.types.is_time(kind):
        return _clocks(column)
    nulls = column.is_null().to_pylist()
    if pa.types.is_struct(kind):
        fields = [_values(part) for part in column.flatten()]
        names = [field.name for field in kind]
        return [
            None if null else {name: values[i] for name, values in zip(names, fields, strict=True)}
            for i, null in enumerate(nulls)
        ]
    if pa.types.is_fixed_size_list(kind):
        size, start = kind.list_size, column.offset * kind.list_size
        inner = _values(column.values[start : start + size * len(column)])
        return [None if null else inner[i * size : (i + 1) * size] for i, null in enumerate(nulls)]
    offsets = column.offsets.to_pylist()  # lists and maps: into the whole child array
    if pa.types.is_map(kind):
        keys, items = _values(column.keys), _values(column.items)
        inner = list(zip(keys, items, strict=True))
    else:
        inner = _values(column.values)
    return [None if null else inner[offsets[i] : offsets[i + 1]] for i, null in enumerate(nulls)]


def _clocks(column: pa.Array) -> list[Any]:
    """Times of day as :class:`Clock` (24:00:00 is one; Python's time has no such)."""
    unit = column.type.unit
    raw = column.view(pa.int64() if column.type.bit_width == 64 else pa.int32()).to_pylist()
    per = {"s": 1_000_000, "ms": 1_000, "us": 1}.get(unit)
    return [None if n is None else Clock(n * per if per else n // 1000) for n in raw]


_INT32_MAX, _INT64_MAX = 2**31 - 1, 2**63 - 1
_DAYS_1970_2000 = 10_957
_MICROS_PER_DAY = 86_400_000_000
_PER_MICRO = {"s": 1_000_000, "ms": 1_000, "us": 1}  # ns: divided by 1000 (toward zero)
# what PostgreSQL carries (its datatype/timestamp.h), from 2000-01-01: dates from
# 4713-11-24 BC up to (not including) 5874898-01-01, timestamps from 4713-11-24 BC
# 00:00 up to (not including) 294277-01-01 00:00
_DATE_RANGE = range(-2_451_545, 2_145_031_949)
_TIMESTAMP_RANGE = range(-211_813_488_000_000_000, 9_223_371_331_200_000_000)


def _civil(days: int) -> tuple[int, int, int]:
    """(year, month, day) of ``days`` since 1970-01-01 in the proleptic Gregorian
    calendar, any year (year 0 is 1 BC): H. Hinnant's days_from_civil, inverted."""
    days += 719_468
    era = days // 146_097
    day_of_era = days - era * 146_097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146_096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted + 2) // 5 + 1
    month = shifted + 3 if shifted < 10 else shifted - 9
    return year_of_era + era * 400 + (month <= 2), month, day


def _date_text(days: int) -> tuple[str, str]:
    """PostgreSQL's text of a date (days since 1970) without its era, and the era."""
    year, month, day = _civil(days)
    era = "" if year > 0 else " BC"
    return f"{year if year > 0 else 1 - year:04d}-{month:02d}-{day:02d}", era


def _moment_text(micros: int, tz: bool) -> str:
    """PostgreSQL's text of a timestamp (microseconds since 1970): ``0044-03-15
    10:00:00 BC``, ``12000-01-01 00:00:00.5+00``."""
    days, micro = divmod(micros, _MICROS_PER_DAY)
    date, era = _date_text(days)
    seconds, fraction = divmod(micro, 1_000_000)
    clock = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    if fraction:
        clock += f".{fraction:06d}".rstrip("0")
    return f"{date} {clock}{'+00' if tz else ''}{era}"


def _beyond(number: int, unit: str, tz: bool) -> Beyond | Unrepresentable:
    """A finite date (``unit`` "day") or timestamp Python cannot hold, from its Arrow
    integer (days, or ``unit``s, since 1970)."""
    if unit == "day":
        since_2000 = number - _DAYS_1970_2000
        date, era = _date_text(number)
        if since_2000 not in _DATE_RANGE:
            return Unrepresentable(date + era, "date")
        return Beyond((date + era).encode(), since_2000)
    if unit == "ns":  # exact, toward zero as DuckDB casts TIMESTAMP_NS to TIMESTAMP
        micros = -(-number // 1000) if number < 0 else number // 1000
    else:
        micros = number * _PER_MICRO[unit]
    since_2000 = micros - _DAYS_1970_2000 * _MICROS_PER_DAY
    text = _moment_text(micros, tz)
    if since_2000 not in _TIMESTAMP_RANGE:
        return Unrepresentable(text, "timestamp")
    return Beyond(text.encode(), since_2000)


def _moments(column: pa.Array | pa.ChunkedArray) -> list[Any]:
    """Dates and timestamps as Python values, and as :class:`Beyond` (or
    :class:`Unrepresentable`) where Python's datetime cannot hold them (one infinite
    row failed the whole result before)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    is_date = pa.types.is_date32(column.type)
    numbers = column.view(pa.int32() if is_date else pa.int64())
    top = _INT32_MAX if is_date else _INT64_MAX
    unit = "day" if is_date else column.type.unit
    tz = not is_date and column.type.tz is not None
    extremes = pc.min_max(numbers).as_py()
    if extremes["max"] != top and extremes["min"] != -top:  # no infinity: all at once
        with contextlib.suppress(OverflowError, ValueError):
            if unit == "ns":
                return column.cast(pa.timestamp("us", column.type.tz), safe=False).to_pylist()  # type: ignore[no-any-return]
            values: list[Any] = column.to_pylist()
            return values
    values = []
    for number in numbers.to_pylist():
        if number is None:
            values.append(None)
        elif number == top:
            values.append(Beyond(b"infinity", top))
        elif number == -top:
            values.append(Beyond(b"-infinity", -top - 1))
        else:
            values.append(_beyond(number, unit, tz))
    return values


# -- parameters ------------------------------------------------------------------------------

# what PostgreSQL's boolin takes (any prefix of true/false/yes/no, on/off, 1/0)
_TRUE_TEXT = {"t", "tr", "tru", "true", "y", "ye", "yes", "on", "1"}
_FALSE_TEXT = {"f", "fa", "fal", "fals", "false", "n", "no", "of", "off", "0"}


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


_ELEMENT_OF = {array: element for element, array in ARRAY_OF.items()} | {1028: OID, 1015: TEXT}


def _binary_array_param(data: bytes) -> list[Any]:
    """A one-dimensional array in binary form (the elements' own binary forms)."""
    dims, _, element = struct.unpack_from("!iii", data)
    if dims == 0:
        return []
    if dims != 1:
        raise ValueError("only one-dimensional array parameters are supported")
    count, _ = struct.unpack_from("!ii", data, 12)
    at, values = 20, list[Any]()
    for _ in range(count):
        size = _I4.unpack_from(data, at)[0]
        at += 4
        if size < 0:
            values.append(None)
        else:
            values.append(_binary_param(element, data[at : at + size]))
            at += size
    return values


_SPACE = " \t\n\r\v\f"  # what PostgreSQL's array_in skips (not str.strip's \x1c-\x1f)


def _text_array_param(oid: int, text: str) -> list[Any]:
    """A one-dimensional array literal (``{1,NULL,"a b"}``), elements read as ``oid``."""
    text = text.strip(_SPACE)
    if not (text.startswith("{") and text.endswith("}")):
        raise ValueError(f"{text!r} is not an array literal")
    values: list[Any] = []
    at, end = 1, len(text) - 1
    while at < end:
        if text[at] == '"':
            at += 1
            chars = []
            while text[at] != '"':
                if text[at] == "\\":
                    at += 1
                chars.append(text[at])
                at += 1
            values.append(_text_param(oid, "".join(chars)))
            at += 1
        else:
            comma = text.find(",", at)
            comma = end if comma < 0 else comma
            item = text[at:comma].strip(_SPACE)
            if "{" in item:
                raise ValueError("only one-dimensional array parameters are supported")
            values.append(None if item.upper() == "NULL" else _text_param(oid, item))
            at = comma
        if at < end and text[at] == ",":
            at += 1
    return values


def _binary_param(oid: int, data: bytes) -> Any:
    if oid in _ELEMENT_OF:
        return _binary_array_param(data)
    if oid == INTERVAL:
        micros, days, months = _INTERVAL.unpack(data)
        if not months:
            return dt.timedelta(days=days, microseconds=micros)
        return f"{months} months {days} days {micros} microseconds"  # DuckDB casts it
    if oid == BOOL:
        return data != b"\x00"
    if oid == INT2:
        return _I2.unpack(data)[0]
    if oid in (INT4, OID):
        return _I4.unpack(data)[0]
    if oid == INT8:
        return _I8.unpack(data)[0]
    if oid == FLOAT4:
        return _F4.unpack(data)[0]
    if oid == FLOAT8:
        return _F8.unpack(data)[0]
    if oid == NUMERIC:
        return _numeric_from_binary(data)
    if oid == BYTEA:
        return bytes(data)
    if oid == DATE:
        days = _I4.unpack(data)[0]
        if abs(days) >= _INT32_MAX:  # PostgreSQL's infinities: DuckDB casts the words
            return "infinity" if days > 0 else "-infinity"
        return _EPOCH_DATE + dt.timedelta(days=days)
    if oid in (TIMESTAMP, TIMESTAMPTZ):
        micros = _I8.unpack(data)[0]
        if abs(micros) >= _INT64_MAX:
            return "infinity" if micros > 0 else "-infinity"
        return (_EPOCH if oid == TIMESTAMP else _EPOCH_TZ) + dt.timedelta(microseconds=micros)
    if oid == UUID:
        return str(uuid.UUID(bytes=bytes(data)))
    if oid == JSONB:
        return data[1:].decode()  # a version byte, then the text
    if oid in (TEXT, VARCHAR, BPCHAR, NAME, JSON, UNKNOWN, CHAR, 0):
        return data.decode()
    raise ValueError(f"binary parameters of type OID {oid} are not supported; send them as text")


def _text_param(oid: int, text: str) -> Any:
    if oid in _ELEMENT_OF:
        return _text_array_param(_ELEMENT_OF[oid], text)
    if oid == BOOL:
        word = text.strip(_SPACE).lower()
        if word in _TRUE_TEXT or word in _FALSE_TEXT:
            return word in _TRUE_TEXT
        raise ValueError(f"invalid input syntax for type boolean: {text!r}")
    if oid in (INT2, INT4, INT8, OID):
        return int(text)
    if oid in (FLOAT4, FLOAT8):
        return float(text)
    if oid == NUMERIC:
        return decimal.Decimal(text)
    if oid == BYTEA:
        return bytes.fromhex(text[2:]) if text.startswith("\\x") else text.encode()
    return text  # dates, times, uuids, json, unknown: DuckDB casts the string where used


def decode_param(oid: int, binary: bool, data: bytes | None) -> Any:
    """One Bind parameter as a Python value (ValueError when it cannot be read)."""
    if data is None:
        return None
    try:
        return _binary_param(oid, data) if binary else _text_param(oid, data.decode())
    except (
        struct.error,
        UnicodeDecodeError,
        decimal.InvalidOperation,
        IndexError,
        OverflowError,
    ) as exc:
        raise ValueError(f"cannot read a parameter of type OID {oid}: {exc}") from None
