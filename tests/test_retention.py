"""Retention deletes: a DELETE through the Database is taken out of incremental states
(subtracted, or its groups recomputed) instead of rebuilding them, and the result still
equals a full run — with NULL keys, NaN and infinity, concurrent inserts, and every way a
DELETE can reach the database."""

from __future__ import annotations

import math
import os
import re
import threading
from decimal import Decimal
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import duckflock
from duckflock.live import internals
from duckflock.live.fold.capture import returning, selecting, target

EXAMPLES = int(os.environ.get("DUCKFLOCK_RETENTION_EXAMPLES", "10"))
TABLE = "CREATE TABLE m (k VARCHAR, g INTEGER, x DOUBLE, n INTEGER)"
QUERIES = {
    "sums": "SELECT k, count(*) AS c, count(x) AS cx, sum(n) AS s, avg(x) AS a FROM m GROUP BY k",
    "extremes": "SELECT k, g, min(x) AS lo, max(n) AS hi, sum(x) AS s FROM m GROUP BY k, g",
    "global": "SELECT count(*) AS c, sum(x) AS s, min(n) AS lo, max(x) AS hi FROM m",
    "where_having": "SELECT g, count(*) AS c, sum(n) AS s FROM m WHERE n > -50 GROUP BY g "
    "HAVING count(*) > 1 ORDER BY c DESC, g NULLS FIRST LIMIT 3",
    "expression_key": "SELECT n % 3 AS r, max(x) AS hi, count(*) AS c FROM m GROUP BY n % 3",
    # FILTER partials subtract (a sum's hidden count has its FILTER); booleans recompute
    "filters": "SELECT upper(k) AS uk, count(*) FILTER (WHERE n > 0) AS p, "
    "sum(x) FILTER (WHERE n < 20) AS s, avg(n) FILTER (WHERE x > 5) AS a, "
    "bool_and(n > -30) AS ba, bool_or(x > 30) AS bo FROM m GROUP BY 1",
}
# states that cannot take rows out: a DELETE rebuilds them (and they still agree)
REBUILT = {
    "distinct": "SELECT g, count(DISTINCT k) AS dk, approx_count_distinct(n) AS an "
    "FROM m GROUP BY g",
    "winners": "SELECT k, arg_max(n, n) AS hi, first(x ORDER BY x) AS lo FROM m GROUP BY k",
    "joined": "SELECT m.k, count(*) AS c, sum(d.w) AS s FROM m JOIN d USING (g) GROUP BY m.k",
}


def normal(rows: list[tuple[Any, ...]], ordered: bool = False) -> list[tuple[Any, ...]]:
    def value(x: Any) -> Any:
        if isinstance(x, float | Decimal):
            x = float(x)
            return "nan" if math.isnan(x) else round(x, 6)
        return x

    out = [tuple(value(x) for x in row) for row in rows]
    return out if ordered else sorted(out, key=repr)


def reason(db: duckflock.Database, name: str) -> str:
    return str(next(a for a in db.analyses() if a["name"] == name)["reason"])


def agree(db: duckflock.Database, names: dict[str, str] = QUERIES) -> None:
    for name, sql in names.items():
        result = db.refresh(name, timeout=60)
        assert result.error is None, result.error
        ordered = re.search(r"ORDER BY [^)]*$", sql) is not None  # not first(… ORDER BY)
        full = db.execute(sql).fetchall()
        assert normal(result.rows(), ordered) == normal(full, ordered), (name, reason(db, name))


@pytest.fixture
def mdb() -> Any:
    db = duckflock.connect()
    db.execute(TABLE)
    db.insert(
        "m",
        [{"k": [None, "a", "b"][i % 3], "g": i % 4, "x": i / 3, "n": i - 40} for i in range(120)],
    )
    for name, sql in QUERIES.items():
        db.analysis(name, sql)
        db.refresh(name)
    yield db
    db.close()


# -- which statements are captured ------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "parts"),
    [
        ("DELETE FROM m WHERE x < 1", ("m",)),
        ("delete from main.m;", ("main", "m")),
        ("DELETE FROM memory.main.m -- trailing comment", ("memory", "main", "m")),
        ('DELETE FROM "odd ""name"" here" WHERE true', ('odd "name" here',)),
        ("WITH d AS (SELECT 1 AS n) DELETE FROM m WHERE n IN (FROM d)", ("m",)),
        ("/* c */ DELETE FROM m USING other o WHERE m.k = o.k", ("m",)),
        # unreserved keywords are names (these rebuilt every analysis on the table)
        ("DELETE FROM data WHERE x < 1", ("data",)),
        ("DELETE FROM main.value AS v", ("main", "value")),
        ("DELETE FROM ONLY session WHERE true", ("session",)),
        # not captured: its own RETURNING, several statements, EXPLAIN, not a DELETE
        ("DELETE FROM m RETURNING k", None),
        ("DELETE FROM m; DELETE FROM m", None),
        ("SELECT 1; DELETE FROM m", None),
        ("EXPLAIN ANALYZE DELETE FROM m", None),
        ("UPDATE m SET x = 1", None),
        ("DELETE FROM", None),
    ],
)
def test_target_names_the_deleted_table_or_declines(sql: str, parts: Any) -> None:
    assert target(sql) == parts


@pytest.mark.parametrize(
    ("sql", "select"),
    [
        ("DELETE FROM m WHERE x < 1;", "SELECT * FROM m WHERE x < 1;"),
        ("delete FROM m AS z -- c", "SELECT * FROM m AS z -- c"),
        # a CTE or subquery may sample or LIMIT: as many rows twice, not the same ones
        ("WITH d AS (SELECT 1) delete FROM m AS z", None),
        ("DELETE FROM m WHERE n IN (FROM m TABLESAMPLE 3 ROWS)", None),
        ("DELETE FROM m WHERE n IN (FROM m LIMIT 3)", None),
        (
            "DELETE FROM m WHERE x IS DISTINCT FROM extract(year FROM now())",
            "SELECT * FROM m WHERE x IS DISTINCT FROM extract(year FROM now())",
        ),
        ("DELETE FROM m USING o WHERE m.k = o.k", None),
        ("DELETE FROM m WHERE x < random()", None),
    ],
)
def test_selecting_reads_the_rows_a_delete_deletes(sql: str, select: str | None) -> None:
    assert selecting(sql) == select


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM t WHERE v < 2;",
        "DELETE FROM t WHERE v < 2 ;  ;\n",
        "DELETE FROM t WHERE v < 2 -- the old ones",
        "DELETE FROM t WHERE v < 2 /* why */",
        "WITH x AS (SELECT 2 AS v) DELETE FROM t WHERE v < (FROM x);",
    ],
)
def test_returning_survives_trailing_semicolons_and_comments(sql: str) -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT range AS v FROM range(5)")
    assert sorted(con.execute(returning(sql)).fetchall()) == [(0,), (1,)]


# -- through the Database -----------------------------------------------------------


def test_a_delete_is_taken_out_not_rebuilt(mdb: duckflock.Database) -> None:
    result = mdb.execute("DELETE FROM m WHERE n < ?;", [-20])
    assert result.fetchall() == [(20,)]  # what a plain DELETE answers
    assert result.description[0][:2] == ("Count", "BIGINT")
    agree(mdb)
    for name in QUERIES:
        assert "took out 20 deleted" in reason(mdb, name), reason(mdb, name)


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM m WHERE k IS NULL -- all NULL keys",
        "WITH old AS (SELECT -30 AS n) DELETE FROM m WHERE n < (FROM old)",
        "DELETE FROM main.m WHERE g = 2 AND x > 10;",
        "DELETE FROM m",
        "DELETE FROM m WHERE false",
        # through RETURNING *: a join, and a predicate that differs between runs
        "DELETE FROM m USING (SELECT 'a' AS k) AS o WHERE m.k = o.k",
        "DELETE FROM m WHERE random() < 2 AND n > 0",
    ],
)
def test_delete_forms_agree_with_a_full_run(mdb: duckflock.Database, sql: str) -> None:
    mdb.execute(sql)
    agree(mdb)
    assert all("incremental" in reason(mdb, name) for name in QUERIES)


def test_deletes_that_pick_rows_at_random_take_out_the_rows_deleted(
    mdb: duckflock.Database,
) -> None:
    # a SELECT before the DELETE picked other rows, as many: their rows were subtracted
    mdb.execute("CREATE MACRO coin(p) AS random() < p")
    mdb.execute("CREATE VIEW picked AS SELECT n FROM m ORDER BY random() LIMIT 5")
    agree(mdb)  # the DDL rebuilt the states: start from here
    for sql in [
        "DELETE FROM m WHERE n IN (SELECT n FROM m TABLESAMPLE 5 ROWS)",
        "DELETE FROM m WHERE n IN (FROM picked)",
        'DELETE FROM m WHERE "coin"(0.2)',
    ]:
        mdb.execute(sql)
        agree(mdb)
        assert all("took out" in reason(mdb, name) for name in QUERIES), sql


def test_a_table_named_by_a_keyword_is_taken_out_too() -> None:
    with duckflock.connect() as db:
        db.execute("CREATE TABLE data (k INTEGER, n INTEGER)")
        db.insert("data", [(i % 3, i) for i in range(30)])
        sql = "SELECT k, count(*) AS c, sum(n) AS s FROM data GROUP BY k"
        db.analysis("per_k", sql)
        db.refresh("per_k")
        assert db.execute("DELETE FROM ONLY data WHERE n < ?", [10]).fetchall() == [(10,)]
        agree(db, {"per_k": sql})
        assert "took out 10 deleted" in reason(db, "per_k"), reason(db, "per_k")


def test_states_that_cannot_take_rows_out_rebuild_and_agree(mdb: duckflock.Database) -> None:
    mdb.execute("CREATE TABLE d (g INTEGER, w INTEGER)")
    mdb.insert("d", [{"g": g, "w": g * 10} for g in range(4)])
    for name, sql in REBUILT.items():
        mdb.analysis(name, sql)
        mdb.refresh(name)
    mdb.insert("m", [{"k": "a", "g": 1, "x": 2.5, "n": 70}])
    agree(mdb, QUERIES | REBUILT)  # CREATE TABLE rebuilt QUERIES' states: done here
    assert all(reason(mdb, name).startswith("incremental") for name in REBUILT)
    mdb.execute("DELETE FROM m WHERE n > ?", [40])
    agree(mdb, QUERIES | REBUILT)
    for name in REBUILT:
        assert "could not be taken out" in reason(mdb, name), reason(mdb, name)
    for name in QUERIES:
        assert "took out" in reason(mdb, name), reason(mdb, name)


def test_nan_and_infinity_recompute_their_groups(mdb: duckflock.Database) -> None:
    mdb.insert("m", [{"k": "a", "g": 1, "x": math.nan, "n": 5}, {"k": None, "x": math.inf}])
    agree(mdb)
    mdb.execute("DELETE FROM m WHERE isnan(x) OR isinf(x)")
    agree(mdb)
    mdb.execute("DELETE FROM m WHERE x > 30")
    agree(mdb)


def test_a_rolled_back_delete_changes_nothing(mdb: duckflock.Database) -> None:
    mdb.execute("BEGIN")
    assert mdb.execute("DELETE FROM m WHERE n < 0").fetchall() == [(40,)]
    mdb.execute("ROLLBACK")
    agree(mdb)
    assert mdb.execute("SELECT count(*) FROM m").fetchone() == (120,)


def test_a_committed_delete_in_an_explicit_transaction_rebuilds(mdb: duckflock.Database) -> None:
    mdb.execute("BEGIN")
    mdb.execute("DELETE FROM m WHERE n < 0")
    mdb.execute("COMMIT")
    agree(mdb)
    assert all(reason(mdb, name).startswith("full") for name in QUERIES)


def test_other_paths_rebuild_and_agree(mdb: duckflock.Database) -> None:
    mdb.executemany("DELETE FROM m WHERE n = ?", [[1], [2]])
    agree(mdb)
    mdb.sql("DELETE FROM m WHERE n = 3")
    agree(mdb)
    mdb.transaction(lambda cursor: cursor.execute("DELETE FROM m WHERE n = 4"))
    agree(mdb)
    mdb.execute("SELECT 1; DELETE FROM m WHERE n = 5")
    agree(mdb)
    assert mdb.execute("DELETE FROM m WHERE n = 6 RETURNING n").fetchall() == [(6,)]
    agree(mdb)


def test_a_failing_delete_raises_and_leaves_states_intact(mdb: duckflock.Database) -> None:
    with pytest.raises(duckflock.DuckflockError):
        mdb.execute("DELETE FROM m WHERE n < 'not a number'")
    with pytest.raises(duckflock.DuckflockError):
        mdb.execute("DELETE FROM m WHERE n < ?", [1, 2])
    mdb.execute("DELETE FROM m WHERE n < 0")  # the cursor is usable again
    agree(mdb)


def test_a_temporary_table_of_the_same_name_is_not_mistaken(mdb: duckflock.Database) -> None:
    mdb.execute("CREATE TEMP TABLE m AS SELECT * FROM memory.main.m")
    mdb.execute("DELETE FROM m WHERE n < 0")  # the temporary one
    mdb.execute("DROP TABLE temp.m")
    agree(mdb)
    assert mdb.execute("SELECT count(*) FROM m").fetchone() == (120,)


def test_more_rows_than_kept_between_refreshes_rebuild(mdb: duckflock.Database) -> None:
    internals.scheduler(mdb).notices.max_delta_rows = 10
    mdb.execute("DELETE FROM m WHERE n < 0")
    agree(mdb)
    assert all("full" in reason(mdb, name) for name in QUERIES)


def test_tables_without_incremental_analyses_are_deleted_plainly(mdb: duckflock.Database) -> None:
    mdb.execute("CREATE TABLE other (n INTEGER)")
    mdb.execute("INSERT INTO other VALUES (1), (2)")
    agree(mdb)
    assert mdb.execute("DELETE FROM other WHERE n = 1").fetchall() == [(1,)]
    agree(mdb)


# -- concurrent inserts and deletes -------------------------------------------------


def test_deletes_racing_inserts_and_refreshes_stay_exact() -> None:
    db = duckflock.connect()
    try:
        db.execute(TABLE)
        for name, sql in QUERIES.items():
            db.analysis(name, sql, on_change=True, min_interval=0.0)
        start = threading.Barrier(4)
        errors: list[BaseException] = []

        def inserter(worker: int) -> None:
            try:
                start.wait(10)
                for i in range(60):
                    db.insert(
                        "m",
                        [
                            {"k": [None, "a", "b"][j % 3], "g": j % 4, "x": j / 7, "n": i}
                            for j in range(worker, worker + 20)
                        ],
                    )
            except BaseException as exc:
                errors.append(exc)

        def deleter() -> None:
            try:
                start.wait(10)
                for i in range(40):
                    db.execute("DELETE FROM m WHERE n <= ? AND g = ?", [i, i % 4])
                    db.refresh("extremes", timeout=60)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=inserter, args=(w,)) for w in range(2)]
        threads.append(threading.Thread(target=deleter))
        for thread in threads:
            thread.start()
        start.wait(10)
        for _ in range(20):
            db.refresh("sums", timeout=60)
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        db.flush()
        agree(db)
    finally:
        db.close()


# -- the property: any mix of inserts and deletes, incremental == full -------------

values = st.one_of(
    st.none(),
    st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
    st.sampled_from([math.nan, math.inf, -math.inf]),
)
rows = st.lists(
    st.fixed_dictionaries(
        {
            "k": st.sampled_from([None, "a", "b", "c"]),
            "g": st.one_of(st.none(), st.integers(0, 3)),
            "x": values,
            "n": st.one_of(st.none(), st.integers(-100, 100)),
        }
    ),
    min_size=1,
    max_size=15,
)
deletes = st.sampled_from(
    [
        "DELETE FROM m WHERE n < ?",
        "DELETE FROM m WHERE n > ? OR k IS NULL;",
        "DELETE FROM m WHERE g = ? % 4 -- one group",
        "DELETE FROM m WHERE isnan(x) AND n <> ?",
        "WITH c AS (SELECT ? AS v) DELETE FROM m WHERE x >= (FROM c)",
    ]
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), rows),
        st.tuples(st.just("delete"), deletes, st.integers(-100, 100)),
        st.tuples(st.just("check")),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(steps=steps)
def test_property_inserts_and_deletes_equal_a_full_run(steps: list[Any]) -> None:
    db = duckflock.connect()
    try:
        db.execute(TABLE)
        for name, sql in QUERIES.items():
            db.analysis(name, sql)
        for step in steps:
            if step[0] == "insert":
                db.insert("m", step[1])
            elif step[0] == "delete":
                db.execute(step[1], [step[2]])
            else:
                agree(db)
        agree(db)
        for name in QUERIES:  # every delete was taken out, none rebuilt the state
            assert "incremental" in reason(db, name), reason(db, name)
    finally:
        db.close()


def test_plain_shapes_subtract_in_pyarrow(
    mdb: duckflock.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No DuckDB query over the deleted rows for plain shapes (min/max groups whose
    extreme went are still recomputed from the table, by DuckDB)."""
    import duckflock.live.fold.retention as retention

    run = retention.over_arrow
    subtracts: list[str] = []

    def spy(cursor: Any, sql: str, *tables: Any) -> Any:
        if sql.startswith("WITH __gone"):
            subtracts.append(sql)
        return run(cursor, sql, *tables)

    monkeypatch.setattr(retention, "over_arrow", spy)
    mdb.execute("DELETE FROM m WHERE n BETWEEN 0 AND 10")
    agree(mdb, {name: QUERIES[name] for name in ("sums", "extremes", "global")})
    assert subtracts == []
    agree(mdb, {"where_having": QUERIES["where_having"]})  # a WHERE: DuckDB subtracts
    assert len(subtracts) == 1


def test_a_deletes_partials_are_aggregated_when_it_is_captured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The DELETE's caller aggregates the deleted rows per group (``retention.prepare``):
    the refresh subtracts those partials without grouping the rows again, bit for bit
    what a full run gives — a whole group gone, NULL keys, a group that comes back, and
    two DELETEs between refreshes (their partials subtracted together)."""
    import duckflock.live.fold.retention as retention

    grouped = retention._grouped
    calls: list[str] = []

    def spy(retraction: Any, rows: Any) -> Any:
        calls.append(threading.current_thread().name)
        return grouped(retraction, rows)

    monkeypatch.setattr(retention, "_grouped", spy)
    sql = "SELECT k, count(*) AS c, count(n) AS cn, sum(n) AS s, avg(n) AS a FROM t GROUP BY k"
    with duckflock.connect() as db:
        db.execute("CREATE TABLE t (k INTEGER, n BIGINT)")
        keys = [None, 1, 2, 3]
        db.insert("t", [{"k": keys[i % 4], "n": i if i % 5 else None} for i in range(80)])
        db.analysis("a", sql)
        db.refresh("a")
        assert internals.analysis(db, "a").state.shape.plan.retract.exact
        steps: list[Any] = [
            ["DELETE FROM t WHERE n < 10"],
            ["DELETE FROM t WHERE k IS NULL AND n > 40"],
            ["DELETE FROM t WHERE k = 3"],  # the whole group
            [{"k": 3, "n": 5}, {"k": None, "n": None}],  # it comes back
            ["DELETE FROM t WHERE n > 70", "DELETE FROM t WHERE k = 2 AND n < 50"],
        ]
        for step in steps:
            calls.clear()
            if isinstance(step[0], str):
                for delete in step:
                    db.execute(delete)
            else:
                db.insert("t", step)
            captured = list(calls)
            result = db.refresh("a", timeout=60)
            assert result.mode == "incremental", result.reason
            full = db.execute(sql).to_arrow_table()
            assert sorted(map(repr, result.table.to_pylist())) == sorted(
                map(repr, full.to_pylist())
            ), step
            if isinstance(step[0], str):
                assert len(captured) == len(step)  # once per DELETE, as it was captured
                assert calls == captured  # and not again by the refresh


def test_a_deleted_group_the_state_lacks_is_subtracted_by_grouping() -> None:
    """Subtracting by position needs every deleted group in the state; a group it lacks
    (a state that does not describe the rows) goes to the grouping subtraction, as
    before."""
    import duckflock.live.fold.retention as retention

    with duckflock.connect() as db:
        db.execute("CREATE TABLE t (k INTEGER, n BIGINT)")
        db.insert("t", [{"k": i % 3, "n": i} for i in range(9)])
        db.analysis("a", "SELECT k, count(*) AS c, sum(n) AS s FROM t GROUP BY k")
        db.refresh("a")
        analysis = internals.analysis(db, "a")
        plan, state = analysis.state.shape.plan, analysis.state.state
        gone = db.execute("SELECT * FROM t WHERE k = 1 UNION ALL SELECT 7, 5").to_arrow_table()
        partials = retention._arrow_partials(plan.retract, gone, state.schema)
        assert retention._subtract_by_position(plan.retract, state, partials) is None
        out = retention.retract(analysis.state.cursor, plan.retract, state, gone, settle=False)
        assert out is not None
        # group 1 lost its every row, group 7 was never there: neither is left
        assert sorted(out["__k0"].to_pylist()) == [0, 2]


def test_prepared_partials_leave_with_their_rows() -> None:
    """What a DELETE's caller aggregated is kept only while its rows live."""
    import gc

    import duckflock.live.fold.retention as retention

    with duckflock.connect() as db:
        db.execute("CREATE TABLE t (k INTEGER, n BIGINT)")
        db.insert("t", [{"k": i % 3, "n": i} for i in range(9)])
        db.analysis("a", "SELECT k, count(*) AS c, sum(n) AS s FROM t GROUP BY k")
        db.refresh("a")
        retraction = internals.analysis(db, "a").state.shape.plan.retract
        rows = db.execute("SELECT * FROM t WHERE k = 1").to_arrow_table()
        key = id(rows)
        retention.prepare(rows, [retraction])
        assert retention._prepared(retraction, rows) is not None
        assert key in retention._PREPARED
        del rows
        gc.collect()
        assert key not in retention._PREPARED
