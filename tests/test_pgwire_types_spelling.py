"""Differential test against a real PostgreSQL: the Postgres port spells float4, float8
and interval values in text (DataRow, COPY text and CSV) byte for byte as PostgreSQL 15
spells the same values (hypothesis; DUCKFLOCK_PG_EXAMPLES examples, 60 by default).

Each value travels as text both sides parse exactly (Python's repr of a float, an
interval's months, days and microseconds); the port's bytes are read raw from psycopg's
result (``pgresult.get_value``), PostgreSQL's are its own ``::text``. The per-value
dumpers (``float_text``, ``interval_text``) are held to the same bytes; the columnar
encoder is held to the per-value dumpers by test_pgwire_columnar.
"""

from __future__ import annotations

import itertools
import math
import os
import struct
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import duckflock
import pgclients
from duckflock.server.pgwire import PgServer, PgSettings
from duckflock.server.pgwire.types.datetime import interval_text
from duckflock.server.pgwire.types.numeric import float_text
from duckflock.server.pgwire.types.table import Oid
from duckflock.server.settings import ServerSettings

FAST = settings(max_examples=int(os.environ.get("DUCKFLOCK_PG_EXAMPLES", "60")), deadline=None)


def _f32(value: float) -> float:
    return float(struct.unpack("!f", struct.pack("!f", value))[0])


def _around(value: float, f32: bool = False) -> list[float]:
    """``value`` and its neighbours (as float4 when ``f32``)."""
    if not f32:
        return [math.nextafter(value, 0), value, math.nextafter(value, math.inf)]
    (bits,) = struct.unpack("!I", struct.pack("!f", value))
    return [_f32(struct.unpack("!f", struct.pack("!I", bits + step))[0]) for step in (-1, 0, 1)]


# the thresholds of both notations (PostgreSQL's and Arrow's), 17 digits, the extremes
EDGES8 = [
    0.0,
    -0.0,
    math.inf,
    -math.inf,
    math.nan,
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    0.1,
    100.0,
    0.30000000000000004,
    123456789012345.67,
    1e15 + 0.125,
    9999999999.5,
    -1 / 3,
    *(x for edge in (1e15, 1e16, 1e-4, 1e10, 1e-10, 1e-7, 1e6, 1e21, 1e22) for x in _around(edge)),
]
EDGES4 = [
    0.0,
    -0.0,
    math.inf,
    -math.inf,
    math.nan,
    _f32(1.4e-45),
    _f32(3.4028235e38),
    _f32(0.1),
    _f32(16777216.0),
    _f32(123456.7),
    *(x for edge in (1e6, 1e-4, 1e10, 1e-10, 1e-7, 1e15) for x in _around(_f32(edge), True)),
]
MICROS = 10**14
INTERVAL = st.tuples(
    st.integers(-(10**5), 10**5) | st.sampled_from([0, 1, -1, 11, 12, -12, -13, 25]),
    st.integers(-(10**6), 10**6) | st.sampled_from([0, 1, -1]),
    st.integers(-MICROS, MICROS) | st.sampled_from([0, 1, -1, 500_000, -3_600_000_000]),
)


# the benchmark's five types (benchmarks/pgwire.py's big result), with the values whose
# spelling or escaping differs: NULLs, NaN, the infinities, -0.0, timestamps before 1970
# and 'infinity', text with tabs, newlines, backslashes, quotes, commas, non-ASCII
BULK = [
    ("0", "1.25", "plain", "2026-01-01 00:00:00.123", "true"),
    ("-1", "-0", "tab\there", "1969-12-31 23:59:59.5", "false"),
    ("9223372036854775807", "NaN", "line\nnext\r", "1900-02-28 12:00:00", None),
    ("-9223372036854775808", "Infinity", "back\\slash \\N", "infinity", "true"),
    (None, "-Infinity", 'quote"d, comma', "-infinity", "false"),
    ("42", None, "", "0001-01-01 00:00:00", "true"),
    ("7", "1e16", None, None, "false"),
    ("8", "1e-05", "é日😀", "2000-01-01 00:00:00.000001", "true"),
    ("9", "123456789012.5", "\\.", "1970-01-01 00:00:00", "false"),
    ("10", "0.1", "NULL", "9999-12-31 23:59:59.999999", "true"),
]
BULK_SELECT = "SELECT i, x, note, ts, flag FROM bulk ORDER BY n"


@pytest.fixture(scope="module")
def port() -> Iterator[psycopg.Connection[Any]]:
    db = duckflock.connect()
    db.execute(  # the rows of the bulk tests below
        "CREATE TABLE bulk (n INTEGER, i BIGINT, x DOUBLE, note VARCHAR, ts TIMESTAMP,"
        " flag BOOLEAN)"
    )
    for n, row in enumerate(BULK):
        db.execute(
            "INSERT INTO bulk VALUES (?, ?::BIGINT, ?::DOUBLE, ?, ?::TIMESTAMP, ?::BOOLEAN)",
            [n, *row],
        )
    db.lock_down()
    server = PgServer(db, ServerSettings(), PgSettings(port=0)).start()  # tokenless: loopback
    try:
        with psycopg.connect(pgclients.dsn(server.port, "x"), autocommit=True) as conn:
            yield conn
    finally:
        server.stop()
        db.close()


@pytest.fixture(scope="module")
def real(postgres: Any) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        yield conn


def _raw(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> list[bytes]:
    """The first column's text as the server sent it."""
    cursor = conn.execute(sql, params)
    result = cursor.pgresult
    assert result is not None
    return [bytes(result.get_value(row, 0) or b"NULL") for row in range(result.ntuples)]


def _spelled(texts: list[str], duck: str, pg: str, port: Any, real: Any) -> list[bytes]:
    """The port's text of each value (as DuckDB's ``duck`` type), asserted equal to
    PostgreSQL's (as ``pg``)."""
    rows = ", ".join(f"({i}, '{text}')" for i, text in enumerate(texts))
    ours = _raw(port, f"SELECT CAST(v AS {duck}) FROM (VALUES {rows}) t(i, v) ORDER BY i")
    sql = f"SELECT v::{pg}::text FROM unnest(%s::text[]) WITH ORDINALITY t(v, n) ORDER BY n"
    theirs = _raw(real, sql, [texts])
    assert ours == theirs, [
        (t, a, b) for t, a, b in zip(texts, ours, theirs, strict=False) if a != b
    ]
    return ours


def _interval_literal(months: int, days: int, micros: int) -> str:
    return f"{months} months {days} days {micros} microseconds"


@FAST
@given(
    st.lists(st.floats(width=64), min_size=1, max_size=40),
    st.lists(st.floats(width=32), min_size=1, max_size=40),
)
@example(EDGES8, EDGES4)
def test_floats_are_spelled_as_postgresql_spells_them(
    port: Any, real: Any, doubles: list[float], singles: list[float]
) -> None:
    for values, duck, pg, oid in (
        (doubles, "DOUBLE", "float8", Oid.FLOAT8),
        (singles, "FLOAT", "float4", Oid.FLOAT4),
    ):
        spelled = _spelled([repr(v) for v in values], duck, pg, port, real)
        assert spelled == [float_text(v, oid) for v in values]


@FAST
@given(st.lists(INTERVAL, min_size=1, max_size=40))
@example([(0, 0, 0), (14, 3, 14_706_500_000), (0, -1, 7_200_000_000), (-13, 0, 0), (-11, 5, 0)])
def test_intervals_are_spelled_as_postgresql_spells_them(
    port: Any, real: Any, values: list[tuple[int, int, int]]
) -> None:
    texts = [_interval_literal(*value) for value in values]
    spelled = _spelled(texts, "INTERVAL", "interval", port, real)
    assert spelled == [interval_text(*value).encode() for value in values]


def test_copy_text_and_csv_spell_them_as_postgresql(port: Any, real: Any) -> None:
    """COPY's text and CSV carry the same spellings as PostgreSQL's COPY."""
    intervals = itertools.cycle([(-13, 2, -1), (0, 0, 0), (1, -1, 3_600_000_000)])
    singles = itertools.cycle(EDGES4)
    texts = [(repr(d), repr(next(singles)), _interval_literal(*next(intervals))) for d in EDGES8]
    rows = ", ".join(f"({n}, '{d}', '{s}', '{i}')" for n, (d, s, i) in enumerate(texts))
    ours_sql = (
        "COPY (SELECT CAST(d AS DOUBLE), CAST(s AS FLOAT), CAST(i AS INTERVAL) "
        f"FROM (VALUES {rows}) t(n, d, s, i) ORDER BY n) TO STDOUT"
    )
    theirs_sql = (
        "COPY (SELECT d::float8, s::float4, i::interval "
        f"FROM (VALUES {rows}) t(n, d, s, i) ORDER BY n) TO STDOUT"
    )
    for options in ("", " WITH (FORMAT csv)"):
        copied = []
        for conn, sql in ((port, ours_sql), (real, theirs_sql)):
            with conn.cursor().copy(sql + options) as copy:
                copied.append(b"".join(bytes(block) for block in copy))
        assert copied[0] == copied[1], options
        assert b"1e+15" in copied[0] and b"-1 years -1 mons +2 days" in copied[0]


# one array per element type, with the characters and spellings that decide quoting
ARRAYS = [
    (
        "['a', 'b c', '', 'NULL', 'null', 'x\"y', 'back\\slash', '{}', 'a,b', NULL]",
        "VARCHAR[]",
        "ARRAY['a', 'b c', '', 'NULL', 'null', 'x\"y', 'back\\slash', '{}', 'a,b', NULL]::text[]",
    ),
    (
        "[DATE '2024-01-02', DATE '1999-12-31', NULL]",
        "DATE[]",
        "ARRAY[DATE '2024-01-02', DATE '1999-12-31', NULL]",
    ),
    (
        "[TIME '04:05:06', TIME '04:05:06.5', NULL]",
        "TIME[]",
        "ARRAY[TIME '04:05:06', TIME '04:05:06.5', NULL]",
    ),
    (
        "[TIMESTAMP '2024-01-02 03:04:05.25', NULL]",
        "TIMESTAMP[]",
        "ARRAY[TIMESTAMP '2024-01-02 03:04:05.25', NULL]",
    ),
    (
        "[INTERVAL 1 DAY, INTERVAL 90 MINUTE, INTERVAL 0 SECOND]",
        "INTERVAL[]",
        "ARRAY[INTERVAL '1 day', INTERVAL '90 minutes', INTERVAL '0 seconds']",
    ),
    ("['\\x01'::BLOB, ''::BLOB]", "BLOB[]", "ARRAY['\\x01'::bytea, ''::bytea]"),
    (
        "['6ba7b810-9dad-11d1-80b4-00c04fd430c8'::UUID]",
        "UUID[]",
        "ARRAY['6ba7b810-9dad-11d1-80b4-00c04fd430c8'::uuid]",
    ),
    ("[true, false, NULL]", "BOOLEAN[]", "ARRAY[true, false, NULL]"),
    (
        "[1.5, '-0'::DOUBLE, 'nan'::DOUBLE, 'inf'::DOUBLE]",
        "DOUBLE[]",
        "ARRAY[1.5, '-0'::float8, 'nan'::float8, 'inf'::float8]",
    ),
    ("[]::INTEGER[]", "INTEGER[]", "ARRAY[]::integer[]"),
    ("[]::VARCHAR[]", "VARCHAR[]", "ARRAY[]::text[]"),
]


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
@pytest.mark.parametrize(("duck", "kind", "pg"), ARRAYS, ids=[kind for _, kind, _ in ARRAYS])
def test_arrays_are_sent_as_postgresql_sends_them(
    port: Any, real: Any, duck: str, kind: str, pg: str, binary: bool
) -> None:
    """An array's elements are quoted only where PostgreSQL's array_out quotes them (empty,
    NULL's spelling, whitespace or one of ``{},"\\``), and an empty array is sent as
    PostgreSQL sends it (``{}``; in binary, no dimensions)."""
    ours = port.execute(f"SELECT CAST({duck} AS {kind})", binary=binary).pgresult
    theirs = real.execute(f"SELECT {pg}", binary=binary).pgresult
    assert ours is not None and theirs is not None
    assert bytes(ours.get_value(0, 0) or b"") == bytes(theirs.get_value(0, 0) or b"")


@pytest.fixture(scope="module")
def bulk_real(real: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    real.execute("DROP TABLE IF EXISTS bulk")
    real.execute(
        "CREATE TABLE bulk (n integer, i bigint, x float8, note text, ts timestamp, flag boolean)"
    )
    with real.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO bulk VALUES (%s, %s::bigint, %s::float8, %s, %s::timestamp, %s::boolean)",
            [(n, *row) for n, row in enumerate(BULK)],
        )
    return real


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_bulk_rows_are_sent_as_postgresql_sends_them(
    port: Any, bulk_real: Any, binary: bool
) -> None:
    """DataRow values of the benchmark's five types, byte for byte PostgreSQL's."""
    results = [c.execute(BULK_SELECT, binary=binary).pgresult for c in (port, bulk_real)]
    ours, theirs = (
        [[r.get_value(row, col) for col in range(5)] for row in range(r.ntuples)]
        for r in results
        if r is not None
    )
    assert [[None if v is None else bytes(v) for v in row] for row in ours] == [
        [None if v is None else bytes(v) for v in row] for row in theirs
    ]


@pytest.mark.parametrize("options", ["", " WITH (FORMAT csv)", " WITH (FORMAT binary)"])
def test_bulk_copy_is_sent_as_postgresql_sends_it(port: Any, bulk_real: Any, options: str) -> None:
    """COPY of the benchmark's five types (escapes, quotes, NULL, NaN, -0, infinities,
    timestamps before 1970), the stream byte for byte PostgreSQL's."""
    copied = []
    for conn in (port, bulk_real):
        with conn.cursor().copy(f"COPY ({BULK_SELECT}) TO STDOUT{options}") as copy:
            copied.append(b"".join(bytes(block) for block in copy))
    assert copied[0] == copied[1]
    assert b"\\." in copied[0] or "binary" in options  # the rows arrived


@pytest.mark.parametrize(
    "options",
    [
        " (FORMAT text, HEADER)",
        " (HEADER true)",
        " (FORMAT csv, HEADER off)",
        " (FORMAT csv, HEADER 0)",
        " WITH CSV HEADER",
        " (FORMAT text, HEADER false)",
        " BINARY",
        " WITH BINARY",
    ],
)
def test_copy_header_is_written_as_postgresql_writes_it(
    port: Any, bulk_real: Any, options: str
) -> None:
    """HEADER in text COPY (PostgreSQL 15 writes the names, escaped as values, a line
    of their own), HEADER's boolean spellings (off, 0) and the old syntax's ``BINARY``:
    the header was written only for CSV, ``HEADER off`` wrote one, and ``BINARY`` gave
    text."""
    sql = f'COPY (SELECT note AS "a\tb", i FROM bulk ORDER BY n) TO STDOUT{options}'
    copied = []
    for conn in (port, bulk_real):
        with conn.cursor().copy(sql) as copy:
            copied.append([bytes(block) for block in copy])
    assert copied[0] == copied[1]


@pytest.mark.parametrize(
    "options",
    [
        " (FORMAT csv, HEADER, HEADER)",
        " (FORMAT text, FORMAT csv)",
        " (DELIMITER '|')",
        " WITH CSV FORCE QUOTE *",
        " (FORMAT csv, NULL 'x')",
        " (HEADER match)",
    ],
)
def test_copy_options_that_change_the_bytes_are_refused(port: Any, options: str) -> None:
    """An option the port would not honour is refused by name, not ignored: ``DELIMITER
    '|'`` wrote tab-separated lines, as if it had not been given."""
    sql = f"COPY (SELECT 1 AS x) TO STDOUT{options}"
    with pytest.raises(psycopg.errors.Error, match="COPY"), port.cursor().copy(sql) as copy:
        list(copy)
