"""Differential test: the whole-column encoders of the Postgres port
(``RowEncoder``: Arrow casts, numpy framing) give, byte for byte, what the per-value
encoder (``PerValueEncoder``: each value through its type's dumper, each row framed in
Python) gives, for every type the port sends, in text and binary, as DataRow messages
and as COPY binary, text and CSV.

The columns are random (seeded: DUCKFLOCK_PG_SEED, DUCKFLOCK_PG_ROWS), with NULLs and
the edge values each type has: extremes, NaN, the infinities, -0.0, floats on both sides
of the notations' thresholds, years before 1 and past 9999, 24:00:00, negative
intervals, unicode and the characters COPY escapes or quotes. DuckDB casts each value
from text, so the values are the ones DuckDB holds.
"""

from __future__ import annotations

import math
import os
import random
import struct
import uuid
from collections.abc import Callable
from typing import Any

import duckdb
import numpy as np
import psycopg
import pyarrow as pa
import pytest

from duckflock.server.pgwire.encode import (
    COPY_SIGNATURE,
    DUCKDB_ROWS,
    GATHER_BYTES,
    GATHER_ROWS,
    RowEncoder,
    batch_rows,
)
from duckflock.server.pgwire.reference import PerValueEncoder
from duckflock.server.pgwire.types import Format, OutOfRange
from duckflock.server.pgwire.types.numeric import ROUND_BOUNDS_FROM, bound_candidates
from duckflock.server.pgwire.types.table import Oid

SEED = int(os.environ.get("DUCKFLOCK_PG_SEED", "21"))
ROWS = int(os.environ.get("DUCKFLOCK_PG_ROWS", "300"))
CHARS = ["a", "Z", " ", "\t", "\n", "\r", "\\", ",", '"', "'", "é", "日", "😀", "{", "N", "0"]


def _integers(low: int, high: int) -> Callable[[random.Random], str]:
    def make(rng: random.Random) -> str:
        return str(rng.choice([low, high, 0, max(low, -1), 1, rng.randint(low, high)]))

    return make


def _float(rng: random.Random, bits: int) -> str:
    pick = rng.random()
    if pick < 0.2:
        return rng.choice(["nan", "inf", "-inf", "0.0", "-0.0", "1e16", "1e-4", "1e10"])
    if pick < 0.4:
        return repr(rng.choice([9999999999.999998, 0.0001000001, 9.999e-5, 1e15, 5e-324]))
    if pick < 0.6 and bits == 64:  # any bit pattern (NaN ones included)
        return repr(struct.unpack("!d", rng.getrandbits(64).to_bytes(8, "big"))[0])
    if pick < 0.6:
        return repr(struct.unpack("!f", rng.getrandbits(32).to_bytes(4, "big"))[0])
    return repr(rng.uniform(-1, 1) * 10 ** rng.randint(-40 if bits == 64 else -30, 30))


def _decimal(precision: int, scale: int) -> Callable[[random.Random], str]:
    def make(rng: random.Random) -> str:
        digits = rng.randint(1, precision)
        number = rng.randint(-(10**digits) + 1, 10**digits - 1)
        sign, text = ("-" if number < 0 else ""), str(abs(number)).rjust(scale + 1, "0")
        return (
            f"{sign}{text[: len(text) - scale]}.{text[len(text) - scale :]}"
            if scale
            else str(number)
        )

    return make


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(CHARS) for _ in range(rng.randint(0, 8)))


def _days(rng: random.Random) -> str:
    """Days since 1970, years -4000 to 290000 (and the infinities)."""
    pick = rng.random()
    if pick < 0.1:
        return rng.choice(["infinity", "-infinity"])
    if pick < 0.3:
        return str(rng.randint(-2_400_000, 105_000_000))
    return str(rng.randint(-719_162, 2_932_896))  # years 1 to 9999


def _micros(rng: random.Random, wide: bool = True) -> str:
    pick = rng.random()
    if pick < 0.1 and wide:
        return rng.choice(["infinity", "-infinity"])
    if pick < 0.3 and wide:
        return str(rng.randint(-200_000_000_000_000_000, 9_000_000_000_000_000_000))
    if pick < 0.4:
        return str(rng.randint(-(10**10), 10**11) * 1_000_000)  # whole seconds
    return str(rng.randint(-62_135_596_800_000_000, 253_402_300_799_999_999))


def _clock(rng: random.Random) -> str:
    if rng.random() < 0.1:
        return rng.choice(["24:00:00", "00:00:00", "23:59:59.999999"])
    hours, minutes, seconds = rng.randrange(24), rng.randrange(60), rng.randrange(60)
    fraction = rng.choice(["", f".{rng.randrange(10**6):06d}", ".5"])
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{fraction}"


def _interval(rng: random.Random) -> str:
    parts = [rng.randint(-1000, 1000), rng.randint(-40000, 40000)]
    micros = rng.choice([0, rng.randint(-(10**14), 10**14), rng.randint(-999_999, 999_999)])
    return f"{parts[0]} months {parts[1]} days {micros} microseconds"


def _moment(kind: str) -> str:
    return f"CASE WHEN v LIKE '%inf%' THEN v::{kind} ELSE make_timestamp(v::BIGINT)::{kind} END"


# DuckDB type -> (the SQL casting the text v to it, a generator of v)
TYPES: dict[str, tuple[str, Callable[[random.Random], str]]] = {
    "BOOLEAN": ("v::BOOLEAN", lambda rng: rng.choice(["true", "false"])),
    "TINYINT": ("v::TINYINT", _integers(-128, 127)),
    "UTINYINT": ("v::UTINYINT", _integers(0, 255)),
    "SMALLINT": ("v::SMALLINT", _integers(-(2**15), 2**15 - 1)),
    "USMALLINT": ("v::USMALLINT", _integers(0, 2**16 - 1)),
    "INTEGER": ("v::INTEGER", _integers(-(2**31), 2**31 - 1)),
    "UINTEGER": ("v::UINTEGER", _integers(0, 2**32 - 1)),
    "BIGINT": ("v::BIGINT", _integers(-(2**63), 2**63 - 1)),
    "UBIGINT": ("v::UBIGINT", _integers(0, 2**64 - 1)),
    "HUGEINT": ("v::HUGEINT", _integers(-(10**37), 10**37)),
    "FLOAT": ("v::FLOAT", lambda rng: _float(rng, 32)),
    "DOUBLE": ("v::DOUBLE", lambda rng: _float(rng, 64)),
    "DECIMAL(4,1)": ("v::DECIMAL(4,1)", _decimal(4, 1)),
    "DECIMAL(18,6)": ("v::DECIMAL(18,6)", _decimal(18, 6)),
    "DECIMAL(38,10)": ("v::DECIMAL(38,10)", _decimal(38, 10)),
    "VARCHAR": ("v", _text),
    "BLOB": ("v::BLOB", lambda rng: "".join(f"\\x{rng.randrange(256):02X}" for _ in range(3))),
    "DATE": (
        "CASE WHEN v LIKE '%inf%' THEN v::DATE ELSE DATE '1970-01-01' + v::INTEGER END",
        _days,
    ),
    "TIME": ("v::TIME", _clock),
    "TIMESTAMP": (_moment("TIMESTAMP"), _micros),
    "TIMESTAMP_S": (_moment("TIMESTAMP_S"), _micros),
    "TIMESTAMP_MS": (_moment("TIMESTAMP_MS"), _micros),
    "TIMESTAMP_NS": (
        _moment("TIMESTAMP_NS"),
        lambda rng: str(rng.randint(-9_000_000_000_000_000, 9_000_000_000_000_000)),
    ),
    "TIMESTAMPTZ": (_moment("TIMESTAMPTZ"), _micros),
    "INTERVAL": ("v::INTERVAL", _interval),
    "UUID": ("v::UUID", lambda rng: str(uuid.UUID(int=rng.getrandbits(128)))),
    "JSON": ("to_json(v)", _text),
    "ENUM": ("v::mood", lambda rng: rng.choice(["sad", "ok", "happy 😀"])),
    "INTEGER[]": ("[v::INTEGER, NULL]", _integers(-5, 5)),
    "STRUCT": ("{'a': v}", _text),
}


def _table(duck_type: str, seed: int) -> pa.Table:
    rng = random.Random(f"{seed}:{duck_type}")
    cast, make = TYPES[duck_type]
    values = [None if rng.random() < 0.1 else make(rng) for _ in range(ROWS)]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy 😀')")
    con.register("source", pa.table({"v": pa.array(values, pa.string())}))
    return con.execute(f"SELECT {cast} AS x, v AS y FROM source").to_arrow_table()


def _duck_types(duck_type: str) -> list[str]:
    return [duck_type.replace("ENUM", "ENUM('sad', 'ok', 'happy 😀')"), "VARCHAR"]


@pytest.mark.parametrize("duck_type", sorted(TYPES))
@pytest.mark.parametrize("fmt", list(Format))
def test_columns_encode_as_the_per_value_path_does(duck_type: str, fmt: Format) -> None:
    table = _table(duck_type, SEED)
    kinds = _duck_types(duck_type)
    if duck_type == "STRUCT":
        kinds[0] = "STRUCT(a VARCHAR)"
    columnar, reference = RowEncoder(kinds, [fmt]), PerValueEncoder(kinds, [fmt])
    compared = 0
    for batch in table.to_batches(max_chunksize=97):
        for part in (batch, batch.slice(5), batch.slice(0, 0)):  # sliced: Arrow offsets
            try:
                expected = reference.data_rows(part)
            except OutOfRange as exc:  # a value PostgreSQL cannot carry: the same error
                with pytest.raises(OutOfRange, match=str(exc).split(":")[0]):
                    columnar.data_rows(part)
                continue
            assert columnar.data_rows(part) == expected, (duck_type, fmt)
            if fmt == Format.BINARY:
                for framed in (True, False):  # a CopyData message a row, and bare rows
                    got = columnar.copy_binary(part, COPY_SIGNATURE, framed)
                    assert got == reference.copy_binary(part, COPY_SIGNATURE, framed)
            else:
                header = ["x", 'a "b",c']
                for framed in (False, True):  # lines, and each line a CopyData message
                    got = columnar.copy_text(part, framed=framed)
                    assert got == reference.copy_text(part, framed=framed)
                    got = columnar.copy_csv(part, header, framed)
                    assert got == reference.copy_csv(part, header, framed)
            compared += part.num_rows
    assert compared >= ROWS // 2


def test_values_postgresql_cannot_carry_name_their_column() -> None:
    """A date past PostgreSQL's range fails both paths the same way (22008)."""
    con = duckdb.connect()
    table = con.execute("SELECT DATE '5874898-01-01' AS d").to_arrow_table()
    for fmt in Format:
        for encoder in (RowEncoder(["DATE"], [fmt]), PerValueEncoder(["DATE"], [fmt])):
            with pytest.raises(OutOfRange, match='column "d": date out of range'):
                encoder.data_rows(table.to_batches()[0])


def test_zero_columns_and_empty_batches() -> None:
    empty = pa.RecordBatch.from_pydict({})
    three = pa.RecordBatch.from_struct_array(pa.array([{}] * 3, pa.struct([])))
    for batch in (empty, three):
        new, old = RowEncoder([], [0]), PerValueEncoder([], [0])
        assert new.data_rows(batch) == old.data_rows(batch)
        for framed in (False, True):
            assert new.copy_text(batch, framed=framed) == old.copy_text(batch, framed=framed)
            assert new.copy_csv(batch, [], framed) == old.copy_csv(batch, [], framed)
            assert new.copy_csv(batch, None, framed) == old.copy_csv(batch, None, framed)
        for framed in (True, False):
            got = new.copy_binary(batch, COPY_SIGNATURE, framed)
            assert got == old.copy_binary(batch, COPY_SIGNATURE, framed)


MOMENTS = [
    "2026-01-01 00:00:00",
    "2026-01-01 10:20:30",
    "2000-10-10 10:10:10.1",
    "2026-01-01 00:00:00.5",
    "2026-01-01 00:00:00.05",
    "2026-01-01 00:00:00.000001",
    "2026-01-01 00:00:00.100000",
    "1999-12-31 23:59:59.999990",
    "0001-01-01 00:00:00",
    "9999-12-31 23:59:59.999999",
]


def test_timestamps_and_times_are_spelled_as_postgresql_spells_them(postgres: Any) -> None:
    """Trimming the fraction's zeros (Arrow's rtrim on the whole column) drops no digit
    of the seconds: each value's text is real PostgreSQL's, byte for byte."""
    con = duckdb.connect()
    values = pa.table({"v": MOMENTS})
    con.register("moments", values)
    table = con.execute(
        "SELECT v::TIMESTAMP AS ts, v::TIMESTAMP::TIME AS t FROM moments"
    ).to_arrow_table()
    got = RowEncoder(["TIMESTAMP", "TIME"], [Format.TEXT]).wire_values(table.to_batches()[0])
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        expected = conn.execute(
            "SELECT v::timestamp::text, v::timestamp::time::text FROM unnest(%s::text[]) v",
            [MOMENTS],
        ).fetchall()
    assert list(zip(*(c.to_pylist() for c in got), strict=True)) == [
        (a.encode(), b.encode()) for a, b in expected
    ]


def test_a_batch_too_big_for_the_kept_row_orders_frames_as_its_parts_do() -> None:
    """A batch whose row order is not kept (more than a million parts) gives the bytes
    its slices give, each framed with a kept order."""
    con = duckdb.connect()
    rows = 300_000  # 4 parts a row (two runs of lengths, two texts): 1.2M
    sql = (
        "SELECT 'n' || range AS a, CASE WHEN range % 7 = 0 THEN NULL ELSE range END AS b"
        f" FROM range({rows})"
    )
    batch = con.execute(sql).to_arrow_table().combine_chunks().to_batches()[0]
    encoder = RowEncoder(["VARCHAR", "BIGINT"], [Format.TEXT])
    parts = [batch.slice(start, 30_000) for start in range(0, rows, 30_000)]
    assert encoder.data_rows(batch) == b"".join(encoder.data_rows(part) for part in parts)


def test_a_lone_end_of_data_marker_is_quoted_in_csv_as_postgresql_quotes_it(
    postgres: Any,
) -> None:
    """A value (or a header name) ``\\.`` of a one-column CSV COPY is quoted, as
    PostgreSQL quotes it: unquoted, alone on its line, it ends the data of the COPY FROM
    that reads the file back (the rows after it were lost); beside another column it is
    left as it is, as PostgreSQL leaves it."""
    values = ["\\.", "a", "\\.x", None, ""]
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        for names in (["\\."], ["\\.", "b"]):
            columns = ", ".join(f'v AS "{name}"' for name in names)
            sql = f"SELECT {columns} FROM unnest(%s::text[]) WITH ORDINALITY AS u(v, i)"
            sql += " ORDER BY i"
            copied = b""
            with conn.cursor().copy(
                f"COPY ({sql}) TO STDOUT (FORMAT csv, HEADER)", [values]
            ) as copy:
                for chunk in copy:
                    copied += bytes(chunk)
            batch = pa.record_batch([pa.array(values, pa.string())] * len(names), names=names)
            kinds = ["VARCHAR"] * len(names)
            for encoder in (RowEncoder, PerValueEncoder):
                assert encoder(kinds, [Format.TEXT]).copy_csv(batch, names) == copied, names


@pytest.mark.parametrize("oid", [Oid.FLOAT4, Oid.FLOAT8])
def test_rounding_bound_candidates_of_a_mixed_column_are_each_values_own(oid: int) -> None:
    """The check runs only over the values at least ROUND_BOUNDS_FROM (the rest of a
    column skips it): each row's answer is the one it gets alone, in any mix."""
    rng = random.Random(SEED)
    dtype = np.float32 if oid == Oid.FLOAT4 else np.float64
    big = ROUND_BOUNDS_FROM[oid]
    values = [big * rng.choice([1, 3, 5, 10, 125, 1e3, 1e10, 2.5]) for _ in range(60)]
    # candidates: 1e23 (float8), 9e9 and 3e10 (float4)
    known = [1e23, -1e23] if oid == Oid.FLOAT8 else [9e9, 3e10]
    values += [rng.uniform(-1e6, 1e6) for _ in range(60)] + [math.nan, math.inf, *known]
    rng.shuffle(values)
    numbers = np.array(values, dtype)
    alone = [bool(bound_candidates(numbers[i : i + 1], oid)[0]) for i in range(len(numbers))]
    assert bound_candidates(numbers, oid).tolist() == alone
    assert any(alone)  # some of the big values are candidates
    assert not bound_candidates(np.array([1.5, -2.0, math.nan], dtype), oid).any()


def test_duckdb_batches_are_sized_from_a_fixed_width_row() -> None:
    """A result of fixed-width columns is read from DuckDB in the encoder's groups (no
    gathering); one with a column of any size (text, numeric, lists) in DuckDB's
    vectors, and never fewer rows than those."""
    assert batch_rows(["BIGINT", "DOUBLE", "TIMESTAMP", "BOOLEAN"]) == GATHER_ROWS
    for kinds in (["BIGINT", "VARCHAR"], ["DECIMAL(18,3)"], ["INTEGER[]"], [], ["BLOB"]):
        assert batch_rows(kinds) == DUCKDB_ROWS, kinds
    wide = batch_rows(["BIGINT"] * 20)  # 160 bytes a row
    assert DUCKDB_ROWS < wide < GATHER_ROWS and wide * 160 <= GATHER_BYTES
    assert wide % DUCKDB_ROWS == 0
    assert batch_rows(["BIGINT"] * 300) == DUCKDB_ROWS
