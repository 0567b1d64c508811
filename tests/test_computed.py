"""The row-by-row merge's partials in pyarrow (live/fold/computed.py, live/plan/computing.py):
admitted only where DuckDB computed the same partials over probe rows, a refresh then
runs no DuckDB query, and a batch pyarrow would compute otherwise (NaN, -0.0, non-ASCII
under upper/lower, an overflow) goes to DuckDB's query and still equals a full run."""

from __future__ import annotations

import math
import struct
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import duckflock
from duckflock.live import internals
from duckflock.live.fold import computed, detached, merges
from duckflock.live.fold.computed import Refused
from duckflock.live.fold.query import over_arrow
from duckflock.live.plan import compiler, computing, probes

TABLE = "CREATE TABLE t (k INTEGER, v DOUBLE, ok BOOLEAN, sensor VARCHAR, n BIGINT)"
SHAPES = {
    "two expression keys": "SELECT upper(sensor) AS s, k % 5 AS band, sum(v) AS total "
    "FROM t GROUP BY upper(sensor), k % 5",
    "FILTER + bool": "SELECT k, count(*) FILTER (WHERE ok) AS good, bool_and(v >= 0) AS sane, "
    "avg(v) FILTER (WHERE NOT ok) AS bad_mean FROM t GROUP BY k",
    "arg_max and arg_min": "SELECT sensor, arg_max(v, n) AS latest, max(n) AS at, "
    "arg_min(k, v) AS low FROM t GROUP BY sensor",
    "where and arithmetic": "SELECT lower(sensor) AS s, count(*) AS c, max(n + 1) AS hi, "
    "bool_or(k = 2 OR ok IS NULL) AS odd, min(n) FILTER (WHERE v < 1 AND k <> 0) AS lo "
    "FROM t WHERE k IS NOT NULL AND n * 2 > -100 GROUP BY lower(sensor)",
    "first and last": "SELECT k % 3 AS band, first(v ORDER BY n) AS fv, "
    "last(sensor ORDER BY n DESC NULLS FIRST) AS ls, first(n ORDER BY v) FILTER (WHERE ok) "
    "AS fn FROM t GROUP BY k % 3",
}
PARTIALS = (
    "SELECT upper(sensor) AS __k0, (k % 5) AS __k1, sum(v) AS __p0, count(*) AS __p1 "
    "FROM (SELECT * FROM (SELECT * FROM __duckflock_delta LIMIT 9223372036854775807)) AS t "
    "GROUP BY upper(sensor), (k % 5)"
)


def _admit(sql: str = PARTIALS) -> computing.Computed | None:
    con = duckdb.connect()
    con.execute(TABLE)
    source = con.execute("SELECT * FROM t LIMIT 0").to_arrow_table()
    schema = con.sql(sql.replace("__duckflock_delta", "t")).limit(0).to_arrow_table().schema
    types = {"k": "INTEGER", "v": "DOUBLE", "ok": "BOOLEAN", "sensor": "VARCHAR", "n": "BIGINT"}

    def oracle(rows: pa.Table) -> pa.Table:
        return over_arrow(con, sql, rows.slice(0, 0), rows)

    return computing.computed(con, sql, schema, source.schema, types, oracle)


def test_a_program_is_admitted_only_where_duckdb_computed_the_same() -> None:
    """The probe can fail: pyarrow's lower() for upper(), or a floor remainder for
    DuckDB's truncated one, gives other partials over the probe rows."""
    assert _admit() is not None
    wrong = dict(compiler._CASES, upper=pc.ascii_lower)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compiler, "_CASES", wrong)
        assert _admit() is None

    truncated = compiler._remainder

    def floored(left: Any, right: Any) -> Any:  # Python's %: the divisor's sign
        return pc.abs(truncated(left, right))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compiler, "_remainder", floored)
        assert _admit() is None


def test_arg_max_is_admitted_with_duckdbs_tie_rule_only() -> None:
    """arg_max's probe rows tie on the key: a program keeping the last tied row, not
    the first as DuckDB's single-threaded scan does, is not admitted."""
    sql = PARTIALS.replace("sum(v)", "arg_max(k, n)").replace("count(*)", "arg_min(n, k)")
    assert _admit(sql) is not None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(computed, "TIES", "last")
        assert _admit(sql) is None


ORDERED = PARTIALS.replace(
    "sum(v) AS __p0, count(*) AS __p1",
    "first(k ORDER BY n ASC NULLS LAST) AS __p0, last(v ORDER BY n DESC NULLS FIRST) AS __p1, "
    "first(sensor ORDER BY v DESC NULLS FIRST) AS __p2, "
    "last(n ORDER BY n ASC NULLS LAST) FILTER (WHERE ok) AS __p3, count(*) AS __p4",
)


def test_first_and_last_are_admitted_with_duckdbs_order_only() -> None:
    """Ordered first/last over probe rows with no tie in a group (NULL keys and NULL
    values among them): a program that reverses the order or moves the NULL keys is
    not admitted; a batch with a tie in a group is refused (DuckDB's query takes it),
    one with equal keys in different groups is not."""
    assert _admit(ORDERED) is not None
    real = compiler.Aggregate
    for wrong in ("descending", "nulls_first"):

        def flipped(wrong: str = wrong, **fields: Any) -> computed.Aggregate:
            if fields.get("order"):
                fields[wrong] = not fields[wrong]
            return real(**fields)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(compiler, "Aggregate", flipped)
            assert _admit(ORDERED) is None
    program = _admit(ORDERED)
    assert program is not None
    con = duckdb.connect()
    con.execute(TABLE)
    schema = con.sql(ORDERED.replace("__duckflock_delta", "t")).limit(0).to_arrow_table().schema
    rows = con.execute("SELECT * FROM t LIMIT 0").to_arrow_table().schema
    apart = {"k": [1, 2], "v": [1.0, 2.0], "ok": [True] * 2, "sensor": ["a"] * 2, "n": [5, 5]}
    assert program.partials(pa.table(apart).cast(rows), schema).num_rows == 2
    for tie in ({"k": [1, 6]}, {"k": [1, 6], "n": [None, None]}):
        with pytest.raises(Refused):
            program.partials(pa.table(apart | tie).cast(rows), schema)


@pytest.mark.parametrize(
    "sql",
    [
        PARTIALS.replace("upper(sensor)", "length(sensor)"),  # a function it does not know
        PARTIALS.replace("LIMIT 9223372036854775807", "WHERE k > 0"),  # a view's WHERE
        PARTIALS.replace("sum(v)", "sum(DISTINCT v)"),
        PARTIALS.replace("(k % 5)", "(k % k)"),  # a remainder by a column
    ],
)
def test_what_it_does_not_know_stays_duckdbs(sql: str) -> None:
    assert _admit(sql) is None


def test_a_batch_pyarrow_computes_otherwise_is_refused() -> None:
    program = _admit()
    assert program is not None
    con = duckdb.connect()
    con.execute(TABLE)
    schema = con.sql(PARTIALS.replace("__duckflock_delta", "t")).limit(0).to_arrow_table().schema

    def batch(**column: list[Any]) -> pa.Table:
        rows = len(next(iter(column.values())))
        values = {"k": [1], "v": [1.0], "ok": [True], "sensor": ["a"], "n": [1]}
        values = {name: got * rows for name, got in values.items()} | column
        return pa.table(values).cast(schema_of_t)

    schema_of_t = con.execute("SELECT * FROM t LIMIT 0").to_arrow_table().schema
    assert program.partials(batch(k=[-7, 7, None]), schema).num_rows == 3
    for refused in (batch(sensor=["a", "\u00df"]), batch(v=[1.0, math.nan]), batch(v=[-0.0])):
        with pytest.raises(Refused):
            program.partials(refused, schema)


def _exact(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows in a form that compares exactly (floats by their bits), in order."""
    out = [tuple(_bits(v) for v in row) for row in rows]
    return sorted(out, key=repr)


def _bits(value: Any) -> Any:
    if not isinstance(value, float):
        return value
    return "NaN" if math.isnan(value) else struct.pack("<d", value)  # any NaN's bits


def _analyses(db: duckflock.Database) -> dict[str, Any]:
    db.execute(TABLE)
    for name, sql in SHAPES.items():
        db.analysis(name, sql)
        db.result(name, min_version=1, timeout=30)
    return {name: internals.analysis(db, name).state for name in SHAPES}


def test_a_computed_refresh_runs_no_duckdb_query_and_equals_a_full_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 21: expression keys, WHERE and FILTER fold without a DuckDB query; a batch
    with a non-ASCII string goes to DuckDB's query alone (the next one is pyarrow's
    again), and a NaN hands the analysis to DuckDB; every result equals a full run."""
    queries: list[str] = []
    real = over_arrow

    def counted(cursor: duckdb.DuckDBPyConnection, sql: str, *tables: Any) -> pa.Table:
        queries.append(sql)
        return real(cursor, sql, *tables)

    with duckflock.connect() as db:
        runs = _analyses(db)
        for run in runs.values():
            merge = run.shape.plan.merge
            assert merge is not None and merge.computed is not None
        for module in (merges, detached):
            monkeypatch.setattr(module, "over_arrow", counted)
        batches: list[tuple[list[dict[str, Any]], bool]] = [
            ([{"k": -7, "v": 1.5, "ok": True, "sensor": "ab", "n": 3}], False),
            ([{"k": None, "v": None, "ok": None, "sensor": None, "n": None}], False),
            ([{"k": 12, "v": -2.25, "ok": False, "sensor": "AB", "n": -60}] * 3, False),
            ([{"k": 3, "v": 0.5, "ok": False, "sensor": "\u00e9t\u00e9", "n": 1}], True),
            ([{"k": -2147483648, "v": 4.0, "ok": True, "sensor": "Ab", "n": 7}], False),
        ]
        for rows, duckdbs in batches:
            queries.clear()
            db.insert("t", rows)
            for name, sql in SHAPES.items():
                result = db.refresh(name)
                assert result.mode == "incremental", result.reason
                assert _exact(result.rows()) == _exact(db.execute(sql).fetchall()), name
            uses = [sql for sql in queries if "upper(" in sql or "lower(" in sql]
            assert bool(uses) is duckdbs, queries
            assert all(run.fast for run in runs.values())
        db.insert("t", [{"k": 1, "v": math.nan, "ok": True, "sensor": "x", "n": 1}])
        for name, sql in SHAPES.items():
            result = db.refresh(name)
            assert result.error is None
            assert _exact(result.rows()) == _exact(db.execute(sql).fetchall()), name


ASCII = st.sampled_from(["a", "A", "s1", "S1", "", "zz", None])
ANY_TEXT = st.one_of(ASCII, st.sampled_from(["\u00e9", "\u00df", "\u0130", "x\u0301"]))
DOUBLES = st.sampled_from([0.0, -0.0, 0.5, -1.25, 3.0, math.inf, -math.inf, math.nan, None])
INTEGERS = st.one_of(st.integers(-20, 20), st.sampled_from([-(2**31), 2**31 - 1, None]))
BIGINTS = st.one_of(st.integers(-100, 100), st.sampled_from([-(2**63), 2**63 - 1, None]))
ROW = st.fixed_dictionaries(
    {
        "k": INTEGERS,
        "v": DOUBLES,
        "ok": st.sampled_from([True, False, None]),
        "sensor": ANY_TEXT,
        "n": BIGINTS,
    }
)


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(ROW, max_size=6), min_size=1, max_size=5))
def test_any_batches_equal_a_full_run(batches: list[list[dict[str, Any]]]) -> None:
    """NULLs, NaN, -0.0, infinities, batches mixing ASCII and non-ASCII strings, empty
    batches and values at the ends of their types (n + 1, n * 2 overflow: the full run's
    error is the refresh's): each refresh equals a full run."""
    with duckflock.connect() as db:
        _analyses(db)
        for rows in batches:
            if rows:
                db.insert("t", rows)
            for name, sql in SHAPES.items():
                result = db.refresh(name)
                try:
                    expected: Any = _exact(db.execute(sql).fetchall())
                except duckflock.DuckflockError:
                    expected = "error"
                got = "error" if result.error is not None else _exact(result.rows())
                assert got == expected, (name, rows)


def test_duckdb_says_which_ordering_types_pick_as_compared() -> None:
    """arg_max/arg_min's winners merge by > only where DuckDB's own pick over probe
    pairs agrees (live/plan/probes.py): INTERVAL (months, days, µs in turn) and TIME
    WITH TIME ZONE (local time) do not, alone or nested; numbers, strings, times and an
    ENUM do. Without the interval probe values, INTERVAL would pass: the probe decides."""
    con = duckdb.connect()
    con.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
    unlike = ["INTERVAL", "TIME WITH TIME ZONE", "STRUCT(i INTERVAL)", "INTERVAL[]"]
    like = ["BIGINT", "DOUBLE", "VARCHAR", "TIMESTAMP", "TIMESTAMPTZ", "DECIMAL(38,4)", "mood"]
    for kind in unlike + like:
        assert probes.picks_as_compared(con, kind) is (kind in like), kind
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(probes, "PAIRED", ["1 month", "0 days", "1", "2"])
        assert probes.picks_as_compared(con, "INTERVAL")
