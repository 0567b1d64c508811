"""An analysis's history (GET /v1/analyses/{name}/history) and Parquet answers."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

import duckflock
from duckflock.live.results import Result
from duckflock.server import ServerSettings, create_app
from duckflock.server.history import History, history_table

PARQUET = "application/vnd.apache.parquet"
SUMS = "SELECT k, sum(v) AS s, count(*) AS n FROM t GROUP BY k ORDER BY k"


@pytest.fixture
def db() -> Iterator[duckflock.Database]:
    database = duckflock.connect()
    database.execute("CREATE TABLE t (k VARCHAR, v INTEGER)")
    yield database
    database.close()


def client(db: duckflock.Database, **settings: Any) -> TestClient:
    app = create_app(db, ServerSettings(**settings))
    return TestClient(app, base_url="http://localhost", raise_server_exceptions=False)


def define(http: TestClient, name: str, sql: str) -> None:
    body = {"sql": sql, "on_change": True, "min_interval": 0}
    assert http.put(f"/v1/analyses/{name}", json=body).status_code == 201


def reach(http: TestClient, name: str, version: int) -> dict[str, Any]:
    answer = http.get(f"/v1/analyses/{name}/result?min_version={version}&timeout=10")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def result(name: str, version: int, rows: int, at: int) -> Result:
    table = pa.table({"x": pa.array(range(rows), pa.int64())})
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=at)
    return Result(name, table, version, when, 0.0, 0, "full")


# -- the buffer ------------------------------------------------------------------------------


def test_history_keeps_the_last_versions_of_each_analysis() -> None:
    kept = History(results=3, max_bytes=2**30)
    for version in range(1, 6):
        kept.record(result("a", version, 1, version))
    kept.record(result("a", 4, 1, 9))  # late news of a version already passed: ignored
    assert [r.version for r in kept.results("a")] == [3, 4, 5]
    kept.record(result("b", 1, 1, 0))
    kept.forget("a")
    assert kept.results("a") == [] and kept.names() == {"b"}


def test_history_stays_within_its_byte_bound_dropping_the_oldest_of_any_analysis() -> None:
    size = result("a", 1, 1000, 0).table.get_total_buffer_size()
    kept = History(results=100, max_bytes=3 * size)
    kept.record(result("a", 1, 1000, 0))
    kept.record(result("b", 1, 1000, 1))
    kept.record(result("a", 2, 1000, 2))
    kept.record(result("b", 2, 1000, 3))  # over: a's version 1 (the oldest) goes
    assert [r.version for r in kept.results("a")] == [2]
    assert [r.version for r in kept.results("b")] == [1, 2]
    assert kept.nbytes == 3 * size
    kept.record(result("c", 1, 10_000, 4))  # alone over the bound: not kept
    assert kept.results("c") == [] and kept.nbytes == 3 * size


def test_history_table_uses_the_newest_shape_and_dodges_column_names() -> None:
    old = result("a", 1, 2, 0)
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    new = [
        Result("a", pa.table({"version": ["x"]}), v, when + dt.timedelta(seconds=v), 0, 0, "full")
        for v in (2, 3)
    ]
    table, versions = history_table([old, *new])
    assert versions == [2, 3]  # version 1 had other columns
    assert table.column_names == ["_version", "refreshed_at", "version"]
    assert table.column("_version").to_pylist() == [2, 3]
    assert history_table([old, *new], last=1)[1] == [3]
    assert history_table([old, *new], last=0)[0].num_rows == 0


# -- the route -------------------------------------------------------------------------------


def test_history_route_gives_each_kept_version_as_duckdb_computed_it(
    db: duckflock.Database,
) -> None:
    with client(db, history_results=4) as http:
        define(http, "sums", SUMS)
        reach(http, "sums", 1)
        expected = {}
        for i in range(6):
            db.insert("t", [{"k": "a", "v": i}, {"k": "b", "v": 10 * i}])
            version = reach(http, "sums", i + 2)["version"]
            # DuckDB on the same data is the oracle of what that version held
            expected[version] = db.execute(SUMS).fetchall()
        body = http.get("/v1/analyses/sums/history").json()
        assert body["limit"] == 4
        assert body["versions"] == sorted(expected)[-4:]
        assert body["columns"] == ["version", "refreshed_at", "k", "s", "n"]
        assert body["types"][1] == "timestamp[us, tz=UTC]"
        for version in body["versions"]:
            rows = [tuple(r[2:]) for r in body["rows"] if r[0] == version]
            assert rows == [(k, int(s), n) for k, s, n in expected[version]]
        times = [dt.datetime.fromisoformat(r[1]) for r in body["rows"]]
        assert times == sorted(times)
        # ?last= and the other formats of the same rows
        assert (
            http.get("/v1/analyses/sums/history?last=2").json()["versions"] == body["versions"][-2:]
        )
        parquet = http.get("/v1/analyses/sums/history", headers={"Accept": PARQUET})
        assert parquet.headers["content-type"] == PARQUET
        table = pq.read_table(io.BytesIO(parquet.content))
        assert table.column("version").to_pylist() == [r[0] for r in body["rows"]]
        for bad in ("5", "-1", "x"):
            answer = http.get(f"/v1/analyses/sums/history?last={bad}")
            assert answer.status_code == 400
            assert "last=" in answer.json()["error"]["message"]
        assert http.get("/v1/analyses/nope/history").status_code == 404
        # the served document says the same bound and formats the route enforces
        spec = http.get("/openapi.json").json()["paths"]["/v1/analyses/{name}/history"]["get"]
        found = {p["name"]: p["schema"] for p in spec["parameters"]}
        assert found["last"] == {"type": "integer", "minimum": 0, "maximum": 4}
        assert PARQUET in found["Accept"]["enum"]
        assert PARQUET in spec["responses"]["200"]["content"]
        assert spec["x-duckflock-role"] == "read"

        # dropped and defined again: the history starts afresh
        assert http.delete("/v1/analyses/sums").status_code == 204
        assert http.get("/v1/analyses/sums/history").status_code == 404
        define(http, "sums", SUMS)
        reach(http, "sums", 1)
        assert http.get("/v1/analyses/sums/history").json()["versions"] == [1]


def test_analyses_from_the_library_are_followed_too(db: duckflock.Database) -> None:
    db.analysis("lib", SUMS, on_change=True, min_interval=0)
    with client(db) as http:
        reach(http, "lib", 1)
        db.insert("t", {"k": "a", "v": 1})
        reach(http, "lib", 2)
        versions = http.get("/v1/analyses/lib/history").json()["versions"]
        assert versions[-1] == 2


# -- Parquet ---------------------------------------------------------------------------------


def test_query_and_result_as_parquet_match_duckdb(db: duckflock.Database) -> None:
    db.insert("t", [{"k": f"k{i % 7}", "v": i} for i in range(1000)])
    sql = (
        "SELECT k, v, v::HUGEINT * 1000000000000 AS big, v / 3 AS third, "
        "TIMESTAMP '2026-01-01' + to_seconds(v) AS at, [v, v + 1] AS pair FROM t ORDER BY v"
    )
    with client(db, query_row_cap=600) as http:
        answer = http.post("/v1/query", json={"sql": sql}, headers={"Accept": PARQUET})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == PARQUET
        got = pq.ParquetFile(io.BytesIO(answer.content))
        expected = db.execute(sql + " LIMIT 600").arrow().read_all()
        assert got.read().equals(expected)
        # cut at the row cap: the footer says so
        marker = got.metadata.metadata[b"duckflock.truncated"]
        assert b'"reason":"rows"' in marker and b'"rows":600' in marker

        define(http, "sums", SUMS)
        reach(http, "sums", 1)
        answer = http.get("/v1/analyses/sums/result", headers={"Accept": PARQUET})
        table = pq.read_table(io.BytesIO(answer.content))
        assert table.equals(db.execute(SUMS).arrow().read_all())

        # a type Parquet cannot hold: a clear 400 that names the way out
        interval = http.post(
            "/v1/query", json={"sql": "SELECT INTERVAL 1 DAY AS i"}, headers={"Accept": PARQUET}
        )
        assert interval.status_code == 400
        assert "cannot be written as Parquet" in interval.json()["error"]["message"]


def test_a_parquet_answer_cut_by_the_byte_cap_is_a_valid_file_that_says_so(
    db: duckflock.Database,
) -> None:
    sql = "SELECT range AS i, range::VARCHAR AS s FROM range(3000000)"
    with client(db, query_byte_cap=1_000_000, query_row_cap=10_000_000) as http:
        answer = http.post("/v1/query", json={"sql": sql}, headers={"Accept": PARQUET})
        assert answer.status_code == 200
        assert len(answer.content) <= 1_000_000 + 64 * 1024  # the cap, plus the footer
        got = pq.ParquetFile(io.BytesIO(answer.content))
        marker = got.metadata.metadata[b"duckflock.truncated"]
        assert b'"reason":"bytes"' in marker
        table = got.read()
        assert 0 < table.num_rows < 3_000_000
        assert table.column("i").to_pylist() == list(range(table.num_rows))  # a clean prefix
