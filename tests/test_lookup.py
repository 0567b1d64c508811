"""A join's new rows joined with the dimension copy by a pyarrow lookup (live/fold/lookup.py),
admitted by probes (live/plan/joining.py): every refresh equals a full run, the lookup
runs where the plan admits it, and DuckDB's query where a copy or a shape could join
otherwise (a key twice in the dimension, a column both sides have, other key types)."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from typing import Any

import pytest

import duckflock
from duckflock.live.fold import lookup

FACTS = "CREATE TABLE f (k INTEGER, g VARCHAR, n BIGINT)"
DIMENSION = "CREATE TABLE d (g VARCHAR, site VARCHAR, w INTEGER)"
UNIQUE = "INSERT INTO d VALUES ('a', 'n', 1), ('b', 's', 2), (NULL, 'z', 3), ('c', NULL, 4)"
STEPS = int(os.environ.get("DUCKFLOCK_LOOKUP_STEPS", "30"))
KEYS = ["a", "b", "A", None, "c", "é", "x"]  # 'A', 'é', 'x' join nothing; NULL neither


def _rows(round_: int) -> list[tuple[Any, ...]]:
    return [(i, KEYS[(round_ + i) % len(KEYS)], (i * 7) % 11 - 3) for i in range(50)]


@contextlib.contextmanager
def _tables(dimension: str = DIMENSION, facts: str = FACTS) -> Iterator[duckflock.Database]:
    """An in-memory database with the fact table, the dimension and its unique rows."""
    with duckflock.connect() as db:
        db.execute(facts)
        db.execute(dimension)
        db.execute(UNIQUE)
        yield db


@pytest.fixture
def tables() -> Iterator[duckflock.Database]:
    """:func:`_tables` with the usual dimension."""
    with _tables() as db:
        yield db


@pytest.fixture
def looked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of rows each lookup joined: 50 new rows per fold (the plan's probes
    join 211 rows each)."""
    calls: list[int] = []
    joined = lookup.Lookup.joined

    def counted(self: lookup.Lookup, delta: Any) -> Any:
        calls.append(delta.num_rows)
        return joined(self, delta)

    monkeypatch.setattr(lookup.Lookup, "joined", counted)
    return calls


def _refreshes(db: duckflock.Database, sql: str, rounds: range, **between: str) -> None:
    db.analysis("joined", sql)
    db.refresh("joined")
    for round_ in rounds:
        if str(round_) in between:
            db.execute(between[str(round_)])
        db.insert("f", _rows(round_))
        result = db.refresh("joined")
        assert result.error is None, result.error
        full = db.execute(sql).fetchall()
        assert sorted(result.rows(), key=repr) == sorted(full, key=repr), (round_, sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT d.site, count(*) AS c, sum(f.n) AS s, count(d.w) AS cw FROM f JOIN d "
        "ON f.g = d.g GROUP BY d.site",
        "SELECT g, site, count(*) AS c, min(n) AS lo, max(w) AS hi FROM f JOIN d USING (g) "
        "GROUP BY g, site",
        "SELECT site, count(*) AS c, sum(n) AS s, count(w) AS cw FROM f LEFT JOIN d "
        "ON f.g = d.g GROUP BY site",
        "SELECT upper(d.site) AS s, count(*) FILTER (WHERE w > 1) AS c, sum(f.k) AS s FROM f "
        "AS x JOIN d ON d.g = x.g WHERE f.n > -2 OR w = 4 GROUP BY 1",
    ],
)
def test_a_lookup_join_equals_a_full_run(
    sql: str, looked: list[int], tables: duckflock.Database
) -> None:
    """INNER and LEFT, ON and USING, NULL keys on both sides, keys the dimension lacks, a
    WHERE and a FILTER over both sides' columns: the lookup folds (after the first,
    pinned fold) and each result is a full run's."""
    sql = sql.replace("f.k", "x.k").replace("f.n", "x.n") if " AS x " in sql else sql
    _refreshes(tables, sql, range(6))
    assert looked.count(50) == 5, looked


def test_a_dimension_key_twice_joins_by_duckdb_until_it_is_once(
    looked: list[int], tables: duckflock.Database
) -> None:
    """A key twice in the dimension gives a fact row two joined rows (DuckDB's query
    folds); a write to the dimension rebuilds, and the new copy's keys decide again."""
    sql = "SELECT d.site, count(*) AS c, sum(f.n) AS s FROM f JOIN d ON f.g = d.g GROUP BY d.site"
    tables.execute("INSERT INTO d VALUES ('a', 'dup', 9)")
    _refreshes(tables, sql, range(4))
    assert looked.count(50) == 0, looked
    _refreshes(tables, sql, range(4, 8), **{"5": "DELETE FROM d WHERE site = 'dup'"})
    # the rebuild at 5, the pinned fold (which copies) at 6: the lookup at 7
    assert looked.count(50) == 1, looked


def test_a_dimension_changed_between_refreshes_is_looked_up_anew(
    looked: list[int], tables: duckflock.Database
) -> None:
    """An UPDATE of a dimension row rebuilds, and the later lookups join the new copy."""
    sql = "SELECT d.site, count(*) AS c, sum(f.n) AS s FROM f JOIN d ON f.g = d.g GROUP BY d.site"
    changes = {
        "3": "UPDATE d SET site = 'moved' WHERE g = 'b'",
        "6": "UPDATE d SET g = 'x' WHERE g = 'a'",
    }
    _refreshes(tables, sql, range(9), **changes)
    assert looked.count(50) == 4, looked  # at 1-2, 5 and 8


@pytest.mark.parametrize(
    ("dimension", "sql"),
    [
        # d.g is NULL where a LEFT JOIN finds no row; the new rows' own g is not
        (DIMENSION, "SELECT d.g, count(*) AS c FROM f LEFT JOIN d ON f.g = d.g GROUP BY d.g"),
        # USING's g is the fact row's in a LEFT JOIN, d.g the dimension's
        (DIMENSION, "SELECT d.g, count(*) AS c FROM f LEFT JOIN d USING (g) GROUP BY d.g"),
        # keys of two types: DuckDB compares them cast
        (
            "CREATE TABLE d (g VARCHAR(3), site VARCHAR, w BIGINT)",
            "SELECT d.site, count(*) AS c FROM f JOIN d ON f.k = d.w GROUP BY d.site",
        ),
        # a winner among the joined rows: which one DuckDB sees first is its own
        (DIMENSION, "SELECT d.site, arg_max(f.k, f.n) AS top FROM f JOIN d USING (g) GROUP BY 1"),
    ],
)
def test_a_join_the_lookup_could_get_wrong_stays_duckdbs(
    dimension: str, sql: str, looked: list[int]
) -> None:
    with _tables(dimension) as db:
        _refreshes(db, sql, range(4))
        assert looked.count(50) == 0, looked


RANDOM_SHAPES = {
    "inner on": "SELECT d.site, count(*) AS c, sum(f.n) AS s, min(d.w) AS lo FROM f "
    "JOIN d ON f.g = d.g GROUP BY d.site",
    "inner using": "SELECT g, count(*) AS c, max(n) AS hi FROM f JOIN d USING (g) GROUP BY g",
    "left where": "SELECT site, count(*) AS c, sum(w) AS sw FROM f LEFT JOIN d ON f.g = d.g "
    "WHERE f.n > 0 OR d.w IS NULL GROUP BY site",
}


@pytest.mark.parametrize("seed", range(3))
def test_random_facts_and_dimension_writes_equal_full_runs(seed: int, looked: list[int]) -> None:
    """Random new rows (NULL keys, keys the dimension lacks) between random dimension
    writes (a key added, maybe twice, a site moved, rows deleted): every refresh of every
    shape is a full run's, and the lookup folds some of them."""
    rng = random.Random(seed)
    keys = ["a", "b", "c", "A", "é", None]
    facts = "CREATE TABLE f (k INTEGER, g VARCHAR, n BIGINT, b BOOLEAN, i SMALLINT)"
    with _tables(facts=facts) as db:
        for name, sql in RANDOM_SHAPES.items():
            db.analysis(name, sql)
            db.refresh(name)
        for step in range(STEPS):
            if rng.random() < 0.2:
                db.execute(
                    rng.choice(
                        [
                            f"INSERT INTO d VALUES ('{rng.choice('abcx')}', 'new', {step})",
                            "UPDATE d SET site = site || '+' WHERE g = 'b'",
                            "DELETE FROM d WHERE site = 'new' OR w = 3",
                        ]
                    )
                )
            rows = [
                (
                    i,
                    rng.choice(keys),
                    rng.randint(-5, 5),
                    rng.choice([None, True]),
                    i,
                )
                for i in range(rng.randint(1, 40))
            ]
            db.insert("f", rows)
            for name, sql in RANDOM_SHAPES.items():
                result = db.refresh(name)
                assert result.error is None, result.error
                full = db.execute(sql).fetchall()
                assert sorted(result.rows(), key=repr) == sorted(full, key=repr), (seed, step)
        assert any(count != 211 for count in looked), looked
