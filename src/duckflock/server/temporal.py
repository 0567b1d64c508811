"""Dates and timestamps past Python's ``datetime``: the one calendar of both protocols.

DuckDB's DATE and TIMESTAMP reach Arrow as integers (days, or ticks of a unit, since
1970-01-01). Python's ``datetime`` holds the years 1 to 9999; DuckDB also holds
``infinity``, ``-infinity``, years past 9999 and dates BC, and so does PostgreSQL (in a
narrower range). Both the HTTP API's JSON (:mod:`duckflock.server.values`, spelled as
DuckDB prints them) and the Postgres port (:mod:`duckflock.server.pgwire.types.datetime`,
spelled as PostgreSQL does) read such values with this module: the same calendar, the
same infinities, the same epochs. The library's own ``Result.rows()`` asks DuckDB to
convert them (:mod:`duckflock.core.wide`), so it holds no calendar of its own.
"""

from __future__ import annotations

DATE_INFINITY = 2**31 - 1  # DATE 'infinity' as Arrow's date32; '-infinity' is its negation
TIMESTAMP_INFINITY = 2**63 - 1  # TIMESTAMP 'infinity' as Arrow's int64 ticks
TICKS_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
MICROS_PER_DAY = 86_400_000_000
DAYS_1970_TO_2000 = 10_957  # PostgreSQL's binary dates and timestamps count from 2000-01-01
# what PostgreSQL carries (its datatype/timestamp.h), counted from 2000-01-01: dates from
# 4713-11-24 BC up to (not including) 5874898-01-01, timestamps from 4713-11-24 BC 00:00
# up to (not including) 294277-01-01 00:00
POSTGRES_DATES = range(-2_451_545, 2_145_031_949)
POSTGRES_TIMESTAMPS = range(-211_813_488_000_000_000, 9_223_371_331_200_000_000)


def infinity(number: int, top: int) -> str | None:
    """``infinity`` or ``-infinity`` when ``number`` is the type's extreme (``top`` is
    :data:`DATE_INFINITY` or :data:`TIMESTAMP_INFINITY`), else None."""
    if number == top:
        return "infinity"
    if number == -top:
        return "-infinity"
    return None


def civil(days: int) -> tuple[int, int, int]:
    """(year, month, day) of ``days`` since 1970-01-01 in the proleptic Gregorian
    calendar, any year (year 0 is 1 BC): H. Hinnant's days_from_civil, inverted (Python's
    floor division already rounds the era down for days before 0000-03-01)."""
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


def date_parts(days: int) -> tuple[str, bool]:
    """The text of a date (days since 1970) without its era (``0044-03-15``), and
    whether it is BC (both DuckDB and PostgreSQL count 1 BC as year 1, not 0)."""
    year, month, day = civil(days)
    shown = year if year > 0 else 1 - year
    return f"{shown:04d}-{month:02d}-{day:02d}", year <= 0


def moment_parts(ticks: int, per_second: int) -> tuple[str, bool, str]:
    """A timestamp (``ticks`` of ``1/per_second`` seconds since 1970) as its date text,
    whether it is BC, and its time of day (``10:00:00.5``: trailing zeros dropped)."""
    seconds, fraction = divmod(ticks, per_second)
    days, rest = divmod(seconds, 86_400)
    date, bc = date_parts(days)
    clock = f"{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}"
    if fraction:
        digits = len(str(per_second)) - 1
        clock += "." + f"{fraction:0{digits}d}".rstrip("0")
    return date, bc, clock


# -- as DuckDB prints them (the HTTP API's JSON) ---------------------------------------------


def duckdb_date(days: int) -> str:
    """``2024-01-01``, ``0044-03-15 (BC)``, ``infinity``."""
    date, bc = date_parts(days)
    return infinity(days, DATE_INFINITY) or (f"{date} (BC)" if bc else date)


def duckdb_timestamp(ticks: int, per_second: int, suffix: str = "") -> str:
    """``290000-01-01T00:00:00``, ``0044-03-15T10:00:00+00:00 (BC)``, ``-infinity``
    (``suffix``: the zone of a TIMESTAMPTZ, which Arrow holds in UTC)."""
    word = infinity(ticks, TIMESTAMP_INFINITY)
    if word is not None:
        return word
    date, bc, clock = moment_parts(ticks, per_second)
    return f"{date}T{clock}{suffix}{' (BC)' if bc else ''}"


# -- as PostgreSQL prints them (the Postgres port's text form) ------------------------------


def postgres_date(days: int) -> str:
    """``0044-03-15 BC``, ``12000-01-01`` (finite dates: the infinities are the wire's)."""
    date, bc = date_parts(days)
    return f"{date}{' BC' if bc else ''}"


def postgres_timestamp(micros: int, utc: bool) -> str:
    """``0044-03-15 10:00:00 BC``, ``12000-01-01 00:00:00.5+00`` (microseconds since
    1970; ``utc`` for a TIMESTAMPTZ, sent in UTC)."""
    date, bc, clock = moment_parts(micros, 1_000_000)
    return f"{date} {clock}{'+00' if utc else ''}{' BC' if bc else ''}"
