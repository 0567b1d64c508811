"""Sliding windows over now(): which queries qualify, and the invariant that each result
equals a full run of the SQL with now() at the result's instant (``Result.now``) — across
appends, retention deletes, NULL keys and timestamps, NaN, and buckets that expire."""

from __future__ import annotations

import math
import os
import random
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import duckflock
from duckflock.live import bucketmerge, internals, marks, windows
from duckflock.live.fold.arrow import ArrowPlan
from duckflock.live.fold.states import PartialKind
from duckflock.live.instants import NOW
from duckflock.live.windows import literal


class SteppedClock:
    """A :class:`duckflock.live.clock.Clock` whose now() the test moves; due times and
    deadlines (monotonic) stay real."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def step(self, by: timedelta) -> None:
        self._now += by

    def monotonic(self) -> float:
        return time.monotonic()


EXAMPLES = int(os.environ.get("DUCKFLOCK_WINDOW_EXAMPLES", "8"))
QUERIES = {
    "per_key": "SELECT k, count(*) AS c, sum(v) AS s, min(v) AS lo, max(ts) AS last FROM w "
    "WHERE ts > now() - INTERVAL 10 SECOND GROUP BY k",
    "global": "SELECT count(*) AS c, avg(v) AS a, max(v) AS hi FROM w "
    "WHERE now() - INTERVAL 4 SECOND <= ts AND v > -50",
    "top": "SELECT k, count(*) AS c FROM w WHERE ts >= current_timestamp - INTERVAL 20 SECOND "
    "GROUP BY k ORDER BY c DESC, k NULLS FIRST LIMIT 2",
    "zoned": "SELECT k, count(*) AS c, sum(v) AS s FROM w WHERE tz > now() - INTERVAL 6 SECOND "
    "GROUP BY k HAVING count(*) > 1",
}
NEW_YORK = ZoneInfo("America/New_York")
TABLE = "CREATE TABLE w (k VARCHAR, v DOUBLE, ts TIMESTAMP, tz TIMESTAMPTZ)"


def normal(rows: list[tuple[Any, ...]], ordered: bool) -> list[tuple[Any, ...]]:
    def value(x: Any) -> Any:
        if isinstance(x, float | Decimal):
            x = float(x)
            return "nan" if math.isnan(x) else round(x, 6)
        return x

    out = [tuple(value(x) for x in row) for row in rows]
    return out if ordered else sorted(out, key=repr)


def at(sql: str, instant: datetime) -> str:
    """``sql`` with now() at ``instant``: the full run to compare with."""
    return sql.replace("now()", literal(instant)).replace("current_timestamp", literal(instant))


def reason(db: duckflock.Database, name: str) -> str:
    return str(next(a for a in db.analyses() if a["name"] == name)["reason"])


def agree(db: duckflock.Database, names: dict[str, str] = QUERIES) -> None:
    for name, sql in names.items():
        result = db.refresh(name, timeout=60)
        assert result.error is None, result.error
        assert result.now is not None
        ordered = "ORDER BY" in sql
        full = db.execute(at(sql, result.now)).fetchall()
        assert normal(result.rows(), ordered) == normal(full, ordered), (name, reason(db, name))


def rows_at(
    offsets: list[tuple[str | None, float, float | None]], now: datetime | None = None
) -> list[dict[str, Any]]:
    """Rows whose timestamps are ``offset`` seconds from ``now`` (default: the real now;
    None: a NULL timestamp)."""
    now = datetime.now(UTC) if now is None else now
    out = []
    for key, value, offset in offsets:
        instant = None if offset is None else now + timedelta(seconds=offset)
        out.append(
            {
                "k": key,
                "v": value,
                "ts": None if instant is None else instant.replace(tzinfo=None),
                "tz": instant,
            }
        )
    return out


@pytest.fixture
def wdb() -> Any:
    db = duckflock.connect()
    db.execute("SET TimeZone = 'UTC'")
    db.execute(TABLE)
    yield db
    db.close()


# -- which queries are windows ------------------------------------------------------


def test_window_shapes_are_incremental(wdb: duckflock.Database) -> None:
    for name, sql in QUERIES.items():
        wdb.analysis(name, sql)
        assert "sliding window" in reason(wdb, name), name


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM w WHERE ts < now()",  # an upper bound: not a window
        "SELECT count(*) FROM w WHERE ts > now() - INTERVAL 1 MINUTE OR k = 'a'",
        "SELECT count(*), now() FROM w WHERE ts > now() - INTERVAL 1 MINUTE",
        "SELECT count(*) FROM w WHERE ts > now() - INTERVAL 1 MINUTE AND ts < now()",
        "SELECT count(*) FROM w WHERE ts > now() + INTERVAL 1 MINUTE",  # empty span
        "SELECT count(*) FROM w WHERE ts > now() - INTERVAL 1 HOUR * random()",
        "SELECT count(*) FROM w WHERE ts > current_timestamp - INTERVAL 1 HOUR AND v > random()",
        "SELECT count(*) FROM w WHERE v > epoch(now())",
    ],
)
def test_other_uses_of_now_run_in_full(wdb: duckflock.Database, sql: str) -> None:
    wdb.analysis("a", sql)
    assert reason(wdb, "a").startswith("full"), reason(wdb, "a")


# -- results equal a full run at their instant ---------------------------------------


def test_appends_and_deletes_agree_at_each_instant(wdb: duckflock.Database) -> None:
    wdb.insert(
        "w",
        rows_at(
            [(k, float(i), -i / 10) for i, k in enumerate(["a", "b", None] * 100)]
            + [(None, math.nan, -1.0), ("a", 1.0, None), ("b", math.inf, 2.0)]
        ),
    )
    for name, sql in QUERIES.items():
        wdb.analysis(name, sql)
    agree(wdb)
    wdb.insert("w", rows_at([("a", 5.0, -0.5), ("c", -60.0, -5.0), (None, 2.0, 0.0)]))
    agree(wdb)
    wdb.execute("DELETE FROM w WHERE v > 100")
    agree(wdb)
    for name in QUERIES:
        assert reason(wdb, name).startswith("incremental"), reason(wdb, name)


def test_buckets_expire_as_the_window_moves() -> None:
    sql = "SELECT k, count(*) AS c FROM w WHERE ts > now() - INTERVAL 1 SECOND GROUP BY k"
    clock = SteppedClock(datetime.now(UTC))
    db = duckflock.connect()
    internals.use_clock(db, clock)  # the clock is the subject: the test moves it
    try:
        db.execute("SET TimeZone = 'UTC'")
        db.execute(TABLE)
        db.analysis("recent", sql)
        db.insert("w", rows_at([("a", 1.0, -i / 100) for i in range(90)], clock.now()))
        first = db.refresh("recent")
        assert first.rows() and first.now == clock.now()
        run = internals.analysis(db, "recent").state
        assert run.state is not None
        buckets = run.state.num_rows
        assert buckets > 10
        result = first
        for _ in range(40):  # 2 s in steps of 50 ms: the 1 s window has moved past all
            clock.step(timedelta(milliseconds=50))
            result = db.refresh("recent")
            assert result.now == clock.now()
            full = db.execute(at(sql, result.now)).fetchall()
            assert normal(result.rows(), False) == normal(full, False)
            if not result.rows():
                break
        assert result.rows() == []
        assert run.state is not None and run.state.num_rows < buckets
    finally:
        db.close()


@pytest.mark.parametrize("column", ["ts", "tz"])
def test_appends_merge_into_the_buckets_in_pyarrow_and_agree(
    column: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appended rows become partials per bucket (pyarrow, or one DuckDB query over them
    alone) and merge into the bucketed state in pyarrow (bucketmerge.merged: DuckDB never
    scans the state), the cut bucket's rows are read comparing in local time where its offset is
    one; each refresh, as the window moves over the buckets, equals a full run."""
    sql = (
        "SELECT k, count(*) AS c, sum(v) AS s, min(v) AS lo, max(v) AS hi, avg(v) AS a "
        f"FROM w WHERE {column} > now() - INTERVAL 3 SECOND GROUP BY k"
    )
    merged: list[bool] = []
    merge = bucketmerge.merged  # the pyarrow merge, whoever flags the buckets after it

    def seen(*args: Any) -> Any:
        out = merge(*args)
        merged.append(out is not None)
        return out

    monkeypatch.setattr(bucketmerge, "merged", seen)
    reads: list[str] = []  # the cut bucket reads, before their instant is put in
    instant_of = windows.at

    def read(sql: str, instant: datetime) -> str:
        if "__duckflock_low" in sql:
            reads.append(sql)
        return instant_of(sql, instant)

    monkeypatch.setattr(windows, "at", read)
    clock = SteppedClock(datetime.now(UTC))
    db = duckflock.connect()
    internals.use_clock(db, clock)
    try:
        db.execute("SET GLOBAL TimeZone = 'America/New_York'")
        db.execute(TABLE)
        db.analysis("recent", sql)
        values = [0.5, -1.25, 3.0, 100.75, 2.0]  # dyadic: sums exact in any order
        for round_ in range(12):
            offsets = [-4.0 + i * 0.021 for i in range(215)]  # expired, cut, whole, ahead
            keys = ["a", "b", None, "é"]
            rows = rows_at(
                [
                    (keys[(round_ + i) % 4], values[(round_ * 3 + i) % 5], offset)
                    for i, offset in enumerate(offsets)
                ],
                clock.now(),
            )
            for row in rows:  # ts in New York's local time
                row["ts"] = row["tz"].astimezone(NEW_YORK).replace(tzinfo=None)
            db.insert("w", rows)
            result = db.refresh("recent")
            assert result.now == clock.now()
            full = db.execute(at(sql, result.now)).fetchall()
            assert sorted(result.rows(), key=repr) == sorted(full, key=repr), round_
            clock.step(timedelta(milliseconds=450))
        assert reason(db, "recent").startswith("incremental")
        assert len(merged) >= 11 and all(merged), merged
        # a TIMESTAMP's one steady cut bucket is read comparing in local time (no cast of
        # each row through the zone); a TIMESTAMPTZ's compares as it is
        window = internals.analysis(db, "recent").state.shape.window
        assert window is not None
        local = sum(sql == window.local for sql in reads)
        assert local >= 6 if column == "ts" else window.local == window.edge, (local, reads)
    finally:
        db.close()


def test_a_late_row_for_an_expired_bucket_stays_out(wdb: duckflock.Database) -> None:
    sql = QUERIES["per_key"]
    wdb.analysis("per_key", sql)
    wdb.insert("w", rows_at([("a", 1.0, -30.0), ("a", 2.0, -1.0)]))
    agree(wdb, {"per_key": sql})
    wdb.insert("w", rows_at([("a", 3.0, -3600.0)]))
    agree(wdb, {"per_key": sql})


def _spring_forward(clock: SteppedClock) -> duckflock.Database:
    """A database in New York's time zone on ``clock``, with a TIMESTAMP table ``w`` of
    rows every 7 s from 00:30 local on its spring-forward day (through the hour that
    does not exist)."""
    db = duckflock.connect()
    internals.use_clock(db, clock)
    db.execute("SET GLOBAL TimeZone = 'America/New_York'")
    db.execute("CREATE TABLE w (k INTEGER, ts TIMESTAMP)")
    start = datetime(2026, 3, 8, 0, 30)  # local, naive
    db.insert("w", [(i % 2, start + timedelta(seconds=7 * i)) for i in range(2000)])
    return db


def test_a_dst_gap_in_the_session_time_zone_keeps_timestamps_exact() -> None:
    # a TIMESTAMP meets now() as local time: 02:59 on New York's spring-forward day
    # (a time that does not exist) casts to 07:59Z, after 03:00 (07:00Z). The bucket
    # holding both expired by its end while its 02:59 rows were still inside the window.
    clock = SteppedClock(datetime(2026, 3, 8, 7, 30, tzinfo=UTC))
    db = _spring_forward(clock)
    try:
        db.execute("INSERT INTO w VALUES (0, 'infinity'), (1, '-infinity')")  # no jump
        sql = "SELECT k, count(*) AS c FROM w WHERE ts > now() - INTERVAL 1 HOUR GROUP BY k"
        db.analysis("hour", sql)
        for _ in range(6):
            result = db.refresh("hour", timeout=60)
            assert result.now == clock.now()  # the window is at the test's instant
            assert result.rows()
            full = db.execute(at(sql, result.now)).fetchall()
            assert sorted(result.rows()) == sorted(full), (result.now, result.reason)
            clock.step(timedelta(minutes=10))
        assert result.mode == "incremental", result.reason
    finally:
        db.close()


# -- the property ----------------------------------------------------------------

offsets = st.one_of(st.none(), st.floats(-25.0, 5.0))
values = st.one_of(
    st.none(), st.floats(-100, 100, allow_nan=False), st.sampled_from([math.nan, math.inf])
)
batch = st.lists(
    st.tuples(st.sampled_from([None, "a", "b", "c"]), values, offsets), min_size=1, max_size=12
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), batch),
        st.tuples(
            st.just("delete"),
            st.sampled_from(
                [
                    "DELETE FROM w WHERE v < ?",
                    "DELETE FROM w WHERE k IS NULL OR v > ?;",
                    "DELETE FROM w WHERE ts < now() - to_seconds(? % 20) -- retention",
                ]
            ),
            st.integers(-100, 100),
        ),
        st.tuples(st.just("check")),
    ),
    min_size=1,
    max_size=10,
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(steps=steps)
def test_property_windows_equal_a_full_run_at_their_instant(steps: list[Any]) -> None:
    db = duckflock.connect()
    try:
        db.execute("SET TimeZone = 'UTC'")
        db.execute(TABLE)
        for name, sql in QUERIES.items():
            db.analysis(name, sql)
        for step in steps:
            if step[0] == "insert":
                db.insert("w", rows_at(step[1]))
            elif step[0] == "delete":
                db.execute(step[1], [step[2]])
            else:
                agree(db)
        agree(db)
        for name in QUERIES:
            assert reason(db, name).startswith("incremental"), reason(db, name)
    finally:
        db.close()


# -- refreshes that carry the cut bucket (live/marks.py) ----------------------------


def _zoned_rows(round_: int, now: datetime) -> list[dict[str, Any]]:
    """Rows over a 64-second window and around it (expired, cut, whole, ahead), ``ts`` in
    New York's local time; dyadic values (sums exact in any order)."""
    offsets = [-70.0 + i * 0.37 for i in range(200)]
    keys = ["a", "b", None, "é"]
    rows = rows_at(
        [
            (keys[(round_ + i) % 4], [0.5, -1.25, 3.0, 2.0][(round_ + i) % 4], offset)
            for i, offset in enumerate(offsets)
        ],
        now,
    )
    for row in rows:
        row["ts"] = row["tz"].astimezone(NEW_YORK).replace(tzinfo=None)
    return rows


def _new_york(clock: SteppedClock, sql: str) -> duckflock.Database:
    """A database in New York's time zone on ``clock``, the table ``w`` and the analysis
    "recent" of ``sql``."""
    db = duckflock.connect()
    internals.use_clock(db, clock)
    db.execute("SET GLOBAL TimeZone = 'America/New_York'")
    db.execute(TABLE)
    db.analysis("recent", sql)
    return db


@pytest.mark.parametrize("column", ["ts", "tz"])
def test_appends_within_one_cut_bucket_read_nothing_and_agree(
    column: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the instant stays in the bucket the boundary cut at the last refresh, a
    refresh after appends neither reads the table nor opens a transaction: the bucket's
    kept rows and the appended ones in its span are compared with the bound in pyarrow,
    the buckets flagged from their marks. Each result equals a full run."""
    sql = (
        "SELECT k, count(*) AS c, sum(v) AS s, min(v) AS lo, max(v) AS hi, avg(v) AS a "
        f"FROM w WHERE {column} > now() - INTERVAL 64 SECOND GROUP BY k"
    )
    reads: list[datetime] = []
    cut = windows.cut

    def counted(*args: Any) -> Any:
        reads.append(args[3])
        return cut(*args)

    monkeypatch.setattr(windows, "cut", counted)
    clock = SteppedClock(datetime(2026, 12, 7, 12, 0, 0, 300_000, tzinfo=UTC))
    db = _new_york(clock, sql)
    try:
        db.insert("w", _zoned_rows(0, clock.now()))
        db.refresh("recent")
        first = len(reads)
        for round_ in range(1, 13):
            db.insert("w", _zoned_rows(round_, clock.now()))
            result = db.refresh("recent")
            assert result.now == clock.now()
            assert result.mode == "incremental", result.reason
            full = db.execute(at(sql, result.now)).fetchall()
            assert normal(result.rows(), False) == normal(full, False), round_
            clock.step(timedelta(milliseconds=60))  # 1 s buckets: a crossing per ~16
        # one read when the state was built, at most one more per bucket crossed
        assert len(reads) - first <= 2, reads
    finally:
        db.close()


def test_a_time_zone_change_is_not_carried_over() -> None:
    """Marks and kept rows of a TIMESTAMP window are taken in the session's time zone:
    after ``SET GLOBAL TimeZone`` (which rebuilds the state; the marks also record the
    zone they were taken in) the refreshes that carry the cut bucket again still equal
    a full run."""
    sql = "SELECT k, count(*) AS c FROM w WHERE ts > now() - INTERVAL 64 SECOND GROUP BY k"
    clock = SteppedClock(datetime(2026, 12, 7, 12, 0, 0, 300_000, tzinfo=UTC))
    db = _new_york(clock, sql)
    try:
        for round_, zone in enumerate(["America/New_York"] * 3 + ["Asia/Kolkata"] * 3):
            db.execute(f"SET GLOBAL TimeZone = '{zone}'")
            db.insert("w", _zoned_rows(round_, clock.now()))
            result = db.refresh("recent")
            assert result.now is not None
            full = db.execute(at(sql, result.now)).fetchall()
            assert sorted(result.rows(), key=repr) == sorted(full, key=repr), (round_, zone)
            clock.step(timedelta(milliseconds=60))
    finally:
        db.close()


def test_a_time_zone_set_unseen_is_not_carried_over() -> None:
    """A global ``SET TimeZone`` on a raw cursor (``db.cursor()``) reaches no notice nor
    the settings epoch: from the moment a raw cursor is out, a refresh that carries the
    cut bucket asks the session's settings again (the bound's, even where it is shifted
    from the instant) and reads as a full run in the new zone does."""
    sql = "SELECT k, count(*) AS c FROM w WHERE ts > now() - INTERVAL 64 SECOND GROUP BY k"
    clock = SteppedClock(datetime(2026, 12, 7, 12, 0, 0, 300_000, tzinfo=UTC))
    db = _new_york(clock, sql)
    try:
        for round_ in range(4):
            if round_ == 2:
                with db.cursor() as cursor:
                    cursor.execute("SET GLOBAL TimeZone = 'Asia/Kolkata'")
            db.insert("w", _zoned_rows(round_, clock.now()))
            result = db.refresh("recent")
            assert result.now is not None and result.error is None, result.error
            full = db.execute(at(sql, result.now)).fetchall()
            assert sorted(result.rows(), key=repr) == sorted(full, key=repr), round_
            clock.step(timedelta(milliseconds=60))
    finally:
        db.close()


def test_a_time_zone_set_before_its_notice_is_not_carried_over() -> None:
    """A global ``SET TimeZone`` through the Database lands before the notice that
    rebuilds the state; a refresh in between (here: at the statement's ``ran`` fault
    point) finds the settings epoch moved, asks the settings again and answers as a full
    run in the new zone does."""
    sql = "SELECT k, count(*) AS c FROM w WHERE ts > now() - INTERVAL 64 SECOND GROUP BY k"
    clock = SteppedClock(datetime(2026, 12, 7, 12, 0, 0, 300_000, tzinfo=UTC))
    db = _new_york(clock, sql)
    seen: list[Any] = []

    def between(point: str) -> None:
        if point == "ran" and not seen:
            db.insert("w", _zoned_rows(9, clock.now()))
            seen.append(db.refresh("recent"))

    try:
        for round_ in range(3):
            db.insert("w", _zoned_rows(round_, clock.now()))
            assert db.refresh("recent").mode == "incremental"
            clock.step(timedelta(milliseconds=60))
        db.fault_hook = between
        db.execute("SET GLOBAL TimeZone = 'Asia/Kolkata'")
        db.fault_hook = lambda point: None
        (result,) = seen
        assert result.now is not None and result.error is None, result.error
        full = db.execute(at(sql, result.now)).fetchall()
        assert sorted(result.rows(), key=repr) == sorted(full, key=repr)
    finally:
        db.close()


def test_the_settings_are_asked_again_only_when_they_may_have_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A refresh that carries the cut bucket takes the bound from the instant and asks
    DuckDB nothing while the settings epoch stays (no statement that may set ran); once
    after a statement moved it; at every refresh once a raw cursor is out, until
    ``lock_down`` locks the configuration. Each result equals a full run."""
    sql = "SELECT k, count(*) AS c FROM w WHERE ts > now() - INTERVAL 64 SECOND GROUP BY k"
    asked: list[Any] = []
    first_row = marks.first_row

    def counted(found: Any) -> Any:
        asked.append(found)
        return first_row(found)

    clock = SteppedClock(datetime(2026, 12, 7, 12, 0, 0, 300_000, tzinfo=UTC))
    db = _new_york(clock, sql)

    def asks() -> int:
        before = len(asked)
        db.insert("w", _zoned_rows(len(asked), clock.now()))
        result = db.refresh("recent")
        assert result.now is not None and result.mode == "incremental", result.reason
        full = db.execute(at(sql, result.now)).fetchall()
        assert sorted(result.rows(), key=repr) == sorted(full, key=repr)
        clock.step(timedelta(milliseconds=60))
        return len(asked) - before

    try:
        for _ in range(2):  # the state built, the cut bucket carried
            asks()
        monkeypatch.setattr(marks, "first_row", counted)
        assert [asks() for _ in range(3)] == [0, 0, 0]
        db.execute("SET TimeZone = 'America/New_York'")  # the caller's session: it moves
        assert [asks() for _ in range(3)] == [1, 0, 0]
        db.cursor().close()
        assert [asks() for _ in range(3)] == [1, 1, 1]
        db.lock_down()
        assert [asks() for _ in range(3)] == [1, 0, 0]
    finally:
        db.close()


@settings(max_examples=max(EXAMPLES, 20), deadline=None)
@given(
    micros=st.lists(
        st.one_of(st.none(), st.integers(-(2**60) + 1, 2**60 - 1), st.integers(-(10**15), 10**16)),
        min_size=1,
        max_size=50,
    ),
    width=st.one_of(st.integers(1, 10**12), st.sampled_from([1000, 4_687_500, 86_400_000_000])),
    zone=st.sampled_from(["UTC", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"]),
)
def test_buckets_in_pyarrow_are_duckdbs_time_bucket(
    micros: list[int | None], width: int, zone: str
) -> None:
    """``instants.bucket_of`` gives what the bucketed state's SQL gives (DuckDB's
    time_bucket, ICU's for TIMESTAMPTZ), for TIMESTAMP and TIMESTAMPTZ in any zone."""
    import duckdb
    import pyarrow as pa

    from duckflock.live.instants import bucket_of, bucket_sql

    con = duckdb.connect()
    con.execute(f"SET TimeZone = '{zone}'")
    for kind in (pa.timestamp("us"), pa.timestamp("us", "UTC")):
        rows = pa.table({"ts": pa.array(micros, pa.int64()).cast(kind)})
        interval = f"INTERVAL '{width} microseconds'"
        expected = con.execute(
            f"SELECT {bucket_sql(interval, 'ts')} AS b FROM rows"
        ).to_arrow_table()
        got = bucket_of(rows["ts"], width, kind)
        assert got is not None
        # epoch microseconds: a bucket past the year 9999 has no datetime
        assert got.cast(pa.int64()).to_pylist() == expected["b"].cast(pa.int64()).to_pylist()


@pytest.mark.parametrize(
    "bound",
    ["now() - INTERVAL 1 HOUR", "CAST(now() AS TIMESTAMP) - INTERVAL 1 HOUR"],
)
def test_marks_across_a_dst_gap_for_either_bound_type(bound: str) -> None:
    """Buckets flagged from their marks (a TIMESTAMPTZ bound meets a TIMESTAMP bucket
    through the zone; a TIMESTAMP bound does not, but a bucket a jump cuts is still
    judged by its rows), with appends every few minutes over New York's spring-forward
    hour (rows inside the hour that does not exist too): each result equals a full
    run."""
    sql = f"SELECT k, count(*) AS c, max(ts) AS last FROM w WHERE ts > {bound} GROUP BY k"
    clock = SteppedClock(datetime(2026, 3, 8, 6, 10, tzinfo=UTC))
    db = _spring_forward(clock)
    try:
        db.analysis("hour", sql)
        for round_ in range(24):
            local = clock.now().astimezone(NEW_YORK).replace(tzinfo=None)
            db.insert("w", [(round_ % 3, local - timedelta(seconds=s)) for s in (1, 50, 3500)])
            result = db.refresh("hour", timeout=60)
            assert result.now == clock.now()
            full = db.execute(at(sql, result.now)).fetchall()
            assert sorted(result.rows()) == sorted(full), (round_, result.now, result.reason)
            clock.step(timedelta(minutes=7) if round_ % 2 else timedelta(seconds=3))
        assert result.mode == "incremental", result.reason
    finally:
        db.close()


@pytest.mark.parametrize("column", ["ts", "tz"])
def test_a_bucket_folded_in_with_a_delete_gets_its_marks(column: str) -> None:
    """A refresh that takes out deleted rows folds the appended ones in without marking
    their buckets: the marks it keeps do not cover its state, and the next refresh asks
    DuckDB for the new buckets' marks (a bucket without them would be judged expired
    and dropped). Each result equals a full run."""
    sql = (
        "SELECT k, count(*) AS c, sum(v) AS s FROM w "
        f"WHERE {column} > now() - INTERVAL 64 SECOND GROUP BY k"
    )
    clock = SteppedClock(datetime(2026, 12, 7, 12, 0, 0, 300_000, tzinfo=UTC))
    db = _new_york(clock, sql)
    try:
        for round_ in range(8):
            db.insert("w", _zoned_rows(round_, clock.now()))
            if round_ % 3 == 1:  # a bucket ahead no later round's rows touch, and a delete
                db.insert("w", _zoned_rows(round_, clock.now() + timedelta(seconds=110))[-1:])
                db.execute("DELETE FROM w WHERE v < -1")
            result = db.refresh("recent")
            assert result.now is not None
            full = db.execute(at(sql, result.now)).fetchall()
            assert normal(result.rows(), False) == normal(full, False), round_
            clock.step(timedelta(milliseconds=60))
        assert reason(db, "recent").startswith("incremental")
    finally:
        db.close()


def test_the_carried_rows_stay_few_chunks() -> None:
    """Each carried refresh with new rows in the cut bucket adds a chunk to its kept
    rows: past MAX_CHUNKS they are made one again (as a state's are)."""
    from duckflock.live.fold.states import MAX_CHUNKS

    sql = "SELECT k, count(*) AS c FROM w WHERE tz > now() - INTERVAL 6400 SECOND GROUP BY k"
    # 100 s buckets on the epoch's multiples of 100 s: the bound 10 s into one
    clock = SteppedClock(datetime.fromtimestamp(1_780_000_010 + 6400, UTC))
    db = _new_york(clock, sql)
    try:
        db.insert("w", _zoned_rows(0, clock.now()))
        db.refresh("recent")
        chunks = []
        for round_ in range(MAX_CHUNKS + 10):  # the instant stays in the cut bucket
            at_ = clock.now() - timedelta(seconds=6400 - 50)  # in the cut bucket, kept
            db.insert("w", [{"k": "a", "v": 1.0, "ts": None, "tz": at_}])
            result = db.refresh("recent")
            assert result.now is not None
            full = db.execute(at(sql, result.now)).fetchall()
            assert sorted(result.rows(), key=repr) == sorted(full, key=repr), round_
            carried = internals.analysis(db, "recent").state.carried
            assert carried is not None and carried.rows is not None
            chunks.append(carried.rows.column(0).num_chunks)
            clock.step(timedelta(milliseconds=1))
        assert max(chunks) <= MAX_CHUNKS + 1 and max(chunks) > 10, str(chunks)
    finally:
        db.close()


@pytest.mark.parametrize("column", ["ts", "tz"])
def test_a_bound_of_now_minus_a_duration_is_taken_from_the_instant(
    column: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``now() - INTERVAL 64 SECOND`` is proven ``now()`` minus 64,000,000 µs (marks.shift_of):
    refreshes that carry the state take the bound from the instant, no query, its local
    time (a TIMESTAMP's) from the cut bucket's offset. Across New York's fall-back hour,
    every result equals a full run; a bound with a day in it is not shifted."""
    sql = (
        "SELECT k, count(*) AS c, sum(v) AS s, min(v) AS lo "
        f"FROM w WHERE {column} > now() - INTERVAL 64 SECOND GROUP BY k"
    )
    asked: list[str] = []
    bounds = marks.bounds

    def counted(cursor: Any, sql: str, epoch: int | None) -> Any:
        asked.append(sql)
        return bounds(cursor, sql, epoch)

    monkeypatch.setattr(marks, "bounds", counted)
    # 2026-11-01 06:00 UTC, inside the window: New York's clocks go back from 02:00 to 01:00
    clock = SteppedClock(datetime(2026, 11, 1, 6, 0, 30, 300_000, tzinfo=UTC))
    db = _new_york(clock, sql)
    try:
        db.insert("w", _zoned_rows(0, clock.now()))
        db.refresh("recent")
        first = len(asked)
        for round_ in range(1, 13):
            db.insert("w", _zoned_rows(round_, clock.now()))
            result = db.refresh("recent")
            assert result.now == clock.now() and result.mode == "incremental", result.reason
            full = db.execute(at(sql, result.now)).fetchall()
            assert normal(result.rows(), False) == normal(full, False), round_
            clock.step(timedelta(milliseconds=60))
        assert len(asked) == first, asked  # (none after the state was built)
        cursor = duckdb.connect()
        for step, shift in (
            ("INTERVAL 64 SECOND", 64_000_000),
            ("INTERVAL '-90 seconds 3 microseconds'", -89_999_997),
            ("INTERVAL 30 HOUR", 108_000_000_000),
            ("INTERVAL 1 DAY", None),
            ("INTERVAL 1 MONTH", None),
        ):
            assert marks.shift_of(cursor, f"{NOW} - {step}", step) == shift, step
    finally:
        db.close()


def test_merging_by_position_equals_grouping() -> None:
    """bucketmerge.by_position gives the rows ``group_by`` gives (NULL keys match
    NULL), whatever the keys and which groups the partials touch."""
    arrow = ArrowPlan(
        keys=("k", "__b"),
        partials=((PartialKind.COUNT_ALL, None), (PartialKind.SUM, "v"), (PartialKind.MIN, "v")),
        outputs=(),
        names=(),
        schema=pa.schema([]),
        order=(),
        offset=0,
        limit=None,
    )
    rng = random.Random(7)
    for _ in range(20):

        def table(n: int) -> pa.Table:
            pairs = rng.sample([(k, b) for k in ["a", "b", None, "é"] for b in [None, 1, 2, 3]], n)
            return pa.table(
                {
                    "__k0": pa.array([k for k, _ in pairs], pa.string()),
                    "__k1": pa.array([b for _, b in pairs], pa.int64()),
                    "__p0": pa.array([rng.randint(1, 9) for _ in pairs], pa.int64()),
                    "__p1": pa.array([rng.choice([1.5, None, -2.0]) for _ in pairs]),
                    "__p2": pa.array([rng.choice([0.5, None, 3.0]) for _ in pairs]),
                }
            )

        state, parts = table(rng.randint(1, 16)), table(rng.randint(1, 16))
        found = bucketmerge.by_position(arrow, state, parts)
        assert found is not None
        grouped = arrow.merge(state, parts, unique=False)[0]
        assert sorted(found.to_pylist(), key=repr) == sorted(grouped.to_pylist(), key=repr)
