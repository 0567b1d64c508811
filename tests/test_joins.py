"""A join's fold off the database's transaction (live/joins.py): the new fact rows joined
with the copy of the dimension rows the state was folded with, on the detached instance.
Each result equals a full run; where the copy could compare otherwise (a collation) the
fold stays in the pinned transaction."""

from __future__ import annotations

from typing import Any

import duckdb
import pytest

import duckflock
from duckflock.live import joins
from duckflock.live.fold import merges

FACTS = "CREATE TABLE f (k INTEGER, g VARCHAR, v DOUBLE)"
SQL = (
    "SELECT d.site, count(*) AS n, sum(f.v) AS s, count(d.site) AS sites FROM f "
    "JOIN d ON f.g = d.g GROUP BY d.site"
)


def _rows(round_: int) -> list[dict[str, Any]]:
    keys = ["a", "b", "A", None, "c", "é"]
    return [
        {"k": i, "g": keys[(round_ + i) % len(keys)], "v": [0.5, -1.25, 2.0][i % 3]}
        for i in range(40)
    ]


@pytest.mark.parametrize(
    ("dimension", "detached"),
    [
        ("CREATE TABLE d (g VARCHAR, site VARCHAR)", True),
        ("CREATE TABLE d (g VARCHAR COLLATE NOCASE, site VARCHAR)", False),
    ],
)
def test_a_join_folds_detached_until_its_dimension_changes(
    dimension: str, detached: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NULL keys on both sides, a key twice in the dimension, a NULL site: every refresh
    equals a full run. Folds run on the copy (joins.fold) except the first after each
    build, and never for a collated dimension; a write to the dimension rebuilds."""
    folds: list[bool] = []
    fold = joins.fold

    def counted(*args: Any) -> Any:
        done = fold(*args)
        folds.append(done is not None)
        return done

    monkeypatch.setattr(joins, "fold", counted)
    db = duckflock.connect()
    try:
        db.execute(FACTS)
        db.execute(dimension)
        db.execute(
            "INSERT INTO d VALUES ('a', 'n'), ('b', 's'), ('b', 'x'), (NULL, 'z'), ('c', NULL)"
        )
        db.analysis("joined", SQL)
        db.refresh("joined")  # the state, built
        for round_ in range(8):
            if round_ == 4:
                db.insert("d", {"g": "é", "site": "n"})
            db.insert("f", _rows(round_))
            result = db.refresh("joined")
            assert result.error is None, result.error
            full = db.execute(SQL).fetchall()
            assert sorted(result.rows(), key=repr) == sorted(full, key=repr), round_
            assert result.mode == ("full" if round_ == 4 else "incremental"), result.reason
        # a build before 0 and at 4, the pinned fold (which copies) at 0 and 5: detached
        # at 1-3 and 6-7
        assert folds == ([True] * 5 if detached else []), folds
    finally:
        db.close()


@pytest.mark.parametrize(
    ("kind", "keys"),
    [
        # NaN joins NaN and -0.0 joins 0.0 in DuckDB; pyarrow's evaluation of a join's
        # pushed-down min/max and IN filters over an Arrow scan dropped both
        ("DOUBLE", [-0.0, float("nan"), 1.5, None, 0.0]),
        # an Arrow scan refuses a pushed-down filter on a VARINT
        ("VARINT", [1, 10**30, 2, None, 1]),
    ],
)
def test_a_detached_join_matches_keys_as_duckdb_does(kind: str, keys: list[Any]) -> None:
    sql = "SELECT d.site, count(*) AS n, sum(f.v) AS s FROM f JOIN d ON f.g = d.g GROUP BY d.site"
    db = duckflock.connect()
    try:
        db.execute(f"CREATE TABLE f (g {kind}, v INTEGER)")
        db.execute(f"CREATE TABLE d (g {kind}, site VARCHAR)")
        db.execute(
            "INSERT INTO d VALUES (?, 'zero'), (?, 'nan'), (?, 'x'), (NULL, 'null')",
            [keys[4], keys[1], keys[2]],
        )
        db.analysis("joined", sql)
        db.refresh("joined")
        for round_ in range(3):  # the second and third fold run on the copy
            db.insert("f", [(key, i) for i, key in enumerate(keys)])
            result = db.refresh("joined")
            assert result.error is None, result.error
            full = db.execute(sql).fetchall()
            assert sorted(map(tuple, result.rows())) == sorted(full), round_
    finally:
        db.close()


def test_a_join_folds_on_after_another_database_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Closing a Database closes the detached instances no other open database's plans
    name: a join's copy of its dimensions is among the settings its database names, so
    its folds stay on the copy (the copy's instance was closed, and the next fold copied
    again). Each fold reads only the new rows (merges.fold), not the whole state."""
    sql = "SELECT d.site, count(*) AS n, sum(f.v) AS s FROM f JOIN d ON f.g = d.g GROUP BY d.site"
    folds: list[bool] = []
    rowwise: list[bool] = []
    fold, by_rows = joins.fold, merges.fold

    def counted(*args: Any) -> Any:
        done = fold(*args)
        folds.append(done is not None)
        return done

    def merged(*args: Any) -> Any:
        done = by_rows(*args)
        rowwise.append(done is not None)
        return done

    monkeypatch.setattr(joins, "fold", counted)
    monkeypatch.setattr(merges, "fold", merged)
    db, other = duckflock.connect(), duckflock.connect()
    try:
        other.execute("CREATE TABLE t (k INTEGER)")
        other.analysis("plain", "SELECT k, count(*) AS n FROM t GROUP BY k")
        other.refresh("plain")
        db.execute("CREATE TABLE f (g VARCHAR, v INTEGER)")
        db.execute("CREATE TABLE d (g VARCHAR, site VARCHAR)")
        db.execute("INSERT INTO d VALUES ('a', 'A'), ('b', 'B')")
        db.analysis("joined", sql)
        db.refresh("joined")
        for round_ in range(4):
            if round_ == 2:  # the copy is on the detached instance by now
                other.close()
            db.insert("f", [("a", 1), ("b", 2), ("c", 3)])
            result = db.refresh("joined")
            assert result.error is None, (round_, result.error)
            assert sorted(result.rows()) == sorted(db.execute(sql).fetchall()), round_
        # round 0 folds in the pinned transaction (and copies); 1-3 on the copy; each
        # merges the new rows' partials into the state by key
        assert folds == [True] * 3, folds
        assert rowwise == [True] * 4, rowwise
    finally:
        other.close()
        db.close()


def test_a_joins_copy_is_closed_with_its_analysis(monkeypatch: pytest.MonkeyPatch) -> None:
    """The detached cursor holding a join's copy is closed when the analysis is
    dropped and when its database closes (not left to the garbage collector)."""
    sql = "SELECT d.site, count(*) AS n FROM f JOIN d ON f.g = d.g GROUP BY d.site"
    copies: list[joins.Dimensions | None] = []
    copied = joins.copied

    def kept(*args: Any) -> Any:
        copies.append(copied(*args))
        return copies[-1]

    monkeypatch.setattr(joins, "copied", kept)
    db = duckflock.connect()
    try:
        db.execute("CREATE TABLE f (g VARCHAR, v INTEGER)")
        db.execute("CREATE TABLE d (g VARCHAR, site VARCHAR)")
        db.execute("INSERT INTO d VALUES ('a', 'A'), ('b', 'B')")
        for name in ("dropped", "closed"):
            db.analysis(name, sql)
            db.refresh(name)
            db.insert("f", [("a", 1), ("b", 2)])
            db.refresh(name)  # the pinned fold: copies
        cursors = [copy.cursor for copy in copies if copy is not None]
        assert len(cursors) == 2, copies
        for cursor in cursors:
            cursor.execute("SELECT 1")  # open
        db.drop_analysis("dropped")
        with pytest.raises(duckdb.ConnectionException):
            cursors[0].execute("SELECT 1")
        cursors[1].execute("SELECT 1")
    finally:
        db.close()
    with pytest.raises(duckdb.ConnectionException):
        cursors[1].execute("SELECT 1")
