"""The client's retries (client/retries.py) and the Idempotency-Key header, against a
real uvicorn on 127.0.0.1 (and a mock transport for the 503 answers' arithmetic)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pyarrow as pa
import pytest
import uvicorn

import duckflock
from conftest import free_port
from duckflock.server.http.app import create_app
from duckflock.server.http.openapi import document
from duckflock.server.service import Service
from duckflock.server.settings import ServerSettings


class Uvicorn:
    """``create_app(db)`` served by uvicorn in a thread, on 127.0.0.1."""

    def __init__(self, db: duckflock.Database, port: int, app: Any = None) -> None:
        app = app if app is not None else create_app(db)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:  # uvicorn's own flag: bound and serving
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            threading.Event().wait(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def keyed_db() -> Iterator[duckflock.Database]:
    with duckflock.connect() as db:
        db.execute("CREATE TABLE t (a INTEGER, b VARCHAR)")
        yield db


@pytest.fixture
def served(keyed_db: duckflock.Database) -> Iterator[tuple[duckflock.Database, str]]:
    port = free_port()
    running = Uvicorn(keyed_db, port)
    yield keyed_db, f"http://127.0.0.1:{port}"
    running.stop()


def _count(db: duckflock.Database) -> int:
    row = db.sql("SELECT count(*) FROM t").fetchone()
    assert row is not None
    return int(row[0])


def test_an_insert_waits_out_a_server_that_is_not_up_yet(keyed_db: duckflock.Database) -> None:
    port = free_port()
    started: list[Uvicorn] = []
    pauses: list[float] = []

    def sleep(pause: float) -> None:  # the first try was refused: now the server comes up
        pauses.append(pause)
        if not started:
            started.append(Uvicorn(keyed_db, port))

    client = duckflock.Client(f"http://127.0.0.1:{port}", retries=3)
    client.retries.sleep = sleep
    try:
        assert client.insert("t", [{"a": 1, "b": "x"}]) == 1
        assert client.execute("SELECT count(*) FROM t").fetchall() == [(1,)]
    finally:
        client.close()
        for server in started:
            server.stop()
    assert len(pauses) == 1 and 0 <= pauses[0] <= 0.1  # full jitter under the first ceiling
    assert _count(keyed_db) == 1


def test_without_retries_a_refused_connection_is_a_transport_error() -> None:
    client = duckflock.Client(f"http://127.0.0.1:{free_port()}", retries=0)
    with client, pytest.raises(duckflock.TransportError):
        client.insert("t", [{"a": 1}])


def test_a_timeout_after_the_commit_is_retried_with_the_same_key_and_not_stored_twice(
    served: tuple[duckflock.Database, str],
) -> None:
    db, url = served
    writer = db.writer()
    arrived = threading.Event()
    held: list[str] = []

    def hold(point: str) -> None:
        # the first batch is durable; its reply is held until the client, having timed
        # out, sent the request again and the repeat is queued behind it
        if point == "committed" and not held:
            held.append(point)
            deadline = time.monotonic() + 30
            while writer.stats().rows_queued <= 2 and time.monotonic() < deadline:
                threading.Event().wait(0.01)  # polling the writer's inbox
            if writer.stats().rows_queued > 2:
                arrived.set()  # the repeat is queued: let the first reply go (too late)

    writer.fault_hook = hold
    with duckflock.Client(url, timeout=0.5, retries=5) as client:
        assert client.insert("t", [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]) == 2
    assert arrived.is_set()
    assert _count(db) == 2
    assert db.sql("SELECT count(*), sum(rows) FROM duckflock.batches").fetchone() == (1, 2)


def test_a_busy_servers_503_is_retried_after_its_retry_after(
    keyed_db: duckflock.Database,
) -> None:
    settings = ServerSettings(concurrency=1, per_client=1, queue_timeout=0.1)
    service = Service(keyed_db, settings)
    port = free_port()
    running = Uvicorn(keyed_db, port, create_app(keyed_db, settings, service=service))
    release = service.take_slot("someone else")  # the one query slot: taken
    pauses: list[float] = []

    def sleep(pause: float) -> None:  # the 503 came: the slot frees up meanwhile
        pauses.append(pause)
        release()

    client = duckflock.Client(f"http://127.0.0.1:{port}", retries=3)
    client.retries.sleep = sleep
    try:
        assert client.execute("SELECT 42").fetchone() == (42,)
    finally:
        client.close()
        running.stop()
    assert len(pauses) == 1 and pauses[0] >= 1.0  # the server's Retry-After: 1


def test_the_header_replays_the_first_reply(served: tuple[duckflock.Database, str]) -> None:
    db, url = served
    with httpx.Client(base_url=url, timeout=30) as http:
        body = [{"a": 1, "b": "x"}]
        first = http.post("/v1/tables/t/rows", json=body, headers={"Idempotency-Key": "k1"})
        again = http.post("/v1/tables/t/rows", json=body, headers={"Idempotency-Key": "k1"})
        assert first.status_code == again.status_code == 200
        assert again.json() == first.json() == {"table": "t", "rows": 1, "committed": True}
        assert "idempotent-replayed" not in first.headers
        assert again.headers["idempotent-replayed"] == "true"
        other = http.post(
            "/v1/tables/t/rows", json=[{"a": 9, "b": "z"}], headers={"Idempotency-Key": "k1"}
        )
        assert other.status_code == 422
        assert other.json()["error"]["type"] == "KeyReusedError"
        assert other.json()["error"]["key"] == "k1"
        sql = http.post("/v1/sql", json={"sql": "DELETE FROM t"}, headers={"Idempotency-Key": "k9"})
        assert sql.status_code == 400 and "takes no Idempotency-Key" in sql.text
        long = http.post("/v1/tables/t/rows", json=body, headers={"Idempotency-Key": "k" * 201})
        assert long.status_code == 400 and "1 to 200" in long.json()["error"]["message"]
        # a header is read as Latin-1: UTF-8 'clé' would be another key ('clÃ©'), so refused
        latin = http.post(
            "/v1/tables/t/rows", json=body, headers={"Idempotency-Key": "clé".encode()}
        )
        assert latin.status_code == 400 and "printable ASCII" in latin.text
        # Arrow bodies go through the worker-thread path: keyed the same
        table = pa.table({"a": pa.array([5], pa.int32()), "b": ["q"]})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as out:
            out.write_table(table)
        arrow = {"Content-Type": "application/vnd.apache.arrow.stream", "Idempotency-Key": "k2"}
        for _ in range(2):
            reply = http.post(
                "/v1/tables/t/rows", content=sink.getvalue().to_pybytes(), headers=arrow
            )
            assert reply.status_code == 200
        assert reply.headers["idempotent-replayed"] == "true"
    assert _count(db) == 2


def test_the_openapi_document_shows_the_header_on_the_write_route() -> None:
    spec = document()
    op = spec["paths"]["/v1/tables/{table}/rows"]["post"]
    header = next(p for p in op["parameters"] if p["name"] == "Idempotency-Key")
    assert header["in"] == "header" and header["schema"]["maxLength"] == 200
    assert "Idempotent-Replayed" in op["responses"]["200"]["headers"]


def _busy(retry_after: str) -> httpx.Response:
    error = {"error": {"type": "ServerBusyError", "message": "busy", "retry_after": 1}}
    return httpx.Response(503, json=error, headers={"Retry-After": retry_after})


def _client(answers: list[Any], **options: Any) -> tuple[duckflock.Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = duckflock.Client("http://test", transport=httpx.MockTransport(handle), **options)
    return client, seen


def test_a_503_is_retried_after_its_retry_after_with_the_same_key() -> None:
    ok = httpx.Response(200, json={"table": "t", "rows": 1, "committed": True})
    client, seen = _client([_busy("2"), _busy("0"), ok])
    pauses: list[float] = []
    client.retries.sleep = pauses.append
    assert client.insert("t", [{"a": 1}]) == 1
    assert pauses[0] >= 2.0 and len(pauses) == 2
    keys = {request.headers["idempotency-key"] for request in seen}
    assert len(seen) == 3 and len(keys) == 1  # one key, sent three times


def test_retries_stop_at_the_total_time_and_the_count() -> None:
    client, seen = _client([_busy("120"), _busy("0")], retry_seconds=10)
    client.retries.sleep = lambda pause: None
    with pytest.raises(duckflock.ServerBusyError):  # Retry-After past the total: no wait
        client.tables()
    assert len(seen) == 1
    answers: list[Any] = [httpx.ConnectError("refused") for _ in range(4)]
    client, seen = _client(answers, retries=2)
    client.retries.sleep = lambda pause: None
    with pytest.raises(duckflock.TransportError):
        client.tables()
    assert len(seen) == 3  # the first try and two more


def test_a_write_that_may_have_run_is_retried_only_when_harmless() -> None:
    # POST /v1/sql (a statement) that timed out may have run: not sent again
    client, seen = _client([httpx.ReadTimeout("slow"), httpx.Response(200)])
    client.retries.sleep = lambda pause: None
    with pytest.raises(duckflock.TransportError):
        client.run("DELETE FROM t")
    assert len(seen) == 1
    # ...but one that never reached the server is
    table = pa.table({"x": [1]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as out:
        out.write_table(table)
    reply = httpx.Response(200, content=sink.getvalue().to_pybytes())
    client, seen = _client([httpx.ConnectError("refused"), reply])
    client.retries.sleep = lambda pause: None
    client.run("DELETE FROM t")
    assert len(seen) == 2
    # a keyed insert that timed out is sent again, with its key
    ok = httpx.Response(200, json={"table": "t", "rows": 1, "committed": True})
    client, seen = _client([httpx.ReadTimeout("slow"), ok])
    client.retries.sleep = lambda pause: None
    client.insert("t", [{"a": 1}], idempotency_key="mine")
    assert [r.headers["idempotency-key"] for r in seen] == ["mine", "mine"]


def test_chunks_carry_keys_of_their_own() -> None:
    answers = [httpx.Response(200, json={"rows": 1}) for _ in range(3)]
    client, seen = _client(answers)
    client.insert("t", [{"a": i} for i in range(3)], chunk_rows=1, idempotency_key="load")
    assert [r.headers["idempotency-key"] for r in seen] == ["load#0", "load#1", "load#2"]
    assert [json.loads(r.content) for r in seen] == [[{"a": 0}], [{"a": 1}], [{"a": 2}]]
    with pytest.raises(ValueError, match="chunk number"):
        client.insert("t", [{"a": 1}, {"a": 2}], chunk_rows=1, idempotency_key="k" * 199)
    with pytest.raises(ValueError, match="NUL"):
        client.insert("t", [{"a": 1}], idempotency_key="a\x00")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"retries": -1}, ValueError),
        ({"retries": 1.5}, TypeError),
        ({"retry_seconds": float("inf")}, ValueError),
    ],
)
def test_the_retry_options_are_checked(options: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        duckflock.Client("http://127.0.0.1:1", **options)


@pytest.mark.parametrize(("key", "shown"), [("clé", "'é'"), ("日本", "'日'"), ("a\nb", "'\\n'")])
def test_keys_a_header_cannot_carry_are_refused_before_sending(key: str, shown: str) -> None:
    """Not "a lone surrogate" (a UnicodeEncodeError of httpx's, misread) nor a transport
    error ("Illegal header value"): the key's own fault, named, and nothing sent."""
    client, sent = _client([])
    with client, pytest.raises(ValueError, match="printable ASCII") as raised:
        client.insert("t", [{"a": 1}], idempotency_key=key)
    assert shown in str(raised.value)
    assert sent == []
