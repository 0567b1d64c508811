"""A stateful model test: whatever is done to the database, through whatever path, every
analysis equals a full run of its SQL.

Hypothesis drives a Database through inserts (good and bad), analyses defined, replaced
and dropped, UPDATE / DELETE / DDL through ``execute``, ``executemany``, ``sql``,
transactions, multi-statement strings and ``EXPLAIN ANALYZE``, over tables in two
schemas with the same name and views over them, and retention deletes (every path, NULL
keys, NaN) under incremental and sliding-window analyses. After every step each analysis
is refreshed and compared with its SQL run in full (a window's at ``Result.now``).
``DUCKFLOCK_MODEL_EXAMPLES`` (default 25) and ``DUCKFLOCK_MODEL_STEPS`` (default 30) make
the run longer.
"""

from __future__ import annotations

import math
import os
import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

import duckflock
from duckflock import DuckflockError

EXAMPLES = int(os.environ.get("DUCKFLOCK_MODEL_EXAMPLES", "12"))
STEPS = int(os.environ.get("DUCKFLOCK_MODEL_STEPS", "30"))

QUERIES = [
    "SELECT k, count(*) AS n, sum(v) AS s FROM events GROUP BY k",
    "SELECT k, avg(v) AS a, min(v) AS lo, max(v) AS hi FROM other.events "
    "WHERE v > 10 GROUP BY k HAVING count(*) > 1",
    "SELECT count(*) AS n, sum(v) AS s FROM pos",
    "SELECT sum(v) AS s, count(v) AS c FROM memory.other.events",
    "SELECT k, sum(v) AS s FROM events GROUP BY k ORDER BY k LIMIT 3",
    "SELECT e.k, count(*) AS n FROM events e JOIN other.events o USING (k) GROUP BY e.k",
    "SELECT count(*) AS n FROM events;",
    "SELECT k, max(v) - min(v) AS spread FROM other.big GROUP BY k ORDER BY spread DESC, k",
    "SELECT count(*) AS n FROM query_table('events') -- reads through a table function",
    # issue 13's shapes: expression keys, FILTER, booleans, distinct counts, winners whose
    # ties are harmless (the value is its own ordering key), joins to a table and a view
    "SELECT upper(k) AS uk, count(*) FILTER (WHERE v > 0) AS pos, bool_or(v > 50) AS big, "
    "bool_and(v < 90) AS small FROM events GROUP BY 1",
    "SELECT v % 3 AS b, count(DISTINCT k) AS dk, approx_count_distinct(k) AS ak "
    "FROM other.events GROUP BY b ORDER BY b NULLS FIRST",
    "SELECT k, arg_max(v, v) AS hi, min_by(v * 2, v) AS lo2, first(v ORDER BY v DESC) AS f, "
    "last(v ORDER BY v) FILTER (WHERE v < 50) AS l FROM events GROUP BY k",
    "SELECT e.k, count(b.v) AS n, count(DISTINCT b.v) AS dv FROM events e "
    "LEFT JOIN other.big b ON e.k = b.k AND b.v > 60 GROUP BY e.k",
    # retention deletes and sliding windows (NULL keys, NaN) over readings
    "SELECT k, count(*) AS n, sum(x) AS s, min(x) AS lo, max(x) AS hi FROM readings GROUP BY k",
    "SELECT k, count(*) AS n, avg(x) AS a FROM readings "
    "WHERE ts > now() - INTERVAL 10 SECOND GROUP BY k",
    # both together: deletes from FILTER/boolean/expression-key states (subtracted or
    # recomputed), from a window with a distinct count (rebuilt)
    "SELECT upper(k) AS uk, count(x) FILTER (WHERE x > 0) AS pos, "
    "sum(x) FILTER (WHERE x < 50) AS s, bool_and(x > 0) AS allpos FROM readings GROUP BY 1",
    "SELECT k IS NULL AS nk, count(DISTINCT k) AS dk, max(x) FILTER (WHERE x < 50) AS hi "
    "FROM readings WHERE ts >= now() - INTERVAL 5 SECOND GROUP BY 1",
]
TABLES = ["events", "other.events", "main.events", '"other"."events"']
KEYS = st.sampled_from(["a", "b", "c", "d", "e"])
VALUES = st.integers(min_value=-100, max_value=100)
ROWS = st.lists(st.fixed_dictionaries({"k": KEYS, "v": VALUES}), min_size=1, max_size=20)

# (how, SQL): every way a write can reach the database through the Database
WRITES = [
    ("execute", "UPDATE {t} SET v = v + 1 WHERE k = 'a'"),
    ("execute", "DELETE FROM {t} WHERE v < -50"),
    ("execute", "SELECT 1; DELETE FROM {t} WHERE k = 'b'"),
    ("execute", "EXPLAIN ANALYZE UPDATE {t} SET v = -v WHERE k = 'c'"),
    ("execute", "WITH x AS (SELECT 'd' AS k) DELETE FROM {t} WHERE k IN (FROM x)"),
    ("execute", "INSERT INTO {t} (k, v) VALUES ('e', 42)"),
    ("executemany", "UPDATE {t} SET v = ? WHERE k = 'e'"),
    ("sql", "UPDATE {t} SET v = v * 2 WHERE k = 'd'"),
    ("transaction", "DELETE FROM {t} WHERE k = 'a' AND v > 50"),
]


# (how, SQL): deletes of readings, through every path a DELETE can take
RETENTION = [
    ("execute", "DELETE FROM readings WHERE x < ?"),
    ("execute", "DELETE FROM readings WHERE ts < now() - to_seconds(? % 15); -- retention"),
    ("execute", "WITH c AS (SELECT ? AS v) DELETE FROM readings WHERE isnan(x) OR x > (FROM c)"),
    ("rollback", "DELETE FROM readings WHERE x > ?"),
    ("executemany", "DELETE FROM readings WHERE x = ?"),
    ("transaction", "DELETE FROM readings WHERE k IS NULL AND x > ?"),
]
READING = st.fixed_dictionaries(
    {
        "k": st.sampled_from([None, "a", "b"]),
        "x": st.one_of(st.none(), st.floats(-100, 100), st.just(math.nan)),
        "age": st.one_of(st.none(), st.floats(-20.0, 2.0)),
    }
)


def normal(rows: list[tuple[Any, ...]], ordered: bool) -> list[tuple[Any, ...]]:
    def value(x: Any) -> Any:
        if isinstance(x, float | Decimal):
            return "nan" if math.isnan(x) else round(float(x), 6)
        return x

    out = [tuple(value(x) for x in row) for row in rows]
    return out if ordered else sorted(out, key=repr)


class Model(RuleBasedStateMachine):
    analyses = Bundle("analyses")

    @initialize()
    def start(self) -> None:
        self.db = duckflock.connect()
        self.db.execute("CREATE SCHEMA other")
        for table in ("events", "other.events"):
            self.db.execute(f"CREATE TABLE {table} (k VARCHAR NOT NULL, v INTEGER)")
        self.db.execute("CREATE VIEW pos AS SELECT * FROM events WHERE v > 0")
        self.db.execute("CREATE VIEW other.big AS SELECT * FROM events WHERE v > 50")
        self.db.execute("CREATE TABLE readings (k VARCHAR, x DOUBLE, ts TIMESTAMP)")
        self.live: dict[str, str] = {}
        self.count = 0

    def teardown(self) -> None:
        self.db.close()

    @rule(table=st.sampled_from(TABLES), rows=ROWS)
    def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        assert self.db.insert(table, rows).rows == len(rows)

    @rule(table=st.sampled_from(TABLES), rows=ROWS, bad=st.sampled_from(["null", "text"]))
    def insert_bad(self, table: str, rows: list[dict[str, Any]], bad: str) -> None:
        poisoned = [*rows, {"k": None, "v": 1} if bad == "null" else {"k": "x", "v": "ten"}]
        before = self.db.execute(f"SELECT count(*) FROM {table}").fetchone()
        with pytest.raises(DuckflockError):
            self.db.insert(table, poisoned)
        assert self.db.execute(f"SELECT count(*) FROM {table}").fetchone() == before

    @rule(target=analyses, sql=st.sampled_from(QUERIES), on_change=st.booleans())
    def define(self, sql: str, on_change: bool) -> str:
        self.count += 1
        name = f"a{self.count}"
        self.db.analysis(name, sql, on_change=on_change)
        self.live[name] = sql
        return name

    @rule(name=analyses, sql=st.sampled_from(QUERIES))
    def replace(self, name: str, sql: str) -> None:
        if name in self.live:
            self.db.analysis(name, sql)
            self.live[name] = sql

    @rule(name=consumes(analyses))
    def drop(self, name: str) -> None:
        if name in self.live:
            self.db.drop_analysis(name)
            del self.live[name]

    @rule(write=st.sampled_from(WRITES), table=st.sampled_from(["events", "other.events"]))
    def write(self, write: tuple[str, str], table: str) -> None:
        how, template = write
        sql = template.format(t=table)
        if how == "execute":
            self.db.execute(sql)
        elif how == "executemany":
            self.db.executemany(sql, [[7], [8]])
        elif how == "sql":
            self.db.sql(sql)
        else:
            self.db.transaction(lambda cursor: cursor.execute(sql))

    @rule(rows=st.lists(READING, min_size=1, max_size=10))
    def insert_readings(self, rows: list[dict[str, Any]]) -> None:
        now = datetime.now()
        self.db.insert(
            "readings",
            [
                {
                    "k": r["k"],
                    "x": r["x"],
                    "ts": None if r["age"] is None else now + timedelta(seconds=r["age"]),
                }
                for r in rows
            ],
        )

    @rule(delete=st.sampled_from(RETENTION), value=st.integers(-100, 100))
    def retain(self, delete: tuple[str, str], value: int) -> None:
        how, sql = delete
        if how == "execute":
            self.db.execute(sql, [value])
        elif how == "rollback":
            self.db.execute("BEGIN")
            self.db.execute(sql, [value])
            self.db.execute("ROLLBACK")
        elif how == "executemany":
            self.db.executemany(sql, [[value], [value + 1]])
        else:
            self.db.transaction(lambda cursor: cursor.execute(sql, [value]))

    @rule(
        ddl=st.sampled_from(
            [
                "CREATE OR REPLACE VIEW pos AS SELECT * FROM events WHERE v > 10",
                "CREATE OR REPLACE VIEW pos AS SELECT * FROM other.events WHERE v > 0",
                "ALTER TABLE events ADD COLUMN IF NOT EXISTS extra INTEGER DEFAULT 1",
                "ALTER TABLE events ALTER v TYPE DOUBLE",
                "ALTER TABLE other.events ALTER v TYPE BIGINT",
                "CHECKPOINT",
            ]
        )
    )
    def ddl(self, ddl: str) -> None:
        self.db.execute(ddl)

    @invariant()
    def every_analysis_equals_a_full_run(self) -> None:
        if not hasattr(self, "db"):
            return
        for name, sql in self.live.items():
            result = self.db.refresh(name, timeout=60)
            assert result.error is None, result.error
            if result.now is not None:  # a sliding window: the full run at its instant
                sql = sql.replace("now()", f"CAST('{result.now.isoformat()}' AS TIMESTAMPTZ)")
            full = self.db.execute(sql).fetchall()
            ordered = re.search(r"ORDER BY [^)]*$", sql) is not None  # not first(… ORDER BY)
            assert normal(result.rows(), ordered) == normal(full, ordered), (name, sql)


Model.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestModel = Model.TestCase
# the whole machine is one pytest test: its time limit grows with the knobs
TestModel.pytestmark = [pytest.mark.timeout(max(120, EXAMPLES * STEPS // 5))]
