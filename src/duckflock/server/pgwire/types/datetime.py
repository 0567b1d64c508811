"""Dates, times, timestamps and intervals, with the values Python's datetime cannot hold.

Values arrive from Arrow as Python objects, or (past what Python holds) as
:class:`Beyond` (infinity, the year 12000, 44 BC: PostgreSQL can carry them) or
:class:`Unrepresentable` (DuckDB can hold them, PostgreSQL cannot); times of day as
:class:`Clock` (24:00:00). The calendar is the one both protocols share
(:mod:`duckflock.server.temporal`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import struct
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from duckflock.server import temporal
from duckflock.server.pgwire.types.adapt import I4, I8, Adapter
from duckflock.server.pgwire.types.table import Oid

_EPOCH_DATE = dt.date(2000, 1, 1)
_EPOCH = dt.datetime(2000, 1, 1)
_EPOCH_TZ = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_INTERVAL = struct.Struct("!qii")


@dataclass(frozen=True)
class Clock:
    """A time of day in microseconds: Python's time stops before 24:00:00, which DuckDB
    and PostgreSQL both have (it arrived as 00:00:00)."""

    micros: int

    def __str__(self) -> str:
        seconds, micro = divmod(self.micros, 1_000_000)
        text = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        return f"{text}.{micro:06d}".rstrip("0") if micro else text  # .5, as PostgreSQL


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


# -- dumpers ---------------------------------------------------------------------------------


def _datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    found: dt.datetime = value.to_pydatetime()  # a pandas Timestamp (nanoseconds)
    return found


def _date_text(value: Any) -> bytes:
    if isinstance(value, Beyond | Unrepresentable):
        return _representable(value).text
    return value.isoformat().encode()  # type: ignore[no-any-return]


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


def interval_fields(months: int) -> tuple[int, int]:
    """Years and months of a month count, each with its sign (C's division, toward
    zero, as PostgreSQL's interval2tm: -13 months is -1 years -1 mons)."""
    years = abs(months) // 12 * (-1 if months < 0 else 1)
    return years, months - years * 12


def interval_text(months: int, days: int, micros: int) -> str:
    """An interval as PostgreSQL's text spells it with its default IntervalStyle
    ``postgres`` (EncodeInterval): ``1 year 2 mons 3 days 04:05:06.5``, ``-1 days
    +02:00:00``, ``00:00:00``. Each nonzero field is shown, plural unless 1; a positive
    field after a negative one is signed ``+``; the clock is shown when it is not zero
    or nothing else is."""
    parts: list[str] = []
    before = False  # the last field shown is negative
    years, months = interval_fields(months)
    for value, unit in ((years, "year"), (months, "mon"), (days, "day")):
        if value:
            plus = "+" if before and value > 0 else ""
            parts.append(f"{plus}{value} {unit}{'' if value == 1 else 's'}")
            before = value < 0
    if micros or not parts:
        sign = "-" if micros < 0 else "+" if before else ""
        seconds, micro = divmod(abs(micros), 1_000_000)
        clock = f"{sign}{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        parts.append(f"{clock}.{micro:06d}".rstrip("0") if micro else clock)
    return " ".join(parts)


def _interval_text(value: Any) -> bytes:
    return interval_text(*_interval_parts(value)).encode()


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


def _time_text(value: Any) -> bytes:
    if isinstance(value, Clock):
        return str(value).encode()
    text: bytes = value.isoformat().encode()
    return text.rstrip(b"0") if value.microsecond else text  # .5, as PostgreSQL


def _time_binary(value: Any) -> bytes:
    if isinstance(value, Clock):
        return I8.pack(value.micros)
    micros = ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000
    return I8.pack(micros + value.microsecond)


def _interval_binary(value: Any) -> bytes:
    months, days, micros = _interval_parts(value)
    return _INTERVAL.pack(micros, days, months)


# -- loaders (text parameters stay text: DuckDB casts the string where it is used) ----------


def _load_interval(data: bytes) -> Any:
    micros, days, months = _INTERVAL.unpack(data)
    if not months:
        return dt.timedelta(days=days, microseconds=micros)
    return f"{months} months {days} days {micros} microseconds"  # DuckDB casts it


def _load_date(data: bytes) -> Any:
    days = I4.unpack(data)[0]
    if abs(days) >= temporal.DATE_INFINITY:  # PostgreSQL's infinities: DuckDB casts the words
        return "infinity" if days > 0 else "-infinity"
    return _EPOCH_DATE + dt.timedelta(days=days)


def _timestamp_loader(epoch: dt.datetime) -> Any:
    def load(data: bytes) -> Any:
        micros = I8.unpack(data)[0]
        if abs(micros) >= temporal.TIMESTAMP_INFINITY:
            return "infinity" if micros > 0 else "-infinity"
        return epoch + dt.timedelta(microseconds=micros)

    return load


ADAPTERS = (
    Adapter(
        Oid.DATE,
        _date_text,
        lambda v: I4.pack(_days_since_2000(v)),
        load_binary=_load_date,
    ),
    Adapter(Oid.TIME, _time_text, _time_binary),
    *(
        Adapter(
            oid,
            _timestamp_text,
            lambda v: I8.pack(_micros_since_2000(v)),
            load_binary=_timestamp_loader(epoch),
        )
        for oid, epoch in ((Oid.TIMESTAMP, _EPOCH), (Oid.TIMESTAMPTZ, _EPOCH_TZ))
    ),
    Adapter(Oid.INTERVAL, _interval_text, _interval_binary, load_binary=_load_interval),
)

# -- from Arrow ------------------------------------------------------------------------------


def clocks(column: pa.Array) -> list[Any]:
    """Times of day as :class:`Clock` (24:00:00 is one; Python's time has no such)."""
    unit = column.type.unit
    raw = column.view(pa.int64() if column.type.bit_width == 64 else pa.int32()).to_pylist()
    per = {"s": 1_000_000, "ms": 1_000, "us": 1}.get(unit)
    return [None if n is None else Clock(n * per if per else n // 1000) for n in raw]


def _beyond(number: int, unit: str, tz: bool) -> Beyond | Unrepresentable:
    """A finite date (``unit`` "day") or timestamp Python cannot hold, from its Arrow
    integer (days, or ``unit``s, since 1970)."""
    if unit == "day":
        since_2000 = number - temporal.DAYS_1970_TO_2000
        date = temporal.postgres_date(number)
        if since_2000 not in temporal.POSTGRES_DATES:
            return Unrepresentable(date, "date")
        return Beyond(date.encode(), since_2000)
    if unit == "ns":  # exact, toward zero as DuckDB casts TIMESTAMP_NS to TIMESTAMP
        micros = -(-number // 1000) if number < 0 else number // 1000
    else:
        micros = number * (1_000_000 // temporal.TICKS_PER_SECOND[unit])
    since_2000 = micros - temporal.DAYS_1970_TO_2000 * temporal.MICROS_PER_DAY
    text = temporal.postgres_timestamp(micros, tz)
    if since_2000 not in temporal.POSTGRES_TIMESTAMPS:
        return Unrepresentable(text, "timestamp")
    return Beyond(text.encode(), since_2000)


def moments(column: pa.Array | pa.ChunkedArray) -> list[Any]:
    """Dates and timestamps as Python values, and as :class:`Beyond` (or
    :class:`Unrepresentable`) where Python's datetime cannot hold them (one infinite
    row failed the whole result before)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    is_date = pa.types.is_date32(column.type)
    numbers = column.view(pa.int32() if is_date else pa.int64())
    top = temporal.DATE_INFINITY if is_date else temporal.TIMESTAMP_INFINITY
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
