"""Values survive the Postgres port's encoders, in text and binary form (hypothesis).

Each example goes through psycopg as a parameter (its own text or binary dump), through
DuckDB (a cast to the column type), and back through this port's encoder for that type;
what psycopg reads back must equal what DuckDB itself returns for the same value.
DUCKFLOCK_PG_EXAMPLES sets the examples per test (60 by default; 600 ran clean).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import struct
import tracemalloc
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import duckflock
import pgclients
from duckflock.server.pgwire import PgServer, PgSettings
from duckflock.server.pgwire.types import array, numeric_binary
from duckflock.server.settings import ServerSettings
from duckflock.sql import LexError


@pytest.fixture(scope="module")
def conns() -> Iterator[tuple[duckflock.Database, dict[bool, psycopg.Connection[Any]]]]:
    db = duckflock.connect()
    db.lock_down()
    server = PgServer(db, ServerSettings(), PgSettings(port=0)).start()  # tokenless: loopback
    connections = {
        binary: psycopg.connect(pgclients.dsn(server.port, "x"), autocommit=True)
        for binary in (False, True)
    }
    yield db, connections
    for conn in connections.values():
        conn.close()
    server.stop()
    db.close()


def _roundtrip(conns: Any, sql: str, value: Any) -> None:
    db, connections = conns
    expected = db.execute(sql.replace("%s", "?"), [value]).fetchone()
    for binary, conn in connections.items():
        got = conn.cursor(binary=binary).execute(sql, [value]).fetchone()
        assert got == expected, (binary, value, got, expected)


TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
FAST = settings(max_examples=int(os.environ.get("DUCKFLOCK_PG_EXAMPLES", "60")), deadline=None)


@FAST
@given(st.decimals(min_value=-(10**11), max_value=10**11, places=6, allow_nan=False))
def test_decimals(conns: Any, value: decimal.Decimal) -> None:
    _roundtrip(conns, "SELECT %s::DECIMAL(18,6)", value)


@FAST
@given(st.lists(st.one_of(st.none(), TEXT), max_size=6))
def test_text_arrays_with_any_characters(conns: Any, value: list[str | None]) -> None:
    _roundtrip(conns, "SELECT %s::VARCHAR[]", value)


@FAST
@given(st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), max_size=6))
def test_bigint_arrays(conns: Any, value: list[int | None]) -> None:
    _roundtrip(conns, "SELECT %s::BIGINT[]", value)


@FAST
@given(st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)))
def test_timestamps_before_and_after_2000(conns: Any, value: dt.datetime) -> None:
    _roundtrip(conns, "SELECT %s::TIMESTAMP", value)


@FAST
@given(st.datetimes(min_value=dt.datetime(1900, 1, 1), timezones=st.just(dt.UTC)))
def test_timestamps_with_time_zone(conns: Any, value: dt.datetime) -> None:
    _roundtrip(conns, "SELECT %s::TIMESTAMPTZ", value)


@FAST
@given(st.timedeltas(min_value=dt.timedelta(days=-(10**6)), max_value=dt.timedelta(days=10**6)))
def test_intervals(conns: Any, value: dt.timedelta) -> None:
    _roundtrip(conns, "SELECT %s::INTERVAL", value)


@FAST
@given(st.one_of(st.floats(width=64), st.floats(width=32)))
def test_floats_including_nan_and_infinity(conns: Any, value: float) -> None:
    db, connections = conns
    expected = db.execute("SELECT ?::DOUBLE", [value]).fetchone()
    assert expected is not None
    for binary, conn in connections.items():
        got = conn.cursor(binary=binary).execute("SELECT %s::DOUBLE", [value]).fetchone()
        assert got is not None
        same = got[0] == expected[0] or (got[0] != got[0] and expected[0] != expected[0])
        assert same, (binary, value, got, expected)


def test_numeric_binary_matches_postgresql_examples() -> None:
    # numeric_send of PostgreSQL 15 for these values (ndigits, weight, sign, dscale, digits)
    assert numeric_binary(decimal.Decimal("0")) == bytes.fromhex("0000000000000000")
    assert numeric_binary(decimal.Decimal("1.5")) == bytes.fromhex("00020000000000010001" + "1388")
    assert numeric_binary(decimal.Decimal("-12345.678")) == bytes.fromhex(
        "0003" + "0001" + "4000" + "0003" + "0001" + "0929" + "1a7c"
    )
    assert numeric_binary(decimal.Decimal("1E+8")) == bytes.fromhex(
        "0001" + "0002" + "0000" * 2 + "0001"
    )


@FAST
@given(st.binary(max_size=40))
def test_bytes(conns: Any, value: bytes) -> None:
    _roundtrip(conns, "SELECT %s::BLOB", value)


@FAST
@given(st.dates(min_value=dt.date(1, 1, 1)), TEXT)
def test_dates_and_text(conns: Any, day: dt.date, text: str) -> None:
    _roundtrip(conns, "SELECT %s::DATE", day)
    _roundtrip(conns, "SELECT %s::VARCHAR", text)


def test_types_without_a_postgresql_match_arrive_as_text(conns: Any) -> None:
    _, connections = conns
    sql = (
        "SELECT {'a': 1, 'b': [1, 2]} AS s, [[1, 2], [3]] AS nested, 'x'::ENUM('x', 'y') AS e, "
        "12345678901234567890::UBIGINT AS u, 2::HUGEINT AS h, '101'::BIT AS bits"
    )
    for binary, conn in connections.items():
        row = conn.cursor(binary=binary).execute(sql).fetchone()
        assert row is not None
        assert row[:5] == (
            '{"a": 1, "b": [1, 2]}',
            "[[1, 2], [3]]",
            "x",
            decimal.Decimal("12345678901234567890"),
            decimal.Decimal(2),
        ), binary
        assert isinstance(row[5], str)  # BIT: its storage, readable (not a decode error)


def test_integers_wider_than_arrow_holds_arrive_right(conns: Any) -> None:
    # DuckDB exports UHUGEINT as decimal128: 2^128 - 1 came back as -1; BIGNUM as bytes
    _, connections = conns
    top = 2**128 - 1
    sql = (
        f"SELECT {top}::UHUGEINT AS u, [{top}::UHUGEINT, 7::UHUGEINT] AS l, "
        "'-123456789012345678901234567890123456789012345'::VARINT AS v"
    )
    for binary, conn in connections.items():
        row = conn.cursor(binary=binary).execute(sql).fetchone()
        assert row is not None
        assert row[0] == decimal.Decimal(top), binary
        assert row[1] == [decimal.Decimal(top), decimal.Decimal(7)], binary
        assert row[2] == decimal.Decimal("-123456789012345678901234567890123456789012345"), binary


def test_wide_integers_in_analyses_full_incremental_and_over_the_port() -> None:
    top = 2**128 - 1
    db = duckflock.connect()
    db.execute("CREATE TABLE wide (k UHUGEINT, n INTEGER)")
    db.insert("wide", [{"k": top, "n": 1}, {"k": 3, "n": 4}])
    full = db.analysis("full_wide", "SELECT k, [k] AS l FROM wide ORDER BY k", wait=True)
    db.analysis("sums", "SELECT k, sum(n) AS s FROM wide GROUP BY k", wait=True)
    db.insert("wide", [{"k": top, "n": 2}, {"k": top - 1, "n": 1}])
    sums = db.refresh("sums")
    assert sums.mode == "incremental"
    assert full is not None and full.rows()[-1] == (top, [top])
    assert sorted(sums.rows()) == [(3, 4), (top - 1, 1), (top, 3)]
    db.lock_down()
    server = PgServer(db, ServerSettings(), PgSettings(port=0)).start()
    try:
        with psycopg.connect(pgclients.dsn(server.port, "x"), autocommit=True) as conn:
            # DuckDB scans no decimal256: the registered result carries UHUGEINT as text
            sql = "SELECT k, l FROM analyses.full_wide ORDER BY length(k) DESC LIMIT 1"
            row = conn.execute(sql).fetchone()
            assert row == (str(top), [str(top)])
    finally:
        server.stop()
        db.close()


def test_values_python_cannot_hold_arrive_as_postgresql_sends_them(conns: Any) -> None:
    # 24:00:00 arrived as 00:00:00; infinite dates in a list or struct failed with XX000;
    # a DECIMAL list arrived as "[Decimal('1.5')]" (text) or 22023 (binary)
    from psycopg.types.string import ByteaBinaryLoader, TextLoader

    _, connections = conns
    sql = (
        "SELECT '24:00:00'::TIME, ['24:00:00'::TIME], [DATE 'infinity'], "
        "[TIMESTAMP '-infinity'], {'d': DATE 'infinity', 't': '24:00:00'::TIME}, "
        "[1.5::DECIMAL(3,1)]"
    )
    for binary, conn in connections.items():
        cursor = conn.cursor(binary=binary)
        for name in ("time", "date", "timestamp"):  # psycopg's Python types cannot hold them
            cursor.adapters.register_loader(name, ByteaBinaryLoader if binary else TextLoader)
        row = cursor.execute(sql).fetchone()
        assert row is not None
        if binary:
            day, moment = struct.pack("!q", 86_400_000_000), struct.pack("!i", 2**31 - 1)
            assert row[:4] == (day, [day], [moment], [struct.pack("!q", -(2**63))])
        else:
            assert row[:4] == ("24:00:00", ["24:00:00"], ["infinity"], ["-infinity"])
        assert json.loads(row[4]) == {"d": "infinity", "t": "24:00:00"}, binary
        assert row[5] == [decimal.Decimal("1.5")], binary


def test_the_type_table_is_psycopgs() -> None:
    """The one type table (name, OID, array OID) agrees with psycopg's own
    (``psycopg.postgres.types``, generated from PostgreSQL's catalog); ``unknown``, which
    psycopg leaves out, is the one exception."""
    from psycopg.postgres import types as known

    from duckflock.server.pgwire import types

    for oid, kind in types.PG_TYPES.items():
        theirs = known.get(int(oid))
        if oid == types.Oid.UNKNOWN:
            assert theirs is None
            continue
        assert theirs is not None, kind
        assert (theirs.name.strip('"'), theirs.array_oid, theirs.regtype) == (
            kind.name,
            kind.array,
            kind.spelled,
        )
    # each OID appears once, and every adapter is for a type of the table
    assert len({int(oid) for oid in types.PG_TYPES}) == len(types.PG_TYPES)
    assert set(types.ADAPTERS) - {types.Oid.UNSPECIFIED} <= set(types.PG_TYPES)


@pytest.mark.parametrize("text", ["1E+2", "1.5E+3", "-7E+10", "0E+3"])
def test_a_numeric_parameter_with_a_positive_exponent_keeps_its_value(
    conns: Any, text: str
) -> None:
    # psycopg sends Decimal(100).normalize() as "1E+2"; duckdb 1.5.5 binds such a
    # Decimal as its digits (1): the oracle is DuckDB's cast of the text
    db, connections = conns
    expected = db.execute(f"SELECT '{text}'::DECIMAL(18,6)").fetchone()
    for binary, conn in connections.items():
        got = conn.cursor(binary=binary).execute(
            "SELECT %s::DECIMAL(18,6)", [decimal.Decimal(text)]
        )
        assert got.fetchone() == expected, binary


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ('{"a\\"b","c\\\\d",NULL,"NULL",""}', ['a"b', "c\\d", None, "NULL", ""]),
        ('{ "}" , b c ,"{"}', ["}", "b c", "{"]),
        ("{ }", []),
        # out of quotes too a backslash escapes (as PostgreSQL 15 reads each of these)
        ("{a\\,b,c}", ["a,b", "c"]),
        ('{\\",x\\}}', ['"', "x}"]),
        ("{ a\\  , b\\c }", ["a ", "bc"]),
        ("{\\NULL,nuLL,\\ }", ["NULL", None, " "]),
    ],
)
def test_array_text_is_read_as_postgresql_writes_it(text: str, values: list[str | None]) -> None:
    assert array.load_text(text, str) == values
    written = array.dump_text(values, str.encode).decode()
    assert array.load_text(written, str) == values


@given(st.text(alphabet=" \t\nNULnulx,1é", max_size=30))
@settings(max_examples=300, deadline=None)
def test_a_plain_array_is_split_as_the_reader_reads_it(inner: str) -> None:
    """Elements neither quoted nor escaped are split on commas at once (a million of
    them took seconds of regex work); the reader, which a quoted element forces, reads
    the same values, or refuses the same text."""

    def read(text: str) -> list[str | None] | str:
        try:
            return array.load_text(text, str)
        except LexError as exc:
            return str(exc)

    plain, forced = read("{" + inner + "}"), read("{" + inner + ',"q"}')
    if plain == []:  # {}: nothing to compare with
        assert inner.strip(" \t\n") == ""
    elif isinstance(plain, list):
        assert forced == [*plain, "q"]
    else:
        assert isinstance(forced, str)


def test_a_long_unquoted_array_element_is_read_without_a_copy_per_character() -> None:
    """1 MB in one element took 122 MB (a tuple per character; a 64 MB Bind: gigabytes)."""
    text = "{" + "a" * 1_000_000 + "}"
    tracemalloc.start()
    try:
        assert array.load_text(text, str) == ["a" * 1_000_000]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * len(text), peak
    assert array.load_text("{" + "\\," * 100_000 + "}", str) == ["," * 100_000]


@pytest.mark.parametrize(
    ("text", "reason", "position"),
    [
        ('{"open}', "unclosed quoted array element", 1),
        ('{"a\\}', "unclosed quoted array element", 1),  # the backslash takes the quote
        ("{a,,b}", "empty array element", 3),
        ("{a,}", "empty array element", 3),
        ('{"a"x}', "text after a quoted array element", 4),
        ('{a"b}', "quote inside an unquoted array element", 1),
        ("{a,b", "no closing }", 4),
        ("{a}x", "text after its closing }", 3),
        ("a,b", "does not start with {", 0),
        ("{a\\", "backslash at its end", 2),
    ],
)
def test_malformed_array_text_gets_a_precise_error(text: str, reason: str, position: int) -> None:
    with pytest.raises(LexError, match=reason) as caught:
        array.load_text(text, str)
    assert caught.value.position == position
