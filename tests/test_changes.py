"""Changes, not snapshots: applying each version's change to the first snapshot gives
every later version, for every shape of the differential tester (incremental, windowed
and full), under random inserts, deletes and updates.

Rows are compared as DuckDB compares them: multisets, by ``EXCEPT ALL`` both ways.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import itertools
import threading
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import duckflock
from duckflock import Change
from duckflock.core.wide import readable
from test_differential import SCHEMA, SHAPES

DIFF = "__diff"
# full-mode analyses (no incremental plan): duplicates, windows, non-mergeable aggregates
FULL = {
    "full rows": "SELECT k, g, v FROM f WHERE g IS DISTINCT FROM 0",
    "full window": "SELECT k, seq, row_number() OVER (PARTITION BY k ORDER BY seq) AS r FROM f",
    "full median": "SELECT k, median(n) AS m, list(g ORDER BY seq) AS gs FROM f GROUP BY k",
    "full distinct": "SELECT DISTINCT e, ok FROM f",
}
ALL = {**SHAPES, **FULL}

KEYS = st.sampled_from([None, "", "a", "A", "b", "é", "zz"])
DOUBLES = st.sampled_from([None, 0.0, -0.0, 1.5, -2.25, float("nan"), float("inf"), 1e300])
SMALL = st.one_of(st.none(), st.integers(-3, 3))
ROW = st.fixed_dictionaries(
    {
        "k": KEYS,
        "c": KEYS,
        "e": st.sampled_from([None, "sad", "ok", "happy"]),
        "g": SMALL,
        "v": DOUBLES,
        "big": DOUBLES,
        "n": st.one_of(st.none(), st.integers(-(2**40), 2**40)),
        "nb": st.one_of(st.none(), st.integers(-(2**62), 2**62)),
        "h": st.one_of(st.none(), st.integers(-(2**100), 2**100)),
        "u": st.one_of(st.none(), st.integers(0, 2**127)),
        "d": st.one_of(st.none(), st.decimals(-(10**6), 10**6, places=4)),
        "minute": st.integers(0, 5),
        "ok": st.one_of(st.none(), st.booleans()),
        "sensor": st.sampled_from([None, "s0", "s1", "s2", "s7"]),
        "user_id": SMALL,
    }
)
# a step: insert rows | delete a group (captured: retention) | update one (a raw write)
STEP = st.one_of(
    st.tuples(st.just("insert"), st.lists(ROW, min_size=1, max_size=6)),
    st.tuples(st.just("delete"), SMALL),
    st.tuples(st.just("update"), SMALL),
)
BASE = dt.datetime(2024, 3, 10, 1, 0)


def _stored(seq: int, row: dict[str, Any]) -> dict[str, Any]:
    ts = BASE + dt.timedelta(minutes=row.pop("minute"))
    d = row["d"]
    return {
        **row,
        "seq": seq,
        "d": None if d is None or not d.is_finite() else decimal.Decimal(d),
        "ts": ts,
        "tz": ts.replace(tzinfo=dt.UTC),
        "iv": dt.timedelta(minutes=seq % 3),
    }


def _plain(table: pa.Table) -> pa.Table:
    return readable(table).rename_columns([f"c{i}" for i in range(table.num_columns)])


@functools.cache
def _oracle() -> duckdb.DuckDBPyConnection:
    """One in-memory DuckDB for the module's comparisons (Arrow tables registered and
    unregistered per use): a connection per comparison cost ~11 ms of CPU each, about a
    third of the first-snapshot test's time."""
    return duckdb.connect(config={"threads": 1})


def apply(held: pa.Table, change: Change) -> pa.Table:
    """``held`` with ``change`` applied (DuckDB's multiset difference and union); every
    row the change removes must be there."""
    if change.snapshot:
        return change.table.drop_columns([DIFF])
    width = held.num_columns
    cols = ", ".join(f"c{i}" for i in range(width))
    held_rows, rows = _plain(held), _plain(change.table).rename_columns([*_names(width), DIFF])
    db = _oracle()
    db.register("held_rows", held_rows)
    db.register("change_rows", rows)
    minus = f"SELECT {cols} FROM change_rows WHERE {DIFF} = -1"
    plus = f"SELECT {cols} FROM change_rows WHERE {DIFF} = 1"
    kept = db.sql(f"SELECT count(*) FROM (FROM held_rows EXCEPT ALL {minus})").fetchone()
    removed = db.sql(f"SELECT count(*) FROM ({minus})").fetchone()
    assert kept is not None and removed is not None
    assert kept[0] == held.num_rows - removed[0], f"{change!r} removes rows it does not hold"
    out = db.sql(f"(FROM held_rows EXCEPT ALL {minus}) UNION ALL {plus}").to_arrow_table()
    db.unregister("held_rows")
    db.unregister("change_rows")
    return out.rename_columns(held.column_names).cast(held.schema)


def _names(width: int) -> list[str]:
    return [f"c{i}" for i in range(width)]


def same_rows(a: pa.Table, b: pa.Table) -> bool:
    """Multiset equality as DuckDB decides it."""
    if a.num_rows != b.num_rows or a.num_columns != b.num_columns:
        return False
    db = _oracle()
    db.register("a", _plain(a))
    db.register("b", _plain(b))
    found = db.sql(
        "SELECT (SELECT count(*) FROM (FROM a EXCEPT ALL FROM b)) "
        "+ (SELECT count(*) FROM (FROM b EXCEPT ALL FROM a))"
    ).fetchone()
    db.unregister("a")
    db.unregister("b")
    return found is not None and found[0] == 0


def _setup(db: duckflock.Database) -> None:
    for statement in SCHEMA:
        db.execute(statement)
    for name, sql in ALL.items():
        db.analysis(name, sql)
    statuses = {status["name"]: status for status in db.analyses()}
    assert not any(statuses[name]["incremental"] for name in FULL)


@pytest.mark.timeout(900)  # ~60 analyses refreshed per step, on a shared machine
@settings(
    max_examples=4,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(steps=st.lists(STEP, min_size=2, max_size=4))
def test_changes_applied_to_the_first_snapshot_give_every_version(
    steps: list[tuple[str, Any]],
) -> None:
    with duckflock.connect(keep_changes=4) as db:
        _setup(db)
        # followed throughout (as a dashboard would): every version's change is kept
        followers = [db.subscribe(name, lambda change: None, changes=True) for name in ALL]
        held: dict[str, tuple[int, pa.Table]] = {}
        seq = 0
        for step, (kind, arg) in enumerate([("insert", []), *steps]):
            if kind == "insert":
                rows = []
                for row in arg:
                    seq += 1
                    rows.append(_stored(seq, dict(row)))
                if rows:
                    db.insert("f", rows, wait=True)
                    db.insert(
                        "w",
                        [
                            {
                                "k": r["k"],
                                "x": r["v"],
                                "ts": dt.datetime.now(dt.UTC).replace(tzinfo=None),
                                "tz": dt.datetime.now(dt.UTC),
                            }
                            for r in rows
                        ],
                        wait=True,
                    )
            elif kind == "delete":
                db.execute("DELETE FROM f WHERE g IS NOT DISTINCT FROM ?", [arg])
            else:
                db.execute("UPDATE f SET v = v + 1 WHERE g IS NOT DISTINCT FROM ?", [arg])
            for name in ALL:
                result = db.refresh(name)
                assert result.error is None, (name, result.error)
                since = held[name][0] if name in held else None
                for change in db.changes(name, since=since, timeout=0):
                    if since is None:
                        assert change.snapshot, change
                    else:
                        assert change.since == since, (name, change, since)
                        assert not change.snapshot, (name, change)
                    current = held[name][1] if name in held else change.table.slice(0, 0)
                    held[name] = (change.version, apply(current, change))
                    since = change.version
                version, rows = held[name]
                assert version == result.version, (name, step)
                assert same_rows(rows, result.table), (name, step, result.reason)
        for follower in followers:
            follower.cancel()


def _counting(db: duckflock.Database) -> None:
    db.execute("CREATE TABLE t (g INTEGER, v INTEGER)")
    db.analysis("per_g", "SELECT g, count(*) AS n, sum(v) AS s FROM t GROUP BY g")


def test_kept_changes_are_bounded_and_older_readers_get_a_snapshot() -> None:
    with duckflock.connect(keep_changes=2) as db:
        _counting(db)
        follower = db.subscribe("per_g", lambda change: None, changes=True)  # kept: followed
        versions = []
        for i in range(5):
            db.insert("t", [(i % 2, i)], wait=True)
            versions.append(db.refresh("per_g").version)
        follower.cancel()
        kept = list(db.changes("per_g", since=versions[-3], timeout=0))
        assert [(c.since, c.version, c.snapshot) for c in kept] == [
            (versions[-3], versions[-2], False),
            (versions[-2], versions[-1], False),
        ]
        (older,) = db.changes("per_g", since=versions[-4], timeout=0)
        assert older.snapshot and older.version == versions[-1]
        assert same_rows(older.table.drop_columns([DIFF]), db.result("per_g").table)
        assert list(db.changes("per_g", since=versions[-1], timeout=0)) == []
        (ahead,) = db.changes("per_g", since=versions[-1] + 5, timeout=0)
        assert ahead.snapshot  # a version this history never had
    with pytest.raises(ValueError, match="keep_changes"):
        duckflock.connect(keep_changes=-1)


@pytest.mark.parametrize(
    ("since", "error"),
    [
        (-1, ValueError),
        ("nope", ValueError),
        ("ab.x", ValueError),
        (1.5, TypeError),
        (2**63, ValueError),  # past any version: was accepted and echoed as a snapshot's since
        ("9" * 5000, ValueError),  # was Python's own "Exceeds the limit (4300 digits)"
        ("ab." + "9" * 30, ValueError),
        ("x" * 10_000, ValueError),  # not echoed back whole
    ],
)
def test_since_is_checked(since: Any, error: type[Exception]) -> None:
    with duckflock.connect() as db:
        _counting(db)
        with pytest.raises(error, match="since"):
            db.changes("per_g", since=since)


def test_a_slow_subscriber_gets_every_change_in_order() -> None:
    with duckflock.connect() as db:
        _counting(db)
        db.refresh("per_g")
        release, arrived = threading.Event(), threading.Condition()
        got: list[Change] = []

        def slow(change: Change) -> None:
            release.wait(30)
            with arrived:
                got.append(change)
                arrived.notify_all()

        subscription = db.subscribe("per_g", slow, changes=True)
        for i in range(6):
            db.insert("t", [(i % 3, i)], wait=True)
            last = db.refresh("per_g")
        release.set()
        with arrived:
            assert arrived.wait_for(
                lambda: bool(got) and got[-1].version == last.version, timeout=30
            )
        subscription.cancel()
        assert got[0].snapshot
        assert all(b.since == a.version and not b.snapshot for a, b in itertools.pairwise(got))
        held = got[0].table.slice(0, 0).drop_columns([DIFF])
        for change in got:
            held = apply(held, change)
        assert same_rows(held, last.table)


def test_unfollowed_changes_are_computed_when_asked_and_readers_resume_with_a_snapshot() -> None:
    """Nobody follows the changes of a full-mode analysis: a refresh does not pay for a
    comparison of the whole result; Result.changes() computes it when asked (equal to
    what a follower gets), and a reader resuming across such a version gets a snapshot."""
    with duckflock.connect() as db:
        db.execute("CREATE TABLE t (g INTEGER, v INTEGER)")
        # ORDER BY … LIMIT: a full run each time (nothing tells which groups changed)
        sql = "SELECT g, count(*) AS n FROM t GROUP BY g ORDER BY g LIMIT 100"
        db.analysis("top", sql)
        db.insert("t", [(g % 5, g) for g in range(50)], wait=True)
        first = db.refresh("top")
        db.insert("t", [(1, 0), (7, 0)], wait=True)
        second = db.refresh("top")
        assert second.change is None  # not computed at publish: nobody followed
        change = second.changes()
        assert change.since == first.version and change.version == second.version
        assert not change.snapshot
        assert sorted(change.rows()) == sorted([(1, 10, -1), (1, 11, 1), (7, 1, 1)])
        assert second.changes() is change  # once
        # a reader resuming from before that version: a snapshot first
        resumed = next(iter(db.changes("top", since=first.version, timeout=0)))
        assert resumed.snapshot and resumed.version == second.version
        # followed from now on: computed at publish, and the reader resumes without one
        followed = db.changes("top", since=second.version, timeout=30)
        db.insert("t", [(2, 0)], wait=True)
        third = db.refresh("top")
        got = next(iter(followed))
        assert third.change is not None and got.since == second.version and not got.snapshot
        assert sorted(got.rows()) == sorted([(2, 10, -1), (2, 11, 1)])
        # a group-by without LIMIT keeps the new rows' key columns, not the touched
        # groups' table, until its change is asked for: the same rows come out
        db.analysis("per_g", "SELECT g, count(*) AS n FROM t GROUP BY g")
        db.refresh("per_g")
        db.insert("t", [(3, 0), (8, 0)], wait=True)
        grouped = db.refresh("per_g")
        assert grouped.mode == "incremental" and grouped.change is None
        assert sorted(grouped.changes().rows()) == sorted([(3, 10, -1), (3, 11, 1), (8, 1, 1)])
