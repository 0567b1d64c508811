"""Inputs found by attacking round 6's fast paths (numpy folds, sketches, the lookup
join, the settings epoch): each live result equals the same SQL run in full."""

from __future__ import annotations

import pyarrow as pa
import pytest

import duckflock
from duckflock.live.fold import sketches


def _equal_to_full(db: duckflock.Database, sql: str) -> None:
    result = db.refresh("a")
    assert result.error is None, result.error
    assert sorted(result.rows(), key=repr) == sorted(db.execute(sql).fetchall(), key=repr)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT k, approx_count_distinct(x) AS a FROM t GROUP BY k",
        "SELECT k, count(*) FILTER (x > 0) AS c FROM t GROUP BY k",
        "SELECT k + 1 AS k1, max(x) AS m FROM t GROUP BY k + 1",
    ],
)
def test_a_program_reading_a_ubigint_column_plans_and_folds(sql: str) -> None:
    """The probe rows reach UBIGINT's top (past a signed 64-bit integer): planning such a
    program raised OverflowError out of ``db.analysis``."""
    db = duckflock.connect(config={"threads": 1})
    db.execute("CREATE TABLE t (k INTEGER, x UBIGINT)")
    db.analysis("a", sql)
    for rows in ([(1, 2**64 - 1), (2, 0)], [(1, 5), (None, 2**63)]):
        db.insert("t", rows)
        _equal_to_full(db, sql)
    db.close()


@pytest.mark.parametrize("kind", [pa.int16(), pa.int32(), pa.int64(), pa.uint32(), pa.uint64()])
def test_the_codes_of_a_sliced_array_are_its_values(kind: pa.DataType) -> None:
    """An array that starts past its buffer's first value (a slice) hashes its own values,
    not those at the start of the buffer."""
    values = pa.array(range(100), kind)
    assert sketches.codes(values.slice(10, 5)).equals(sketches.codes(values).slice(10, 5))


@pytest.mark.parametrize(
    ("sql", "setting"),
    [
        (
            "SELECT date_trunc('day', tz) AS d, count(*) AS c FROM w GROUP BY 1",
            "SET GLOBAL TimeZone = 'Pacific/Chatham'",
        ),
        ("SELECT s, count(*) AS c FROM w GROUP BY s", "SET GLOBAL default_collation = 'nocase'"),
    ],
)
@pytest.mark.parametrize("closed", [True, False])
def test_a_global_set_on_a_raw_cursor_rebuilds_the_state(
    sql: str, setting: str, closed: bool
) -> None:
    """A raw cursor may change settings where the Database does not see it: while one has
    been handed out, every refresh reads the settings (the epoch alone is not trusted),
    as the window's bound does."""
    db = duckflock.connect(config={"threads": 1})
    db.execute("CREATE TABLE w (tz TIMESTAMPTZ, s VARCHAR)")
    db.analysis("a", sql)
    rows = [("2026-01-01 10:00:00+00", "a"), ("2026-01-01 23:00:00+00", "A")]
    db.insert("w", [{"tz": tz, "s": s} for tz, s in rows])
    _equal_to_full(db, sql)
    cursor = db.cursor()
    cursor.execute(setting)
    if closed:
        cursor.close()
    db.insert("w", [{"tz": tz, "s": s} for tz, s in rows])
    _equal_to_full(db, sql)
    db.close()
