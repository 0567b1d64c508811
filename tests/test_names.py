"""Names are data: resolved against the catalog, quoted in one place, never spliced."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import duckflock
from duckflock import UnknownTableError
from duckflock.core.names import Identity
from duckflock.core.syntax import READ, SESSION, WRITE, catalog_only, classify, view_query
from duckflock.sql import quote_ident, split_name


def test_a_table_name_cannot_inject_sql(memdb: duckflock.Database) -> None:
    memdb.execute("CREATE TABLE t (x INTEGER)")
    memdb.execute("CREATE TABLE victim (x INTEGER)")
    memdb.execute("INSERT INTO victim VALUES (1)")
    attack = '"t"; DROP TABLE victim; SELECT * FROM "t"'
    with pytest.raises(UnknownTableError, match="not a valid table name"):
        memdb.insert(attack, {"x": 1})
    memdb.lock_down()
    with pytest.raises(UnknownTableError):
        memdb.insert(attack, {"x": 1})
    assert memdb.execute("SELECT count(*) FROM victim").fetchone() == (1,)
    assert memdb.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_malformed_name_fails_its_caller_alone(memdb: duckflock.Database) -> None:
    memdb.execute("CREATE TABLE t (x INTEGER)")
    barrier = threading.Barrier(9)
    errors: list[BaseException] = []

    def good(i: int) -> None:
        barrier.wait()
        for j in range(50):
            memdb.insert("t", {"x": i * 100 + j})

    def bad() -> None:
        barrier.wait()
        for _ in range(50):
            try:
                memdb.insert('"t" WHERE true', {"x": -1})
            except UnknownTableError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=good, args=(i,)) for i in range(8)]
    threads.append(threading.Thread(target=bad))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(errors) == 50
    assert memdb.execute("SELECT count(*), min(x) FROM t").fetchone() == (400, 0)


def test_names_with_quotes_and_dots_round_trip_through_tables(
    memdb: duckflock.Database,
) -> None:
    memdb.execute('CREATE TABLE "a""b" (x INTEGER)')
    memdb.execute('CREATE SCHEMA "s.x"')
    memdb.execute('CREATE TABLE "s.x"."my table" (x INTEGER)')
    names = {t["name"]: t for t in memdb.tables()}
    assert set(names) == {'a"b', '"s.x"."my table"'}
    for name in names:
        memdb.insert(name, {"x": 7})
    assert [t["rows"] for t in memdb.tables()] == [1, 1]
    assert names['"s.x"."my table"']["schema"] == "s.x"


def test_schemas_are_told_apart_by_inserts_and_analyses(memdb: duckflock.Database) -> None:
    memdb.execute("CREATE SCHEMA other")
    memdb.execute("CREATE TABLE events (v INTEGER)")
    memdb.execute("CREATE TABLE other.events (v INTEGER)")
    memdb.insert("events", [{"v": i} for i in range(10)])  # 45
    memdb.analysis("main_sum", "SELECT sum(v) AS s FROM events")
    memdb.analysis("other_sum", "SELECT sum(v) AS s FROM other.events")
    assert memdb.refresh("main_sum").rows() == [(45,)]
    memdb.insert("other.events", {"v": 1000})
    memdb.insert("OTHER.Events", {"v": 1})
    assert memdb.refresh("main_sum").rows() == [(45,)]
    assert memdb.refresh("other_sum").rows() == [(1001,)]
    modes = {a["name"]: a for a in memdb.analyses()}
    assert modes["other_sum"]["tables"] == ["other.events"]
    assert modes["main_sum"]["tables"] == ["events"]


def test_an_analysis_over_a_view_sees_inserts_into_its_base_table(
    memdb: duckflock.Database,
) -> None:
    memdb.execute("CREATE SCHEMA s")
    memdb.execute("CREATE TABLE s.base (v INTEGER)")
    memdb.execute("CREATE TABLE base (v INTEGER)")  # same name, other schema: not read
    memdb.execute("CREATE VIEW s.positive AS SELECT * FROM base WHERE v > 0")
    memdb.analysis("n", "SELECT count(*) AS n FROM s.positive", on_change=True)
    assert memdb.refresh("n").rows() == [(0,)]
    status = memdb.analyses()[0]
    assert status["tables"] == ["s.base"]  # the view binds `base` in its own schema
    assert status["incremental"] is False
    for i in range(10):
        memdb.insert("s.base", {"v": i + 1})
    assert memdb.refresh("n").rows() == [(10,)]
    # and on_change fires for the base table, through the view
    version = memdb.result("n").version  # type: ignore[union-attr]
    memdb.insert("s.base", {"v": 5})
    assert memdb.result("n", min_version=version + 1, timeout=30).rows() == [(11,)]  # type: ignore[union-attr]
    with pytest.raises(UnknownTableError, match="is a view"):
        memdb.insert("s.positive", {"v": 1})


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM query('SELECT count(*) AS n FROM t')",
        "SELECT * FROM query_table('t')",
        "SELECT * FROM counted()",
    ],
)
def test_queries_that_hide_their_tables_refresh_on_every_commit(
    memdb: duckflock.Database, sql: str
) -> None:
    memdb.execute("CREATE TABLE t (v INTEGER)")
    memdb.execute("CREATE MACRO counted() AS TABLE SELECT count(*) AS n FROM t")
    memdb.analysis("hidden", sql, on_change=True)
    first = memdb.refresh("hidden")
    memdb.insert("t", {"v": 1})
    later = memdb.result("hidden", min_version=first.version + 1, timeout=30)
    assert later is not None
    assert later.table.num_rows == 1


@pytest.mark.parametrize(
    "sql", ["SELECT count(*) AS n FROM t;", "SELECT count(*) AS n FROM t -- trailing"]
)
def test_analysis_sql_may_end_in_a_semicolon_or_a_comment(
    memdb: duckflock.Database, sql: str
) -> None:
    memdb.execute("CREATE TABLE t (v INTEGER)")
    memdb.insert("t", [{"v": 1}, {"v": 2}])
    memdb.analysis("n", sql)
    assert memdb.refresh("n").rows() == [(2,)]
    memdb.insert("t", {"v": 3})
    assert memdb.refresh("n").rows() == [(3,)]


@pytest.mark.parametrize(
    "write",
    [
        "db.sql('DELETE FROM t WHERE v < 5')",
        "db.execute('SELECT 1; DELETE FROM t WHERE v < 5')",
        "db.execute('EXPLAIN ANALYZE DELETE FROM t WHERE v < 5')",
        "db.executemany('DELETE FROM t WHERE v < ?', [[5]])",
        "db.execute('WITH x AS (SELECT 5) DELETE FROM t WHERE v < (FROM x)')",
        "db.transaction(lambda c: c.execute('DELETE FROM t WHERE v < 5'))",
    ],
)
def test_every_write_path_makes_incremental_state_rebuild(
    memdb: duckflock.Database, write: str
) -> None:
    memdb.execute("CREATE TABLE t (v INTEGER)")
    memdb.insert("t", [{"v": i} for i in range(10)])
    memdb.analysis("s", "SELECT sum(v) AS s, count(*) AS n FROM t")
    assert memdb.refresh("s").rows() == [(45, 10)]
    eval(write, {"db": memdb})
    memdb.insert("t", {"v": 100})
    assert memdb.refresh("s").rows() == [(135, 6)]
    full = memdb.execute("SELECT sum(v) AS s, count(*) AS n FROM t").fetchall()
    assert memdb.result("s").rows() == full  # type: ignore[union-attr]


def test_a_kept_result_reads_its_own_rows(memdb: duckflock.Database) -> None:
    first = memdb.execute("SELECT 1 AS a")
    second = memdb.execute("SELECT 2 AS b")
    assert first.fetchall() == [(1,)]
    assert second.fetchall() == [(2,)]
    assert [d[0] for d in first.description] == ["a"]
    memdb.execute("SELECT 3").fetchall()  # needs a third cursor: both results live
    before = memdb.open_cursors
    for _ in range(100):
        memdb.execute("SELECT 3").fetchall()  # a result dropped at once frees its cursor
    assert memdb.open_cursors == before


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("SELECT 1", READ),
        ("FROM t", READ),
        ("EXPLAIN SELECT 1", READ),
        ("SELECT 1; DELETE FROM t", WRITE),
        ("EXPLAIN ANALYZE DELETE FROM t", WRITE),
        ("EXPLAIN /* x */ ANALYZE DELETE FROM t", WRITE),
        ("EXPLAIN DELETE FROM t", WRITE),
        ("-- why\nEXPLAIN SELECT 1", READ),  # read by DuckDB's scanner: comments skipped
        ("/* a;b */ BEGIN", READ),
        ("/* a */ ROLLBACK", READ),
        ("-- x\nEXPLAIN /* y */ DELETE FROM t", WRITE),
        ("WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a", WRITE),
        ("CALL checkpoint()", WRITE),
        ("PRAGMA table_info('t')", READ),
        ("SET threads = 2", SESSION),
        ("USE memory", SESSION),
        ("not sql at all", READ),
    ],
)
def test_statements_are_classified_by_the_parser(sql: str, kind: str) -> None:
    assert classify(sql) == kind


@pytest.mark.parametrize(
    ("sql", "only"),
    [
        ("CHECKPOINT", True),
        ("/* nightly */ FORCE CHECKPOINT;", True),
        ("CHECKPOINT other_db", False),
        ("CREATE TABLE x (a INTEGER); -- c\nCHECKPOINT", True),
        ("CALL checkpoint(); DELETE FROM t", False),
    ],
)
def test_checkpoints_are_catalog_only_whatever_comments_surround_them(sql: str, only: bool) -> None:
    assert catalog_only(sql) is only


def test_view_text_is_read_with_quotes_respected() -> None:
    assert view_query('CREATE VIEW "x AS SELECT 1" (a) AS SELECT x FROM t;') == "SELECT x FROM t"
    assert view_query('CREATE VIEW s."v(""" ("a)", b) AS FROM t;') == "FROM t"
    assert view_query("CREATE TABLE t (x INTEGER);") is None


@given(
    st.lists(
        st.text(min_size=1, max_size=12).filter(lambda s: "\x00" not in s), min_size=1, max_size=3
    )
)
@settings(max_examples=200, deadline=None)
def test_quoted_names_parse_back_to_their_parts(parts: list[str]) -> None:
    assert split_name(".".join(quote_ident(p) for p in parts)) == tuple(parts)


@pytest.mark.parametrize("bad", ["", "a..b", '"open', 'a"b.c', "a.b.c.d", '"t" x', "."])
def test_malformed_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each message names the problem
        split_name(bad)


def test_identity_quotes_every_part() -> None:
    identity = Identity("my db", 'sch"ema', "t.x")
    assert identity.sql == '"my db"."sch""ema"."t.x"'
    assert identity.display("my db") == '"sch""ema"."t.x"'


def test_a_result_dropped_half_read_does_not_hold_back_checkpoints(tmp_path: Path) -> None:
    """An idle thread's unfinished result would keep a transaction open, and CHECKPOINT
    (so the WAL's bound) would fail for as long as the thread lives."""
    db = duckflock.connect(str(tmp_path / "c.duckdb"))
    try:
        # a streaming result read by fetchone and dropped: finished on drop
        db.execute("SELECT current_setting('temp_directory')").fetchone()
        db.execute("SELECT * FROM range(1000)").fetchmany(3)
        db.transaction(lambda cur: cur.execute("CREATE TABLE t (x INTEGER)"))
        run_in_thread(lambda: db.execute("CHECKPOINT"))
        reader = db.execute("SELECT * FROM range(100000)").to_arrow_reader(1000)
        assert reader.read_next_batch().num_rows > 0
        db.transaction(lambda cur: cur.execute("CREATE TABLE t2 (x INTEGER)"))
        with pytest.raises(duckflock.TransactionError):  # the reader still streams
            run_in_thread(lambda: db.execute("CHECKPOINT"))
        assert db.execute("SELECT 42").fetchall() == [(42,)]  # beside the reader
        assert sum(batch.num_rows for batch in reader) > 0
        del reader
        run_in_thread(lambda: db.execute("CHECKPOINT"))
    finally:
        db.close()


def test_a_thread_keeps_its_session_across_statements(memdb: duckflock.Database) -> None:
    memdb.execute("CREATE TABLE t (x INTEGER)")
    memdb.execute("BEGIN TRANSACTION")
    memdb.execute("INSERT INTO t VALUES (1)")
    memdb.execute("ROLLBACK")
    assert memdb.execute("SELECT count(*) FROM t").fetchone() == (0,)
    memdb.execute("CREATE TEMP TABLE scratch AS SELECT 7 AS x")
    assert memdb.execute("SELECT x FROM scratch").fetchall() == [(7,)]
    memdb.execute("SET VARIABLE answer = 42")
    assert memdb.execute("SELECT getvariable('answer')").fetchone() == (42,)
    memdb.execute("PREPARE twice AS SELECT 2 * ?")
    assert memdb.execute("EXECUTE twice(21)").fetchall() == [(42,)]


def test_a_result_half_read_then_superseded_says_so(memdb: duckflock.Database) -> None:
    half = memdb.execute("SELECT * FROM range(10)")
    assert half.fetchone() == (0,)
    unread = memdb.execute("SELECT 'kept' AS word")
    memdb.execute("SELECT 3")
    with pytest.raises(ValueError, match="read in part"):
        half.fetchall()
    assert unread.fetchone() == ("kept",)  # an unread result was kept whole
    assert unread.fetchall() == []
    assert [d[0] for d in unread.description] == ["word"]


@pytest.mark.parametrize("method", ["execute", "cursor", "executemany", "begin", "sql"])
def test_a_result_runs_no_sql_past_the_database(memdb: duckflock.Database, method: str) -> None:
    memdb.execute("CREATE TABLE t (x INTEGER)")
    memdb.insert("t", [{"x": i} for i in range(10)])
    memdb.analysis("s", "SELECT sum(x) AS s, count(*) AS n FROM t")
    memdb.refresh("s")
    results = memdb.execute("SELECT 1")
    with pytest.raises(AttributeError, match="run statements with the Database"):
        getattr(results, method)
    memdb.insert("t", {"x": 100})
    assert memdb.refresh("s").rows() == memdb.execute("SELECT sum(x), count(*) FROM t").fetchall()


def run_in_thread(fn: Callable[[], object]) -> None:
    errors: list[BaseException] = []

    def body() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(30)
    if errors:
        raise errors[0]


def test_an_analysis_follows_ddl_on_its_tables_and_views(memdb: duckflock.Database) -> None:
    memdb.execute("CREATE TABLE t (v INTEGER)")
    memdb.execute("CREATE TABLE u (v DOUBLE)")
    memdb.execute("CREATE VIEW w AS SELECT * FROM t")
    memdb.analysis("s", "SELECT sum(v) AS s, max(v) AS m FROM t")
    memdb.analysis("n", "SELECT count(*) AS n FROM w", on_change=True)
    memdb.insert("t", {"v": 1})
    memdb.refresh("s")
    memdb.execute("ALTER TABLE t ALTER v TYPE DOUBLE")  # the plan cast to INTEGER
    memdb.execute("UPDATE t SET v = 0.25")
    memdb.insert("t", {"v": 0.5})
    assert memdb.refresh("s").rows() == [(0.75, 0.5)]
    memdb.execute("CREATE OR REPLACE VIEW w AS SELECT * FROM u")  # w reads u now
    first = memdb.refresh("n")
    assert first.rows() == [(0,)]
    assert next(a for a in memdb.analyses() if a["name"] == "n")["tables"] == ["u"]
    memdb.insert("u", {"v": 1.0})  # on_change follows the view to its new table
    later = memdb.result("n", min_version=first.version + 1, timeout=30)
    assert later is not None and later.rows() == [(1,)]


# DuckDB writes the syntax tree in the format of the database's storage compatibility
# version (v0.10.2 by default), which cannot carry an ENUM nested in another type
NESTED_ENUM = [
    "SELECT k, count(*) AS n, max(CAST({'e': e} AS STRUCT(e ENUM('x', 'y')))) AS s "
    "FROM f GROUP BY k",
    "SELECT k, list(e::ENUM('x', 'y')) AS es, CAST([e] AS ENUM('x', 'y')[]) AS one "
    "FROM f GROUP BY k, e",
    "SELECT CAST(MAP {k: e} AS MAP(VARCHAR, ENUM('x', 'y'))) AS m, count(*) AS n FROM f GROUP BY 1",
]


@pytest.mark.parametrize("sql", NESTED_ENUM)
def test_a_cast_to_a_nested_enum_is_parsed_and_refreshed(
    memdb: duckflock.Database, sql: str
) -> None:
    memdb.execute("CREATE TABLE f (k VARCHAR, e VARCHAR)")
    memdb.insert("f", [{"k": "a", "e": "x"}, {"k": "b", "e": "y"}])
    memdb.analysis("nested", sql, wait=True)
    for rows in ([{"k": "a", "e": "y"}], [{"k": "c", "e": "x"}, {"k": "a", "e": "x"}]):
        memdb.insert("f", rows)
        result = memdb.refresh("nested")
        assert result.error is None, result.error
        full = memdb.execute(sql).arrow().read_all().to_pylist()  # (a MAP as Arrow has it)
        assert sorted(map(repr, result.table.to_pylist())) == sorted(map(repr, full))
    # the query endpoint's check reads the same tree: a SELECT, not refused
    from duckflock.server.guard import QueryGuard

    QueryGuard(memdb).check(sql)


def test_queries_parsed_apart_share_one_kept_instance_per_parser_settings(
    memdb: duckflock.Database,
) -> None:
    """A nested-ENUM query parses on an in-memory instance of its own: kept per parser
    settings, not opened per query (one per query cost ~28 ms of CPU to anyone who can
    send the query endpoint SQL); other parser settings get another."""
    from duckflock.core import syntax

    sql = "SELECT Kk, max(CAST({'e': e} AS STRUCT(e ENUM('x', 'y')))) FROM t GROUP BY Kk"

    def tree() -> dict[str, object]:
        return syntax.tree(memdb.execute, sql)

    syntax._apart.cache_clear()
    first = tree()
    for _ in range(5):
        assert tree() == first
    info = syntax._apart.cache_info()
    assert (info.misses, info.hits, info.currsize) == (1, 5, 1)
    memdb.execute("SET preserve_identifier_case = false")
    try:
        lowered = tree()
    finally:
        memdb.execute("RESET preserve_identifier_case")
    assert syntax._apart.cache_info().currsize == 2
    assert lowered["statements"] and syntax._apart.cache_info().misses == 2
