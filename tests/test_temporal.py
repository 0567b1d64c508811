"""The calendar both protocols share (duckflock.server.temporal), against DuckDB's own.

DuckDB is the oracle: each day count (and timestamp) goes to DuckDB as Arrow and comes
back as DuckDB's text; the HTTP API's spelling must be that text, for dates BC, years
past 9999 and the infinities (the HTTP converter once put 0401-03-01 BC a day late).
"""

from __future__ import annotations

import random

import duckdb
import pyarrow as pa

from duckflock.server import temporal, values

# the era edges of the calendar arithmetic (every 400 years), and the infinities
EDGES = [146_097 * k - 719_468 + d for k in range(-8, 8) for d in (-2, -1, 0, 1, 2)]
DAYS = [*EDGES, 0, -1, 2**31 - 2, -(2**31) + 2, 2**31 - 1, -(2**31 - 1)]
DAYS += random.Random(20).sample(range(-2_000_000_000, 2_000_000_000), 3000)


def _duckdb_text(array: pa.Array) -> list[str]:
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        arrow_values = pa.table({"v": array})  # noqa: F841 (read by name)
        return [row[0] for row in con.execute("SELECT v::VARCHAR FROM arrow_values").fetchall()]


def test_dates_read_as_duckdb_prints_them() -> None:
    array = pa.array(DAYS, pa.int32()).view(pa.date32())
    assert values.column(array) == _duckdb_text(array)


def test_timestamps_read_as_duckdb_prints_them() -> None:
    ticks = [d * 86_400_000_000 + 3_723_000_500 for d in DAYS if abs(d) < 106_000_000]
    ticks += [temporal.TIMESTAMP_INFINITY, -temporal.TIMESTAMP_INFINITY]
    array = pa.array(ticks, pa.int64()).view(pa.timestamp("us"))
    ours = values.column(array)
    # DuckDB's VARCHAR puts the era after the date; the JSON after the whole moment
    theirs = [
        t
        if "infinity" in t
        else t.replace(" (BC) ", "T", 1) + " (BC)"
        if "(BC)" in t
        else t.replace(" ", "T", 1)
        for t in _duckdb_text(array)
    ]
    assert ours == theirs


def test_postgres_spells_eras_after_the_moment() -> None:
    days = -(1969 + 44) * 365  # somewhere in 44 BC
    text = temporal.postgres_timestamp(days * temporal.MICROS_PER_DAY + 500_000, utc=True)
    assert text.endswith(":00.5+00 BC") and temporal.postgres_date(days).endswith(" BC")
    assert temporal.duckdb_date(days) == temporal.postgres_date(days).replace(" BC", " (BC)")
