"""Careless arguments get errors that say what is accepted, before anything runs."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from pathlib import Path

import pytest

import duckflock
from duckflock import CatalogError


@pytest.fixture
def events(memdb: duckflock.Database) -> duckflock.Database:
    memdb.execute("CREATE TABLE events (v INTEGER)")
    return memdb


@pytest.mark.parametrize("timeout", [math.nan, math.inf, -1, 1e300])
def test_insert_timeouts_must_be_finite_and_in_range(
    events: duckflock.Database, timeout: float
) -> None:
    with pytest.raises(ValueError, match="timeout must be a number of seconds"):
        events.insert("events", {"v": 1}, timeout=timeout)
    with pytest.raises(ValueError, match="timeout must be"):
        events.flush(timeout)
    with pytest.raises(ValueError, match="timeout must be"):
        asyncio.run(events.insert_async("events", {"v": 1}, timeout=timeout))
    assert events.execute("SELECT count(*) FROM events").fetchone() == (0,)


@pytest.mark.parametrize("timeout", ["5", True, [1]])
def test_insert_timeouts_must_be_numbers(events: duckflock.Database, timeout: object) -> None:
    with pytest.raises(TypeError, match="timeout must be a number of seconds"):
        events.insert("events", {"v": 1}, timeout=timeout)  # type: ignore[arg-type]


def test_wait_must_be_a_bool(events: duckflock.Database) -> None:
    with pytest.raises(TypeError, match="wait must be True or False, not str 'yes'"):
        events.insert("events", {"v": 1}, wait="yes")  # type: ignore[arg-type]
    assert events.execute("SELECT count(*) FROM events").fetchone() == (0,)


def test_transaction_takes_a_function(events: duckflock.Database) -> None:
    with pytest.raises(TypeError, match=r"use db\.execute"):
        events.transaction("UPDATE events SET v = 1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retries must be a whole number"):
        events.transaction(lambda cur: None, retries=2.5)  # type: ignore[arg-type]


def test_an_empty_insert_names_its_table(events: duckflock.Database) -> None:
    receipt = events.insert("events", [])
    assert receipt.done
    assert receipt.rows == 0
    assert receipt.table == "events"


def test_suggestions_name_user_tables_only(events: duckflock.Database) -> None:
    with pytest.raises(CatalogError) as unrelated:
        events.execute("SELECT * FROM nothing_like_it")
    assert "Did you mean" not in str(unrelated.value)
    assert "pg_" not in str(unrelated.value)
    with pytest.raises(CatalogError, match=r'Did you mean "events"'):
        events.execute("SELECT * FROM evnts")


@pytest.mark.parametrize(
    ("sql", "said"),
    [
        ("DELETE FROM events", "not a DELETE statement"),
        ("SELECT 1; SELECT 2", "not 2 statements"),
        ("PRAGMA version", "not a PRAGMA statement"),
        ("", "not an empty string"),
    ],
)
def test_an_analysis_that_is_not_one_select_says_what_it_is(
    events: duckflock.Database, sql: str, said: str
) -> None:
    with pytest.raises(duckflock.QueryError, match=said) as refused:
        events.analysis("a", sql)
    assert "serialized" not in str(refused.value)
    assert events.analyses() == []


def test_a_file_that_cannot_be_opened_is_an_open_error(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "folder" / "x.duckdb"
    with pytest.raises(duckflock.OpenError, match="its folder does not exist") as refused:
        duckflock.connect(missing)
    assert not isinstance(refused.value, duckflock.QueryError)
    assert refused.value.path == str(missing)


def test_a_file_another_process_holds_says_so(tmp_path: Path) -> None:
    path = tmp_path / "held.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, duckdb; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
            "sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(duckflock.OpenError, match="another process holds it"):
            duckflock.connect(path)
    finally:
        holder.communicate("", timeout=30)


@pytest.mark.parametrize("config", [{"nope": 1}, {"threads": "many"}])
def test_a_bad_config_is_a_value_error(config: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="is refused by DuckDB") as refused:
        duckflock.connect(config=config)
    assert not isinstance(refused.value, duckflock.DuckflockError)


def test_lone_surrogates_are_refused_with_a_clear_error(events: duckflock.Database) -> None:
    with pytest.raises(ValueError, match=r"sql holds a lone surrogate .* index 8"):
        events.execute("SELECT '\ud800'")
    with pytest.raises(ValueError, match=r"params\[0\] holds a lone surrogate"):
        events.execute("SELECT ?", ["\udfff"])
    with pytest.raises(ValueError, match=r"params\[1\]\[0\] holds a lone surrogate"):
        events.executemany("SELECT ?", [["ok"], ["\ud800"]])
    with pytest.raises(ValueError, match="lone surrogate"):
        events.sql("SELECT '\ud800'")
    with pytest.raises(duckflock.UnknownTableError, match="not a valid table name"):
        events.insert("events\ud800", {"v": 1})
    with pytest.raises(ValueError, match="the analysis name holds a lone surrogate"):
        events.analysis("n\ud800", "SELECT 1")
    assert events.analyses() == []
    assert events.execute("SELECT count(*) FROM events").fetchone() == (0,)
