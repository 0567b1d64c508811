"""Floating sums under retention deletes, kept per segment (live/fold/segments.py).

A DELETE re-reads only the segments it cut; a group's sum is its segments' sums added.
Values here are small dyadic doubles, which add exactly in any order, so every result
must equal a full run bit for bit; the counters show which path ran."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import duckflock
from duckflock.live.fold import segments

SQL = "SELECT k, count(*) AS n, sum(v) AS s, avg(v) AS a, count(v) AS c FROM t GROUP BY k"
START = dt.datetime(2026, 1, 1)


def at(second: int) -> dt.datetime:
    return START + dt.timedelta(seconds=second)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often segments were built, settled a delete, and read cells back."""
    calls = {"build": 0, "settled": 0, "cells": 0}
    build, settle, cells = segments.build, segments.settle, segments._cells

    def counting_build(*args: Any) -> Any:
        calls["build"] += 1
        return build(*args)

    def counting_settle(*args: Any) -> Any:
        done = settle(*args)
        calls["settled"] += done is not None
        return done

    def counting_cells(retraction: Any, kept: Any, cut: list[int]) -> str:
        calls["cells"] += len(cut)
        return cells(retraction, kept, cut)

    monkeypatch.setattr(segments, "build", counting_build)
    monkeypatch.setattr(segments, "settle", counting_settle)
    monkeypatch.setattr(segments, "_cells", counting_cells)
    monkeypatch.setattr(segments, "_ROWS_PER_SEGMENT", 500)  # cells of ~500 rows
    return calls


def bits(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    def one(x: Any) -> Any:
        return (
            ("nan",)
            if isinstance(x, float) and math.isnan(x)
            else (x, math.copysign(1, x))
            if isinstance(x, float)
            else x
        )

    return sorted((tuple(one(x) for x in row) for row in rows), key=repr)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[duckflock.Database]:
    with duckflock.connect(tmp_path / "s.duckdb") as db:
        db.execute(
            "CREATE TABLE t AS SELECT (range % 7)::INTEGER AS k, "
            "((range % 64) * 0.25)::DOUBLE AS v, "
            "TIMESTAMP '2026-01-01' + to_seconds(range) AS ts FROM range(5000)"
        )
        db.analysis("r", SQL)
        db.result("r", min_version=1, timeout=60)
        yield db


def agree(db: duckflock.Database) -> None:
    result = db.refresh("r", timeout=60)
    assert result.mode == "incremental", result.reason
    assert bits(result.rows()) == bits(db.execute(SQL).fetchall())


def test_a_delete_reads_back_only_the_segments_it_cut(
    db: duckflock.Database, counted: dict[str, int]
) -> None:
    db.execute("DELETE FROM t WHERE ts < ?", [at(120)])
    agree(db)  # the first delete cuts the table into segments: one scan
    assert counted == {"build": 1, "settled": 0, "cells": 0}
    for i, second in enumerate([170, 900, 905, 2400]):
        db.execute("DELETE FROM t WHERE ts < ?", [at(second)])
        agree(db)
        assert counted["build"] == 1 and counted["settled"] == i + 1
    assert counted["cells"] <= 6  # one or two cells a delete (10 in the table)


def test_appended_rows_join_their_segments(db: duckflock.Database, counted: dict[str, int]) -> None:
    db.execute("DELETE FROM t WHERE ts < ?", [at(100)])
    agree(db)
    late = [{"k": 1, "v": 100.5, "ts": at(130)}, {"k": 9, "v": 0.5, "ts": at(4000)}]
    later = [{"k": 9, "v": None, "ts": at(6000)}, {"k": 2, "v": 1.0, "ts": None}]
    early = [{"k": 3, "v": 4.0, "ts": at(-50)}, {"k": 9, "v": 8.0, "ts": at(150)}]
    for rows, second in [(late, 200), (later, 210), (early, 160), ([], 3000)]:
        db.insert("t", rows)
        agree(db)  # appended: folded and added to their segments
        db.execute("DELETE FROM t WHERE ts < ? OR v = 100.5", [at(second)])
        agree(db)
    assert counted["build"] == 1 and counted["settled"] == 4
    db.execute("DELETE FROM t WHERE ts IS NULL OR k = 9")
    agree(db)


def test_float_cancellation_across_segments(
    db: duckflock.Database, counted: dict[str, int]
) -> None:
    """1e16 + 1.0 - 1e16 is 0.0 in doubles; the sum of what is left is 1.0 (the 1e16's
    segment emptied, or read back)."""
    db.execute("DELETE FROM t WHERE ts < ?", [at(100)])
    agree(db)
    # groups of their own: an appended batch adds as DuckDB adds it, in its order
    db.insert("t", [{"k": 11, "v": 1e16, "ts": at(300)}, {"k": 11, "v": 1.0, "ts": at(1300)}])
    db.insert("t", [{"k": 12, "v": 1e16, "ts": at(301)}, {"k": 12, "v": 1.0, "ts": at(302)}])
    agree(db)
    db.execute("DELETE FROM t WHERE v = 1e16")
    agree(db)
    assert counted["settled"] == 1


def test_segments_of_another_state_are_cut_afresh(
    db: duckflock.Database, counted: dict[str, int]
) -> None:
    """A fold that does not add its rows to the segments (DuckDB folds from a NaN on)
    leaves them describing a state that is gone: the next delete cuts new ones, or
    recomputes the groups where a NaN makes segments useless; a CHECKPOINT that
    vacuums deleted rows moves row ids, never the segments (they are value ranges)."""
    db.execute("DELETE FROM t WHERE ts < ?", [at(100)])
    agree(db)
    db.execute("CHECKPOINT")
    db.execute("DELETE FROM t WHERE ts < ?", [at(2000)])
    db.execute("CHECKPOINT")
    agree(db)
    assert counted == {"build": 1, "settled": 1, "cells": counted["cells"]}
    db.insert("t", [{"k": 4, "v": float("nan"), "ts": at(4500)}])
    agree(db)
    db.execute("DELETE FROM t WHERE ts < ?", [at(2100)])
    agree(db)  # k = 4 holds a NaN: its sum is DuckDB's again
    db.execute("DELETE FROM t WHERE v IS NULL OR isnan(v)")
    agree(db)
    db.execute("DELETE FROM t WHERE ts < ?", [at(2500)])
    agree(db)
    assert counted["build"] >= 2


def test_a_delete_across_the_segments_recomputes_and_stops_keeping_them(
    db: duckflock.Database, counted: dict[str, int]
) -> None:
    """Rows deleted out of the column's order cut every segment: reading them all back
    would cost more than recomputing the groups, which is done, from then on."""
    db.execute("DELETE FROM t WHERE ts < ?", [at(100)])
    agree(db)
    db.execute("DELETE FROM t WHERE k = 3 AND v > 2")
    agree(db)
    db.execute("DELETE FROM t WHERE ts < ?", [at(700)])
    agree(db)
    assert counted == {"build": 1, "settled": 0, "cells": 0}
