"""The HTTP API in-process (Starlette's TestClient), and the Client over it."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import math
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from starlette.testclient import TestClient

import duckflock
from duckflock import (
    AuthenticationError,
    Client,
    QueryRefusedError,
    RowRejectedError,
    SchemaMismatchError,
    UnknownAnalysisError,
    UnknownTableError,
)
from duckflock.server import ServerSettings, create_app
from duckflock.server.guard import QueryGuard
from duckflock.server.serve import ServeConfig, is_loopback, prepare

ARROW = "application/vnd.apache.arrow.stream"
EVENTS = "CREATE TABLE events (k VARCHAR NOT NULL, v INTEGER, seen TIMESTAMP DEFAULT now())"


def arrow_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


@pytest.fixture
def db() -> Iterator[duckflock.Database]:
    database = duckflock.connect()
    database.execute(EVENTS)
    database.lock_down()
    yield database
    database.close()


def make_client(db: duckflock.Database, **settings: Any) -> TestClient:
    return TestClient(
        create_app(db, ServerSettings(**settings)),
        base_url="http://localhost",
        raise_server_exceptions=False,
    )


@pytest.fixture
def http(db: duckflock.Database) -> Iterator[TestClient]:
    with make_client(db, max_body=64 * 1024, query_row_cap=50, query_timeout=0.5) as client:
        yield client


def count(db: duckflock.Database) -> int:
    row = db.execute("SELECT count(*) FROM events").fetchone()
    assert row is not None
    return int(row[0])


def error_of(response: Any, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["type"] == kind
    assert body["error"]["message"]
    return dict(body["error"])


# -- ingest ----------------------------------------------------------------------------


def test_ingest_in_every_content_type(http: TestClient, db: duckflock.Database) -> None:
    rows = "/v1/tables/events/rows"
    assert http.post(rows, json={"k": "obj", "v": 1}).json() == {
        "table": "events",
        "rows": 1,
        "committed": True,
    }
    assert http.post(rows, json=[{"k": "arr", "v": 2}, {"k": "arr"}]).json()["rows"] == 2
    assert http.post(rows, json=[["tuple", 3, None]]).json()["rows"] == 1
    ndjson = b'{"k": "nd", "v": 4}\n\n{"k": "nd", "v": 5}\n'
    response = http.post(rows, content=ndjson, headers={"Content-Type": "application/x-ndjson"})
    assert response.json()["rows"] == 2
    csv_body = b"k,v\ncsv,6\ncsv,\n007,8\n"
    assert (
        http.post(rows, content=csv_body, headers={"Content-Type": "text/csv"}).json()["rows"] == 3
    )
    arrow = arrow_bytes(pa.table({"k": ["arrow"] * 3, "v": [9, 10, 11]}))
    assert http.post(rows, content=arrow, headers={"Content-Type": ARROW}).json()["rows"] == 3
    accepted = http.post(rows + "?wait=false", json={"k": "later", "v": 12})
    assert accepted.status_code == 202
    assert accepted.json()["committed"] is False
    db.flush()
    assert count(db) == 13
    got = dict(db.execute("SELECT k, count(*) FROM events GROUP BY k").fetchall())
    assert got == {
        "obj": 1,
        "arr": 2,
        "tuple": 1,
        "nd": 2,
        "csv": 2,
        "007": 1,
        "arrow": 3,
        "later": 1,
    }


@pytest.mark.parametrize(
    "row",
    [
        {"k": "fine", "v": 1},
        {"k": "fine"},
        {"k": None, "v": 1},  # NOT NULL
        {"k": "x", "v": "not a number"},
        {"k": "x", "v": 2**40},  # out of INTEGER's range
        {"k": "x", "nope": 1},  # an unknown column
        {"K": "case", "V": 3},  # names resolve case-insensitively
        {},
    ],
)
def test_one_object_and_a_one_row_array_get_the_same_answer(
    http: TestClient, db: duckflock.Database, row: dict[str, Any]
) -> None:
    """A one-object body takes the single-row path (Intake.single, once its keys are
    known); a one-row array the general one: the same status, answer and rows, for good
    rows and refused ones, whether the keys are new or cached."""
    rows = "/v1/tables/events/rows"
    answers = []
    for body in (row, [row], row, [row]):
        response = http.post(rows, json=body)
        answers.append((response.status_code, response.json()))
    assert answers[0] == answers[1] == answers[2] == answers[3], answers
    stored = db.execute("SELECT k, v FROM events ORDER BY k").fetchall()
    assert len(stored) == (4 if answers[0][0] == 200 else 0), stored
    assert len(set(stored)) <= 1


def test_a_keyed_one_row_body_replays_in_either_form(
    http: TestClient, db: duckflock.Database
) -> None:
    rows = "/v1/tables/events/rows"
    headers = {"Idempotency-Key": "one-row"}
    first = http.post(rows, json={"k": "a", "v": 1}, headers=headers)
    again = http.post(rows, json={"k": "a", "v": 1}, headers=headers)
    listed = http.post(rows, json=[{"k": "a", "v": 1}], headers=headers)
    assert first.status_code == again.status_code == listed.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == listed.headers["Idempotent-Replayed"] == "true"
    assert again.json() == listed.json() == first.json()
    assert count(db) == 1
    other = http.post(rows, json={"k": "b", "v": 1}, headers=headers)
    error_of(other, 422, "KeyReusedError")


def test_ingest_errors_have_their_status_and_shape(
    http: TestClient, db: duckflock.Database
) -> None:
    rows = "/v1/tables/events/rows"
    error_of(
        http.post(rows, content=b"{nope", headers={"Content-Type": "application/json"}),
        400,
        "RequestError",
    )
    error_of(
        http.post(rows, content=b'{"k": 1}\n[2]', headers={"Content-Type": "application/x-ndjson"}),
        400,
        "RequestError",
    )
    error_of(
        http.post(rows, content=b"not arrow", headers={"Content-Type": ARROW}), 400, "RequestError"
    )
    error_of(
        http.post(rows, content=b'k,v\n"unterminated', headers={"Content-Type": "text/csv"}),
        400,
        "RequestError",
    )
    error_of(
        http.post(rows, content=b"", headers={"Content-Type": "application/json"}),
        400,
        "RequestError",
    )
    error_of(http.post(rows, json=42), 400, "RequestError")
    deep = b"[" * 20_000 + b"]" * 20_000
    nested = error_of(
        http.post(rows, content=deep, headers={"Content-Type": "application/json"}),
        400,
        "RequestError",
    )
    assert "nested too deeply" in nested["message"]
    query = http.post("/v1/query", content=deep, headers={"Content-Type": "application/json"})
    error_of(query, 400, "RequestError")
    error_of(
        http.post(rows, content=b"k=1", headers={"Content-Type": "text/plain"}),
        415,
        "UnsupportedMediaTypeError",
    )
    error_of(
        http.post(
            rows,
            content=b"[" + b"1," * 40_000 + b"1]",
            headers={"Content-Type": "application/json"},
        ),
        413,
        "PayloadTooLargeError",
    )
    missing = error_of(
        http.post("/v1/tables/nowhere/rows", json={"k": "a"}), 404, "UnknownTableError"
    )
    assert missing["table"] == "nowhere"
    unknown = error_of(
        http.post(rows, json={"k": "a", "colour": "red"}), 422, "SchemaMismatchError"
    )
    assert unknown["column"] == "colour"
    wrong_type = error_of(
        http.post(rows, json=[{"k": "a", "v": 1}, {"k": "b", "v": "many"}]), 422, "RowRejectedError"
    )
    assert wrong_type["row_index"] == 1
    assert wrong_type["column"] == "v"
    assert wrong_type["cause"] == "ConversionError"
    null = error_of(
        http.post(rows, json=[{"k": "ok"}, {"k": "ok"}, {"v": 3}, {"k": None}]),
        422,
        "RowRejectedError",
    )
    assert null["row_index"] == 2
    assert null["column"] == "k"
    error_of(http.post(rows, json=[{"k": "a"}, ["b", 1, None]]), 400, "RequestError")
    error_of(http.get(rows), 405, "MethodNotAllowed")
    error_of(http.get("/v1/nothing"), 404, "NotFound")
    assert count(db) == 0  # every request was atomic: nothing from a bad one landed


def test_a_bad_request_does_not_affect_others(http: TestClient, db: duckflock.Database) -> None:
    barrier = threading.Barrier(8)
    statuses: list[int] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        row = {"k": None} if i % 2 else {"k": f"good{i}", "v": i}
        barrier.wait()
        response = http.post("/v1/tables/events/rows", json=[row])
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(statuses) == [200] * 4 + [422] * 4
    assert count(db) == 4


# -- query -----------------------------------------------------------------------------


def test_query_in_json_arrow_and_csv(http: TestClient, db: duckflock.Database) -> None:
    db.insert("events", [{"k": "a", "v": 1}, {"k": "b", "v": 2}])
    sql = {"sql": "SELECT k, v FROM events WHERE v >= ? ORDER BY k", "params": [1]}
    body = http.post("/v1/query", json=sql).json()
    assert body["columns"] == ["k", "v"]
    assert body["rows"] == [["a", 1], ["b", 2]]
    assert body["truncated"] is False
    arrow = http.post("/v1/query", json=sql, headers={"Accept": ARROW})
    assert arrow.headers["content-type"] == ARROW
    assert pa.ipc.open_stream(arrow.content).read_all().to_pydict() == {
        "k": ["a", "b"],
        "v": [1, 2],
    }
    csv = http.post("/v1/query", json=sql, headers={"Accept": "text/csv"})
    assert pa_csv.read_csv(io.BytesIO(csv.content)).num_rows == 2
    named = http.post("/v1/query", json={"sql": "SELECT $x + 1 AS y", "params": {"x": 41}})
    assert named.json()["rows"] == [[42]]


def test_query_row_cap_and_time_limit(http: TestClient) -> None:
    capped = http.post("/v1/query", json={"sql": "SELECT * FROM range(1000)"}).json()
    assert len(capped["rows"]) == 50
    assert capped["truncated"] is True
    slow = "SELECT count(*) FROM range(100000000) a, range(100000) b"
    error_of(http.post("/v1/query", json={"sql": slow}), 504, "QueryTimeoutError")
    assert http.post("/v1/query", json={"sql": "SELECT 1 AS one"}).json()["rows"] == [[1]]


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO events (k) VALUES ('x')",
        "UPDATE events SET v = 1",
        "DELETE FROM events",
        "CREATE TABLE evil (x INTEGER)",
        "DROP TABLE events",
        "ATTACH 'other.duckdb' AS other",
        "COPY events TO 'out.csv'",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET threads = 1",
        "RESET threads",
        "PRAGMA version",
        "CALL checkpoint()",
        "EXPLAIN SELECT 1",
        "SELECT 1; SELECT 2",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_blob('/etc/passwd')",
        "SELECT * FROM read_text('test.duckdb')",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM glob('/*')",
        "SELECT * FROM query('SELECT 1')",
        "SELECT nextval('s')",
        "SELECT getenv('HOME')",
        "BEGIN TRANSACTION",
    ],
)
def test_query_endpoint_refuses_writes_and_file_access(http: TestClient, sql: str) -> None:
    error_of(http.post("/v1/query", json={"sql": sql}), 403, "QueryRefusedError")


def test_query_lockdown_holds_even_past_the_parser_check(db: duckflock.Database) -> None:
    # the database itself refuses file access, whatever slips past the statement check
    with pytest.raises(duckflock.DuckflockError, match="Permission"):
        db.execute("SELECT * FROM read_csv_auto('/etc/hostname')").fetchall()


def test_query_bad_input(http: TestClient) -> None:
    error_of(http.post("/v1/query", json={"sql": "SELEC 1"}), 400, "ParserError")
    error_of(http.post("/v1/query", json={"sql": "SELECT * FROM nowhere"}), 400, "CatalogError")
    error_of(http.post("/v1/query", json={"sql": "SELECT ?", "params": []}), 400, "BindError")
    error_of(http.post("/v1/query", json={"query": "SELECT 1"}), 400, "RequestError")
    error_of(http.post("/v1/query", json={"sql": "SELECT 1", "params": 5}), 400, "RequestError")
    json_type = {"Content-Type": "application/json"}
    error_of(http.post("/v1/query", content=b"SELECT 1", headers=json_type), 400, "RequestError")
    # a body that is not declared as JSON is never parsed (CORS-safelisted types above all)
    error_of(http.post("/v1/query", content=b"SELECT 1"), 415, "UnsupportedMediaTypeError")


# -- auth ------------------------------------------------------------------------------


def test_token_guards_every_endpoint_but_health_and_the_page(db: duckflock.Database) -> None:
    with make_client(db, token="s3cret-s3cret-s3cret") as http:
        assert http.get("/v1/health").json()["status"] == "ok"
        page = http.get("/")  # the dashboard page holds no data: it asks for the token
        assert page.status_code == 200
        with_token = http.get("/", headers={"Authorization": "Bearer s3cret-s3cret-s3cret"})
        assert page.text == with_token.text  # the same static page, whoever asks
        for method, path in [
            ("GET", "/v1/tables"),
            ("GET", "/metrics"),
            ("GET", "/openapi.json"),
            ("GET", "/v1/analyses"),
            ("POST", "/v1/query"),
            ("POST", "/v1/tables/events/rows"),
        ]:
            error_of(http.request(method, path), 401, "AuthenticationError")
        error_of(
            http.get("/v1/tables", headers={"Authorization": "Bearer wrong"}),
            401,
            "AuthenticationError",
        )
        bearer = {"Authorization": "Bearer s3cret-s3cret-s3cret"}
        assert http.get("/v1/tables", headers=bearer).status_code == 200
        assert http.get("/v1/tables?access_token=s3cret-s3cret-s3cret").status_code == 200
        with pytest.raises(AuthenticationError):
            Client("http://testserver", http=http).tables()
        client = Client("http://testserver", token="s3cret-s3cret-s3cret", http=http)
        assert client.tables()[0]["name"] == "events"


def test_open_bind_without_token_is_refused() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("localhost")
    assert is_loopback("::1")
    assert not is_loopback("0.0.0.0")
    with pytest.raises(ValueError, match="without a token"):
        prepare(":memory:", ServerSettings(), None, "0.0.0.0")


# -- tables, analyses, metrics ---------------------------------------------------------


def test_tables_analyses_and_results(http: TestClient, db: duckflock.Database) -> None:
    db.insert("events", [{"k": "a", "v": 1}, {"k": "a", "v": 2}, {"k": "b", "v": 5}])
    (table,) = http.get("/v1/tables").json()
    assert table["name"] == "events"
    assert table["rows"] == 3
    assert [c["name"] for c in table["columns"]] == ["k", "v", "seen"]
    sql = "SELECT k, count(*) AS n, sum(v) AS s FROM events GROUP BY k ORDER BY k"
    defined = http.put("/v1/analyses/per_k", json={"sql": sql, "on_change": True})
    assert defined.status_code == 201
    assert defined.json()["incremental"] is True
    result = http.get("/v1/analyses/per_k/result").json()
    assert result["version"] >= 1
    assert result["rows"] == [["a", 2, 3], ["b", 1, 5]]
    arrow = http.get("/v1/analyses/per_k/result", headers={"Accept": ARROW})
    assert int(arrow.headers["x-duckflock-version"]) >= 1
    assert pa.ipc.open_stream(arrow.content).read_all().num_rows == 2
    listed = http.get("/v1/analyses").json()
    assert [a["name"] for a in listed] == ["per_k"]
    error_of(http.put("/v1/analyses/bad", json={"sql": "SELEC"}), 400, "ParserError")
    error_of(
        http.put("/v1/analyses/bad", json={"sql": "SELECT * FROM nowhere"}), 400, "CatalogError"
    )
    error_of(http.put("/v1/analyses/bad", json={"sql": sql, "every": 0}), 400, "RequestError")
    error_of(http.put("/v1/analyses/bad", json={"sql": sql, "every": "soon"}), 400, "RequestError")
    error_of(http.get("/v1/analyses/none/result"), 404, "UnknownAnalysisError")
    error_of(http.get("/v1/analyses/none/events"), 404, "UnknownAnalysisError")
    error_of(
        http.get("/v1/analyses/per_k/result?min_version=99&timeout=0.05"), 504, "ResultTimeoutError"
    )
    error_of(http.get("/v1/analyses/per_k/result?min_version=soon"), 400, "RequestError")
    assert http.delete("/v1/analyses/per_k").status_code == 204
    error_of(http.delete("/v1/analyses/per_k"), 404, "UnknownAnalysisError")


def test_a_sliding_windows_instant_reaches_json_and_the_client(
    http: TestClient, db: duckflock.Database
) -> None:
    db.insert("events", [{"k": "a", "v": 1}, {"k": "b", "v": 2}])
    sql = "SELECT k, count(*) AS n FROM events WHERE seen > now() - INTERVAL 1 HOUR GROUP BY k"
    assert http.put("/v1/analyses/recent", json={"sql": sql}).status_code == 201
    plain = "SELECT count(*) AS n FROM events"
    assert http.put("/v1/analyses/plain", json={"sql": plain}).status_code == 201
    result = http.get("/v1/analyses/recent/result").json()
    instant = dt.datetime.fromisoformat(result["now"])
    assert instant.tzinfo is not None and sorted(result["rows"]) == [["a", 1], ["b", 1]]
    assert http.get("/v1/analyses/plain/result").json()["now"] is None
    client = Client("http://testserver", http=http)
    fetched = client.result("recent")
    assert fetched.now is not None and fetched.now >= instant
    assert client.result("plain").now is None


def test_metrics_and_openapi(http: TestClient, db: duckflock.Database) -> None:
    http.post("/v1/tables/events/rows", json=[{"k": "a"}, {"k": "b"}])
    http.post("/v1/tables/events/rows", json={"k": None})
    http.put("/v1/analyses/n", json={"sql": "SELECT count(*) FROM events"})
    http.get("/v1/analyses/n/result")
    text = http.get("/metrics").text
    assert "duckflock_rows_committed_total 2.0" in text
    assert "duckflock_calls_rejected_total 1.0" in text
    assert "duckflock_queue_rows 0.0" in text
    assert "duckflock_commit_seconds_bucket" in text
    assert 'duckflock_analysis_refresh_seconds{analysis="n"' in text
    assert (
        'duckflock_http_requests_total{method="POST",route="/v1/tables/{table}/rows",status="422"}'
        " 1.0" in text
    )
    spec = http.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert "/v1/tables/{table}/rows" in spec["paths"]
    assert "/v1/query" in spec["paths"]


def test_dashboard_page_ships_its_assets(http: TestClient) -> None:
    page = http.get("/")
    assert page.status_code == 200
    assert "<title>duckflock</title>" in page.text
    assert "EventSource" in page.text  # the script is inlined: no CDN, no extra request
    assert "http://" not in page.text.replace("http://www.w3.org/2000/svg", "")


# -- the Client over the same app ------------------------------------------------------


def test_client_raises_the_embedded_error_classes(http: TestClient, db: duckflock.Database) -> None:
    client = Client("http://testserver", http=http)
    assert client.insert("events", [{"k": "a", "v": 1}, {"k": "b"}]) == 2
    with pytest.raises(duckflock.RequestError, match="all be dicts or all tuples"):
        client.insert("events", [{"k": "a", "v": 1}, ("b", 2, None)])
    assert client.insert("events", pa.table({"k": ["c"] * 2500, "v": list(range(2500))})) == 2500
    assert client.insert("events", [{"k": f"u{i}", "v": i} for i in range(1500)]) == 1500
    assert client.insert("events", [("t", 1)], columns=["k", "v"]) == 1
    with pytest.raises(RowRejectedError) as info:
        client.insert("events", [{"k": "ok"}, {"k": None}])
    assert info.value.row_index == 1
    assert info.value.column == "k"
    assert isinstance(info.value.cause, duckflock.ConstraintError)
    with pytest.raises(UnknownTableError) as missing:
        client.insert("nowhere", {"k": "a"})
    assert missing.value.table == "nowhere"
    with pytest.raises(SchemaMismatchError):
        client.insert("events", {"nope": 1})
    with pytest.raises(QueryRefusedError):
        client.execute("DELETE FROM events")
    with pytest.raises(duckflock.ParserError):
        client.query("SELEC")
    with pytest.raises(TypeError):
        client.insert("events", "k=a")
    assert client.execute("SELECT count(*) FROM events").fetchone() == (4003,)
    assert client.query("SELECT count(DISTINCT k) AS n FROM events").to_pydict()["n"] == [1504]
    assert len(client.query_df("SELECT * FROM events LIMIT 3")) == 3
    status = client.analysis("per_k", "SELECT k, count(*) AS n FROM events GROUP BY k")
    assert status["name"] == "per_k"
    result = client.result("per_k")
    assert result.version >= 1
    assert result.table.num_rows == 1504
    assert [a["name"] for a in client.analyses()] == ["per_k"]
    client.drop_analysis("per_k")
    with pytest.raises(UnknownAnalysisError):
        client.result("per_k")
    assert client.stats()["rows_committed"] == 4003
    client.close()
    client.close()
    with pytest.raises(duckflock.ClosedError):
        client.tables()


def test_unreachable_server_is_a_transport_error() -> None:
    with Client("http://127.0.0.1:9", timeout=2) as client, pytest.raises(duckflock.TransportError):
        client.health()


def test_serve_config_declares_tables_and_analyses(tmp_path: Any) -> None:
    path = tmp_path / "duckflock.toml"
    path.write_text(
        '[[tables]]\nsql = "CREATE TABLE t (x INTEGER)"\n\n'
        '[[analyses]]\nname = "total"\nsql = "SELECT count(*) AS n FROM t"\non_change = true\n'
    )
    config = ServeConfig.load(path)
    with duckflock.connect() as db:
        config.apply_tables(db)
        config.apply_analyses(db, QueryGuard(db).check)
        assert [a["name"] for a in db.analyses()] == ["total"]
        assert db.analyses()[0]["on_change"] is True
        assert db.analyses()[0]["defined_by"] == "config"
    bad = tmp_path / "bad.toml"
    bad.write_text("[[analyses]]\nsql = 'SELECT 1'\n")
    with pytest.raises(ValueError, match="needs a name"):
        ServeConfig.load(bad)
    bad.write_text("not = [valid")
    with pytest.raises(ValueError, match="cannot read config"):
        ServeConfig.load(bad)


def test_json_values_render_plainly(http: TestClient) -> None:
    sql = (
        "SELECT 1.5::DECIMAL(10,2) AS d, DATE '2024-01-02' AS day, 'inf'::DOUBLE AS big, "
        "'nan'::DOUBLE AS nan, [1, 2] AS list, {'a': 1} AS struct, '\\x00'::BLOB AS blob"
    )
    row = http.post("/v1/query", json={"sql": sql}).json()["rows"][0]
    assert row[:5] == ["1.50", "2024-01-02", "Infinity", None, [1, 2]]
    assert row[5] == {"a": 1}
    json.dumps(row)


def test_tables_whose_names_look_like_files_are_read_files_are_not(
    db: duckflock.Database,
) -> None:
    db.execute('CREATE TABLE "a.b" (x INTEGER)')
    db.execute('CREATE SCHEMA "odd/schema"')
    db.execute('CREATE TABLE "odd/schema"."c\\d" (x INTEGER)')
    db.insert("a.b", {"x": 1})
    db.insert('"odd/schema"."c\\d"', {"x": 2})
    with make_client(db) as http:
        for sql, value in [
            ('SELECT x FROM "a.b"', 1),
            ('SELECT x FROM main."a.b"', 1),
            ('SELECT x FROM "odd/schema"."c\\d"', 2),
        ]:
            answer = http.post("/v1/query", json={"sql": sql})
            assert answer.status_code == 200, answer.text
            assert answer.json()["rows"] == [[value]]
        for sql in ["SELECT * FROM 'x.csv'", 'SELECT * FROM "/etc/passwd"', 'FROM "a.c"']:
            error_of(http.post("/v1/query", json={"sql": sql}), 403, "QueryRefusedError")
        names = {(t["schema"], t["table"]) for t in http.get("/v1/tables").json()}
        assert {("main", "a.b"), ("odd/schema", "c\\d")} <= names


def test_the_client_sends_dates_decimals_and_odd_names(db: duckflock.Database) -> None:
    db.execute(
        "CREATE TABLE typed "
        "(seen TIMESTAMP, day DATE, amount DECIMAL(10, 2), id UUID, took INTERVAL)"
    )
    row = {
        "seen": dt.datetime(2026, 11, 30, 7, 30, 1),
        "day": dt.date(2026, 11, 30),
        "amount": decimal.Decimal("12.34"),
        "id": uuid.UUID(int=7),
        "took": dt.timedelta(seconds=90),
    }
    with make_client(db) as http:
        client = Client("http://testserver", http=http)
        client.insert("typed", [row])
        assert db.execute("SELECT * FROM typed").fetchall() == [tuple(row.values())]
        with pytest.raises(ValueError, match="NaN and infinities cannot be sent as JSON"):
            client.insert("typed", [{"amount": math.nan, "day": None}])
        with pytest.raises(TypeError, match="cannot be sent as JSON"):
            client.insert("typed", [{"amount": object(), "day": None}])
        status = client.analysis("odd?name#1", "SELECT count(*) AS n FROM typed", timeout=0.2)
        assert status["name"] == "odd?name#1"
        assert status["timeout"] == 0.2
        assert client.result("odd?name#1", min_version=1, timeout=30).rows() == [(1,)]
        with pytest.raises(duckflock.RequestError, match="at most the server's query time"):
            client.analysis("long", "SELECT 1", timeout=3600)


@pytest.mark.parametrize(
    ("sql", "kind"),
    [("", "QueryRefusedError"), ("  ; ", "QueryRefusedError"), ("CREATE TABLE", "ParserError")],
)
def test_sql_route_needs_exactly_one_statement(db: duckflock.Database, sql: str, kind: str) -> None:
    with make_client(db) as http:
        refused = http.post("/v1/sql", json={"sql": sql})
        assert refused.status_code in (400, 403), refused.text
        assert refused.json()["error"]["type"] == kind
        two = http.post("/v1/sql", json={"sql": "CREATE TABLE a (x INT); CREATE TABLE b (x INT)"})
        assert two.json()["error"]["type"] == "QueryRefusedError"
        assert not any(t["table"] in ("a", "b") for t in db.tables())


def test_an_arrow_body_is_one_stream_and_nothing_after_it(db: duckflock.Database) -> None:
    from duckflock.ingest.rows import ipc_bytes

    stream = ipc_bytes(pa.table({"k": ["a", "b"], "v": [3, 4]}))
    arrow = {"Content-Type": "application/vnd.apache.arrow.stream"}
    with make_client(db) as http:
        for body in (stream + stream, stream + b"garbage"):
            refused = http.post("/v1/tables/events/rows", content=body, headers=arrow)
            error_of(refused, 400, "RequestError")
            assert "after the Arrow IPC stream" in refused.json()["error"]["message"]
        assert db.execute("SELECT count(*) FROM events").fetchone() == (0,)
        accepted = http.post("/v1/tables/events/rows", content=stream, headers=arrow)
        assert accepted.status_code == 200, accepted.text
    assert db.execute("SELECT count(*) FROM events").fetchone() == (2,)


def test_integers_wider_than_arrow_holds_arrive_right_in_every_format(http: TestClient) -> None:
    # DuckDB exports UHUGEINT as decimal128: 2^128 - 1 came back as -1; BIGNUM as bytes
    top = 2**128 - 1
    sql = {"sql": f"SELECT {top}::UHUGEINT AS u, '-98765432109876543210987654321'::VARINT AS v"}
    body = http.post("/v1/query", json=sql).json()
    assert [int(body["rows"][0][0]), body["rows"][0][1]] == [top, "-98765432109876543210987654321"]
    arrow = http.post("/v1/query", json=sql, headers={"Accept": ARROW})
    table = pa.ipc.open_stream(arrow.content).read_all()
    assert table.to_pydict() == {"u": [top], "v": ["-98765432109876543210987654321"]}
    csv = http.post("/v1/query", json=sql, headers={"Accept": "text/csv"})
    assert str(top) in csv.text and "-98765432109876543210987654321" in csv.text


def test_the_rows_route_is_served_ahead_of_the_router(db: duckflock.Database) -> None:
    """The hot rows route answers without the router's walk (taken out of the router's
    table, it still works), behind the same role check, with the same typed errors and
    metric label; another method on its path still reaches the router (405)."""
    reader, writer = "r" * 16, "w" * 16
    app = create_app(db, ServerSettings(tokens={reader: "read", writer: "write"}))
    rows_path = "/v1/tables/{table}/rows"
    kept = [route for route in app.router.routes if getattr(route, "path", "") != rows_path]
    assert len(kept) == len(app.router.routes) - 1
    app.router.routes = kept
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as http:
        as_writer = {"Authorization": f"Bearer {writer}"}
        answer = http.post("/v1/tables/events/rows", json={"k": "a"}, headers=as_writer)
        assert answer.json() == {"table": "events", "rows": 1, "committed": True}
        forbidden = error_of(
            http.post(
                "/v1/tables/events/rows",
                json={"k": "b"},
                headers={"Authorization": f"Bearer {reader}"},
            ),
            403,
            "ForbiddenError",
        )
        # the role by its name, as the dashboard's messages spell it (was the enum's repr)
        assert forbidden["message"] == "this needs a token with the write role"
        error_of(http.post("/v1/tables/events/rows", json={"k": "c"}), 401, "AuthenticationError")
        error_of(
            http.post("/v1/tables/nope/rows", json={"k": "d"}, headers=as_writer),
            404,
            "UnknownTableError",
        )
        error_of(
            http.post("/v1/tables/events/rows", content=b"k\nx", headers=as_writer),
            415,
            "UnsupportedMediaTypeError",
        )
        # each path's match is kept: its own table, whatever path came before
        again = http.post("/v1/tables/events/rows", json={"k": "e"}, headers=as_writer)
        assert again.json()["table"] == "events"
        error_of(
            http.post("/v1/tables/nope/rows", json={"k": "f"}, headers=as_writer),
            404,
            "UnknownTableError",
        )
        # not a hot method: the router, which no longer knows the path
        assert http.get("/v1/tables/events/rows", headers=as_writer).status_code == 404
        text = http.get("/metrics", headers={"Authorization": f"Bearer {reader}"}).text
    assert db.execute("SELECT list(k ORDER BY k) FROM events").fetchone() == (["a", "e"],)
    for status in ("200", "403", "404", "415"):
        assert (
            f'duckflock_http_requests_total{{method="POST",route="{rows_path}",status="{status}"}}'
            in text
        )


def test_a_query_reads_batches_of_the_size_its_column_types_give() -> None:
    """``batch_rows`` may be a function of the result's DuckDB type names (the Postgres
    port sizes DuckDB's batches so): it is asked once, before the first batch."""
    seen: list[list[str]] = []

    def rows(types: list[str]) -> int:
        seen.append(types)
        return 4096

    with duckflock.connect() as db:
        running = QueryGuard(db).open(
            "SELECT range::BIGINT AS i, 'x' AS s FROM range(10000)", batch_rows=rows
        )
        sizes = []
        try:
            while (batch := running.next_batch()) is not None:
                sizes.append(batch.num_rows)
        finally:
            running.close()
    assert seen == [["BIGINT", "VARCHAR"]]
    assert max(sizes) == 4096 and sum(sizes) == 10000


def test_served_queries_leave_the_catalogue_trusted(db: duckflock.Database) -> None:
    """The server's queries and catalog look-ups run on duckflock's own cursors, not on
    raw ones (``db.cursor()``): a served database keeps trusting its kept catalogue and
    settings (``CursorPool.raw_handed_out`` stays unset)."""
    db.execute('CREATE TABLE "a.b" (x INTEGER)')
    db.insert("a.b", {"x": 1}, idempotency_key="once")  # makes duckflock.batches
    with make_client(db) as http:
        for sql in ["SELECT count(*) FROM events", 'SELECT x FROM "a.b"']:
            assert http.post("/v1/query", json={"sql": sql}).status_code == 200
        error_of(
            http.post("/v1/query", json={"sql": "FROM duckflock.batches"}),
            403,
            "QueryRefusedError",
        )
    assert db._cursors.raw_handed_out is False
