"""Request bodies: read within a deadline that grows with the bytes received (a slow
body gives back the memory budget it holds), and bad values in them named precisely."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import select
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow as pa
import pytest
from starlette.requests import ClientDisconnect, Request
from starlette.testclient import TestClient

import duckflock
from conftest import ServerProcess
from duckflock.server import ServerSettings, create_app, formats
from duckflock.server.http.bodies import Bodies

JSON = {"Content-Type": "application/json"}


def _held(http: httpx.Client) -> float:
    """The weighted body bytes the server holds now (its /metrics gauge)."""
    found = re.search(r"^duckflock_body_bytes_held (\S+)$", http.get("/metrics").text, re.M)
    assert found is not None
    return float(found.group(1))


def _dribble(port: int, declared: int, answer: list[bytes], every: float = 0.05) -> None:
    """A client declaring a ``declared``-byte JSON body and sending a byte every
    ``every`` seconds until the server answers (for 30 s at most); the answer lands in
    ``answer``."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /v1/tables/events/rows HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n[" % declared
        )
        data = b""
        ends = time.monotonic() + 30
        while time.monotonic() < ends:
            readable, _, _ = select.select([sock], [], [], every)  # the pause between bytes
            if readable:
                chunk = sock.recv(65536)
                if not chunk:
                    break  # the server closed the connection after its answer
                data += chunk
                continue
            try:
                sock.sendall(b" ")
            except OSError:  # closed by the server: read what it said
                continue
        answer.append(data)


def test_a_slow_body_is_cut_at_its_deadline_and_frees_the_budget(tmp_path: Path) -> None:
    config = tmp_path / "duckflock.toml"
    config.write_text('[[tables]]\nsql = "CREATE TABLE events (p INTEGER)"\n')
    server = ServerProcess(
        tmp_path / "slow.duckdb",
        *("--config", str(config), "--queue-timeout", "8"),
        *("--body-timeout", "1.5", "--min-body-rate", "65536"),
    )
    answer: list[bytes] = []
    # 16 MB of JSON declared: weighted x40, it holds the whole 512 MiB body budget
    slow = threading.Thread(target=_dribble, args=(server.port, 16_000_000, answer))
    started = time.monotonic()
    slow.start()
    try:
        with server.http() as http:
            ends = time.monotonic() + 10
            while _held(http) == 0 and time.monotonic() < ends:  # until its budget is taken
                pass
            assert _held(http) >= 2**29, "the slow body did not take the budget"
            # a large body (weighted over the uncounted 4 MiB) waits for that budget: it
            # gets it once the slow one is cut, well within its 8 s queue timeout
            rows = [{"p": n} for n in range(20_000)]
            response = http.post("/v1/tables/events/rows", content=json.dumps(rows), headers=JSON)
            assert response.status_code == 200, response.text
            assert response.json() == {"table": "events", "rows": 20_000, "committed": True}
            slow.join(40)
            assert _held(http) == 0
        head, _, body = answer[0].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), answer
        assert b"connection: close" in head.lower()
        error = json.loads(body)["error"]
        assert error["type"] == "RequestTimeoutError"
        assert "--body-timeout" in error["message"] and "--min-body-rate" in error["message"]
        assert time.monotonic() - started < 8  # cut at 1.5 s (a loaded machine: more)
        with server.client() as client:
            assert client.query("SELECT count(*) AS n FROM events").to_pylist() == [{"n": 20_000}]
        # the client raises it again as its class
        assert isinstance(duckflock.errors.from_payload(error), duckflock.RequestTimeoutError)
    finally:
        slow.join(40)
        assert server.stop() == 0


BUDGET = ServerSettings().body_budget  # weighted bytes of bodies held at once
JSON_WEIGHT = ServerSettings().text_body_weight  # what a JSON ingest byte counts in it
FREE_BELOW = Bodies(ServerSettings()).budget.free_below  # held without being counted


def _rows(first: int, count: int, width: int = 1000) -> bytes:
    """``count`` JSON rows from ``first``, each with a ``width``-character string, as
    the inside of an array (``, ``-separated, no brackets)."""
    return ", ".join(f'{{"p": {n}, "s": "{"x" * width}"}}' for n in range(first, first + count))


def _until(ends: float, ready: Any) -> None:
    """Poll ``ready()`` (the server's own gauge) until true or ``ends``."""
    while not ready() and time.monotonic() < ends:
        pass


def test_a_chunked_body_holds_what_arrived_so_others_are_not_refused(tmp_path: Path) -> None:
    config = tmp_path / "duckflock.toml"
    config.write_text('[[tables]]\nsql = "CREATE TABLE events (p INTEGER, s VARCHAR)"\n')
    server = ServerProcess(
        tmp_path / "chunked.duckdb",
        *("--config", str(config), "--queue-timeout", "2", "--body-timeout", "120"),
        *("--max-body", str(14_000_000)),
    )
    first = b"[" + _rows(0, 200).encode()  # ~200 KB: ~8 MB weighted, counted
    more = b", " + _rows(200, 13_000).encode()  # ~13 MB more: the whole budget, weighted
    assert len(first) * JSON_WEIGHT > FREE_BELOW
    assert len(first + more) * JSON_WEIGHT > BUDGET
    sent_first, go_on, sent_more, finish = (threading.Event() for _ in range(4))
    answers: list[httpx.Response] = []

    def chunked() -> Iterator[bytes]:  # no Content-Length: httpx sends it chunked
        yield first
        sent_first.set()
        assert go_on.wait(60)
        yield more
        sent_more.set()
        assert finish.wait(60)
        yield b"]"

    def upload() -> None:
        with server.http() as http:
            answers.append(http.post("/v1/tables/events/rows", content=chunked(), headers=JSON))

    def other(http: httpx.Client) -> httpx.Response:
        # ~260 KB declared: ~10 MB weighted, over the uncounted 4 MiB: it needs room
        rows = [{"p": -n - 1, "s": "y" * 10} for n in range(10_000)]
        return http.post("/v1/tables/events/rows", content=json.dumps(rows), headers=JSON)

    uploader = threading.Thread(target=upload)
    uploader.start()
    try:
        with server.http() as http:
            assert sent_first.wait(60)
            ends = time.monotonic() + 30
            _until(ends, lambda: _held(http) == len(first) * JSON_WEIGHT)
            # what arrived, weighted: not the whole --max-body share (the whole budget)
            assert _held(http) == len(first) * JSON_WEIGHT
            response = other(http)  # another client's upload meanwhile: room for it
            assert response.status_code == 200, response.text
            assert response.json() == {"table": "events", "rows": 10_000, "committed": True}
            go_on.set()
            assert sent_more.wait(60)
            _until(ends, lambda: _held(http) == BUDGET)
            assert _held(http) == BUDGET  # 13 MB arrived: the budget bounds it still
            refused = other(http)  # no room now: the 503 of a full budget
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["type"] == "ServerBusyError"
            assert "busy parsing other large bodies" in refused.json()["error"]["message"]
            assert int(refused.headers["retry-after"]) >= 1
            finish.set()
            uploader.join(60)
            assert answers[0].status_code == 200, answers[0].text
            assert answers[0].json() == {"table": "events", "rows": 13_200, "committed": True}
            assert _held(http) == 0  # given back on success
            # a chunked body over its limit: the 413 it always got, and its share back
            too_big = b"[" + _rows(0, 14_000).encode() + b"]"
            response = http.post("/v1/tables/events/rows", content=iter([too_big]), headers=JSON)
            assert response.status_code == 413, response.text
            assert response.json()["error"] == {
                "type": "PayloadTooLargeError",
                "message": "the body is over the 14,000,000-byte limit",
            }
            _until(time.monotonic() + 30, lambda: _held(http) == 0)
            assert _held(http) == 0
            # a client leaving mid-body gives its share back too
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(
                    b"POST /v1/tables/events/rows HTTP/1.1\r\nHost: localhost\r\n"
                    b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"%x\r\n%s\r\n" % (len(first), first)
                )
                _until(time.monotonic() + 30, lambda: _held(http) == len(first) * JSON_WEIGHT)
                assert _held(http) == len(first) * JSON_WEIGHT
            _until(time.monotonic() + 30, lambda: _held(http) == 0)
            assert _held(http) == 0
        with server.client() as client:
            counted = client.query("SELECT count(*) AS n FROM events").to_pylist()
            assert counted == [{"n": 13_200 + 10_000}]
    finally:
        go_on.set()
        finish.set()
        uploader.join(60)
        assert server.stop() == 0


def test_the_body_budget_is_a_serve_flag(tmp_path: Path) -> None:
    """``--body-budget`` bounds what bodies hold: one alone holds all of it at most, and
    another finds no room (503 after ``--queue-timeout``)."""
    config = tmp_path / "duckflock.toml"
    config.write_text('[[tables]]\nsql = "CREATE TABLE events (p INTEGER, s VARCHAR)"\n')
    budget = 5_000_000
    server = ServerProcess(
        tmp_path / "budget.duckdb",
        *("--config", str(config), "--body-budget", str(budget)),
        *("--queue-timeout", "1", "--body-timeout", "120"),
    )
    first = b"[" + _rows(0, 200).encode()  # ~200 KB: ~8 MB weighted, past the budget
    assert FREE_BELOW < budget < len(first) * JSON_WEIGHT < BUDGET
    sent, finish = threading.Event(), threading.Event()
    answers: list[httpx.Response] = []

    def chunked() -> Iterator[bytes]:
        yield first
        sent.set()
        assert finish.wait(60)
        yield b"]"

    def upload() -> None:
        with server.http() as http:
            answers.append(http.post("/v1/tables/events/rows", content=chunked(), headers=JSON))

    uploader = threading.Thread(target=upload)
    uploader.start()
    try:
        with server.http() as http:
            assert sent.wait(60)
            _until(time.monotonic() + 30, lambda: _held(http) == budget)
            assert _held(http) == budget  # the flag's, not the default's 512 MiB
            rows = [{"p": -n - 1, "s": "y" * 10} for n in range(10_000)]  # ~10 MB weighted
            refused = http.post("/v1/tables/events/rows", content=json.dumps(rows), headers=JSON)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["type"] == "ServerBusyError"
            finish.set()
            uploader.join(60)
            assert answers[0].status_code == 200, answers[0].text
            assert _held(http) == 0
    finally:
        finish.set()
        uploader.join(60)
        assert server.stop() == 0


def test_a_query_body_holds_its_budget_until_it_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The weight of a JSON query body stands for what parsing it makes: it is held
    while ``formats.loads`` runs, and given back after."""
    settings = ServerSettings()
    bodies = Bodies(settings)
    body = json.dumps({"sql": "SELECT 1", "padding": "x" * 300_000}).encode()
    weighted = len(body) * settings.query_body_weight
    assert settings.body_free_below < weighted < settings.body_budget  # counted, whole
    held: list[int] = []
    loads = formats.loads

    def parsing(text: bytes, what: str, **options: Any) -> Any:
        held.append(bodies.used)
        return loads(text, what, **options)

    monkeypatch.setattr(formats, "loads", parsing)
    pieces = [body[:100_000], body[100_000:]]
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]

    async def receive() -> dict[str, Any]:
        piece = pieces.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(pieces)}

    request = Request({"type": "http", "method": "POST", "headers": headers}, receive)
    payload = asyncio.run(bodies.json_object(request))
    assert payload["sql"] == "SELECT 1"
    assert held == [weighted]
    assert bodies.used == 0


def test_a_budget_under_the_uncounted_size_still_bounds_large_bodies() -> None:
    """``--body-budget`` below ``body_free_below`` (4 MiB): a small body is still not
    counted, a large one holds the whole budget (before, the size was clamped to the
    budget first, came out under the free size, and no body was ever counted)."""
    settings = ServerSettings(body_budget=1_000_000, queue_timeout=0.05)
    budget = Bodies(settings).budget
    assert settings.body_budget < settings.body_free_below
    assert budget.counted(settings.body_free_below) == 0
    assert budget.counted(64 * 2**20) == settings.body_budget

    async def two() -> None:
        async with budget.hold(64 * 2**20):
            assert budget.used == settings.body_budget
            with pytest.raises(duckflock.ServerBusyError):  # no room for a second one
                async with budget.hold(64 * 2**20):
                    pass
        assert budget.used == 0

    asyncio.run(two())


def _request(pieces: list[bytes], every: float) -> Request:
    """A request whose body arrives in ``pieces``, one every ``every`` seconds."""
    queue = list(pieces)

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(every)  # the sender's pace
        piece = queue.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(queue)}

    return Request({"type": "http", "method": "POST", "headers": []}, receive)


@pytest.mark.parametrize(
    ("pieces", "every", "cut"),
    [
        ([b"x" * 100] * 40, 0.02, False),  # 5,000 B/s for 0.8 s: past 0.2 s, above the rate
        ([b"x"] * 40, 0.02, True),  # 50 B/s: cut near 0.2 s
        ([b"x" * 100, b"x"], 0.5, True),  # one piece then silence: cut
    ],
)
def test_the_body_deadline_grows_with_the_bytes_received(
    pieces: list[bytes], every: float, cut: bool
) -> None:
    bodies = Bodies(ServerSettings(body_timeout=0.2, min_body_rate=1000))

    async def read() -> bytes:
        return await bodies.read(_request(pieces, every), 10**6)

    if cut:
        with pytest.raises(duckflock.RequestTimeoutError, match="came too slowly"):
            asyncio.run(read())
    else:
        assert asyncio.run(read()) == b"".join(pieces)


@pytest.mark.parametrize(
    "ending", ["complete", "too large", "client left", "too slow", "no room", "cancelled"]
)
def test_a_chunked_share_grows_with_the_body_and_is_given_back_however_it_ends(
    ending: str,
) -> None:
    bodies = Bodies(ServerSettings(body_timeout=0.3, min_body_rate=10**9, queue_timeout=1.0))
    budget = bodies.budget
    piece = b"x" * 200_000  # weighted x40: 8 MB, over the uncounted 4 MiB
    request = Request({"type": "http", "method": "POST", "headers": []})  # no length
    assert Bodies.size(request, 10**9) is None  # chunked: nothing declared

    async def run() -> None:
        sent = 0
        held: list[int] = []  # what the budget held each time the reader came back
        never = asyncio.get_running_loop().create_future()

        async def receive() -> dict[str, Any]:
            nonlocal sent
            held.append(budget.used)
            if sent == 3:
                if ending in ("too slow", "cancelled"):
                    await never  # the client (or the server's shutdown) decides
                if ending == "client left":
                    return {"type": "http.disconnect"}
            sent += 1
            return {"type": "http.request", "body": piece, "more_body": sent < 4}

        request._receive = receive
        limit = len(piece) * (3 if ending == "too large" else 4)
        async with contextlib.AsyncExitStack() as stack:
            if ending == "no room":  # another body holds the whole budget meanwhile
                await stack.enter_async_context(budget.hold(budget.total))
            async with bodies.hold(request, limit, 40) as share:
                assert share is not None and share.held == 0
                reader = asyncio.ensure_future(bodies.read(request, limit, share))
                if ending == "cancelled":
                    while sent < 3:
                        await asyncio.sleep(0)
                    reader.cancel()
                body = await reader
                assert body == piece * 4
                assert budget.used == share.held == len(body) * 40
        assert held == [0, *(n * len(piece) * 40 for n in range(1, 4))]

    expected = {
        "complete": None,
        "too large": duckflock.PayloadTooLargeError,
        "client left": ClientDisconnect,
        "too slow": duckflock.RequestTimeoutError,
        # waiting for room stops the clock: the body is not cut as too slow
        "no room": duckflock.ServerBusyError,
        "cancelled": asyncio.CancelledError,
    }[ending]
    if expected is None:
        asyncio.run(run())
    else:
        with pytest.raises(expected):
            asyncio.run(run())
    assert budget.used == 0
    assert not bodies.clock._reading


@pytest.fixture
def local() -> Iterator[TestClient]:
    db = duckflock.connect(":memory:")
    db.execute("CREATE TABLE t (a BIGINT, h FLOAT, s VARCHAR)")
    with TestClient(create_app(db), base_url="http://localhost") as http:
        yield http
    db.close()


def _refused(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "RequestError"
    return str(error["message"])


LONG = "9" * 5_000  # past Python's 4,300-digit limit for int(str)


FILLER = '{"s": "' + "x" * 100 + '"},'  # 11,000 of these: over 1 MiB, parsed row by row


@pytest.mark.parametrize(
    ("route", "body", "kind", "where"),
    [
        ("rows", '[{"a": 1}, {"s": "x", "a": -LONG}]', "json", "JSON: row 1, column 'a'"),
        ("rows", '{"a": LONG}', "json", "JSON: column 'a'"),
        ("rows", "[[1, 2.5, LONG]]", "json", "JSON: row 0, value 2"),
        ("rows", '{"a": 1}\n\n{"a": LONG}\n', "x-ndjson", "NDJSON on line 3: column 'a'"),
        (
            "rows",
            '[FILLER{"a": {"b": [LONG]}}]',
            "json",
            "JSON: row 11000, column 'a', at ['b'][0]",
        ),
        ("query", '{"sql": "SELECT ?", "params": [LONG]}', "json", "JSON: at ['params'][0]"),
    ],
)
def test_an_integer_of_too_many_digits_is_named_by_row_and_column(
    local: TestClient, route: str, body: str, kind: str, where: str
) -> None:
    path = "/v1/tables/t/rows" if route == "rows" else "/v1/query"
    headers = {"Content-Type": f"application/{kind}"}
    body = body.replace("FILLER", FILLER * 11_000).replace("LONG", LONG)
    message = _refused(local.post(path, content=body.encode(), headers=headers))
    assert message == (
        f"malformed {where}: an integer of 5,000 digits; JSON integers may have at most "
        f"{sys.get_int_max_str_digits():,}"
    )
    assert local.post("/v1/tables/t/rows", json=[{"a": 1}]).status_code == 200


def test_an_arrow_column_duckdb_cannot_read_is_named(local: TestClient) -> None:
    half = pa.array([1.5, 2.5]).cast(pa.float16())
    table = pa.table({"a": pa.array([1, 2], pa.int64()), "h": half})
    with pytest.raises(duckdb.NotImplementedException) as refused:  # DuckDB's own verdict
        duckdb.connect().from_arrow(table).fetchall()
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    arrow = {"Content-Type": "application/vnd.apache.arrow.stream"}
    for _ in range(2):  # the second time from the cache
        message = _refused(local.post("/v1/tables/t/rows", content=sink.getvalue(), headers=arrow))
        assert message == (f"column 'h': DuckDB cannot read Arrow type halffloat ({refused.value})")
    sink = io.BytesIO()
    readable = table.set_column(1, "h", half.cast(pa.float32()))
    with pa.ipc.new_stream(sink, readable.schema) as writer:
        writer.write_table(readable)
    response = local.post("/v1/tables/t/rows", content=sink.getvalue(), headers=arrow)
    assert response.json() == {"table": "t", "rows": 2, "committed": True}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/tables/t/rows?wait=false&wait=true"),
        ("POST", "/v1/tables/t/rows?wait=true&wait=true"),
        ("GET", "/v1/analyses/n/result?timeout=1&timeout=2"),
        ("GET", "/v1/analyses/n/history?last=1&last=1"),
        ("GET", "/v1/analyses/n/events?changes=true&changes=false"),
    ],
)
def test_a_query_parameter_given_twice_is_refused(
    local: TestClient, method: str, path: str
) -> None:
    local.put("/v1/analyses/n", json={"sql": "SELECT count(*) AS n FROM t"})
    name = path.split("?")[1].split("=")[0]
    message = _refused(local.request(method, path, json=[{"a": 1}] if method == "POST" else None))
    assert message == f"query parameter {name} is given 2 times; give it once"
    counted = local.post("/v1/query", json={"sql": "SELECT count(*) AS n FROM t"}).json()
    assert counted["rows"] == [[0]]  # the refused ingest wrote nothing


ADMIN_TOKEN = "admin-token-0123456789"


@pytest.mark.parametrize(
    "query",
    [
        f"access_token={ADMIN_TOKEN}&access_token=another-token-0123456789",
        f"access_token={ADMIN_TOKEN}&access_token={ADMIN_TOKEN}",
        "access_token=&access_token=",
    ],
)
@pytest.mark.parametrize("bearer", [False, True])
def test_an_access_token_given_twice_is_refused_like_any_repeated_parameter(
    query: str, bearer: bool
) -> None:
    db = duckflock.connect(":memory:")
    db.execute("CREATE TABLE t (a BIGINT)")
    app = create_app(db, ServerSettings(token=ADMIN_TOKEN))
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if bearer else {}
    with TestClient(app, base_url="http://localhost") as http:
        for method, path in [("GET", "/v1/tables"), ("POST", "/v1/tables/t/rows")]:
            body = [{"a": 1}] if method == "POST" else None
            response = http.request(method, f"{path}?{query}", json=body, headers=headers)
            message = _refused(response)
            assert message == "query parameter access_token is given 2 times; give it once"
            assert ADMIN_TOKEN not in response.text
        once = http.get(f"/v1/tables?access_token={ADMIN_TOKEN}")  # given once: let in
        assert once.status_code == 200, once.text
        counted = http.post("/v1/query", json={"sql": "SELECT count(*) FROM t"}, headers=headers)
        assert counted.status_code == (200 if bearer else 401)  # the refused ingest wrote nothing
        if bearer:
            assert counted.json()["rows"] == [[0]]
    db.close()


def test_a_read_cancelled_from_above_stays_cancelled_and_the_clock_stops() -> None:
    bodies = Bodies(ServerSettings(body_timeout=0.2, min_body_rate=1000))

    async def run() -> None:
        async def receive() -> dict[str, Any]:
            await asyncio.get_running_loop().create_future()  # a body that never comes
            raise AssertionError("unreachable")

        request = Request({"type": "http", "method": "POST", "headers": []}, receive)
        reader = asyncio.ensure_future(bodies.read(request, 10**6))
        await asyncio.sleep(0)  # the read has begun: its clock ticks
        assert len(bodies.clock._reading) == 1 and bodies.clock._ticking
        reader.cancel()  # a shutdown, say: not the clock's doing
        with pytest.raises(asyncio.CancelledError):
            await reader
        assert not bodies.clock._reading
        late = asyncio.ensure_future(bodies.read(request, 10**6))
        with pytest.raises(duckflock.RequestTimeoutError):  # the clock's own cut
            await late
        assert not late.cancelled()

    asyncio.run(run())
    assert not bodies.clock._reading


@pytest.mark.parametrize(
    "body",
    [
        b'\xef\xbb\xbf{"sql": "SELECT 1", "x": LONG}',  # a UTF-8 byte order mark
        '{"sql": "SELECT 1", "x": LONG}'.encode("utf-16-le"),  # json.loads detects it
        b'{"sql": "SELECT 1", "y": "\xed\xa0\x80", "x": LONG}',  # an encoded surrogate
    ],
)
def test_a_long_integer_in_a_body_json_decodes_its_own_way_is_a_400(
    local: TestClient, body: bytes
) -> None:
    # json.loads reads these bytes; naming the integer read them as UTF-8 again (500)
    digits = LONG.encode("utf-16-le") if body[1:2] == b"\x00" else LONG.encode()
    marker = "LONG".encode("utf-16-le") if body[1:2] == b"\x00" else b"LONG"
    message = _refused(local.post("/v1/query", content=body.replace(marker, digits), headers=JSON))
    assert message == (
        "malformed JSON: at ['x']: an integer of 5,000 digits; JSON integers may have at "
        f"most {sys.get_int_max_str_digits():,}"
    )


def test_two_chunked_bodies_waiting_for_each_others_room_do_not_both_fail() -> None:
    """Two chunked bodies, each alone within the budget, that together pass it: each
    holds what arrived and waits for the other's room, which only comes back when the
    other ends. Both waited out the queue timeout and both got 503 (before chunked
    bodies grew their share, the first took the whole budget and went through): the one
    that finds every other holder waiting too is refused at once, so the other goes on."""
    bodies = Bodies(ServerSettings(body_timeout=60, min_body_rate=1, queue_timeout=30.0))
    budget = bodies.budget
    piece = b"x" * (budget.total // 40 // 3 + 1)  # weighted x40: over a third of the budget

    def request(pieces: int, arrived: asyncio.Event, go: asyncio.Event) -> Request:
        sent = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent == 1:
                arrived.set()
                await go.wait()
            sent += 1
            return {"type": "http.request", "body": piece, "more_body": sent < pieces}

        made = Request({"type": "http", "method": "POST", "headers": []})  # chunked
        made._receive = receive
        return made

    async def upload(made: Request) -> bytes:
        async with bodies.hold(made, 10**9, 40) as share:
            return await bodies.read(made, 10**9, share)

    async def run() -> list[Any]:
        go = asyncio.Event()
        arrived = [asyncio.Event(), asyncio.Event()]
        uploads = [asyncio.ensure_future(upload(request(2, a, go))) for a in arrived]
        for event in arrived:
            await event.wait()  # each holds a third and more: the two can't both grow
        go.set()
        async with asyncio.timeout(10):  # well within the 30 s queue timeout
            return await asyncio.gather(*uploads, return_exceptions=True)

    started = time.monotonic()
    outcomes = asyncio.run(run())
    assert time.monotonic() - started < 10
    assert sorted(type(o).__name__ for o in outcomes) == ["ServerBusyError", "bytes"]
    assert [o for o in outcomes if isinstance(o, bytes)] == [piece * 2]
    assert budget.used == 0


def test_two_chunked_uploads_over_a_third_of_the_budget_each_one_goes_through(
    tmp_path: Path,
) -> None:
    """The same over a real uvicorn: two chunked JSON uploads whose first halves hold
    over a third of the budget each; their second halves arrive together. One is
    committed, the other refused with 503 well before the queue timeout, and the budget
    is all given back (both were refused after the 20 s timeout)."""
    config = tmp_path / "duckflock.toml"
    config.write_text('[[tables]]\nsql = "CREATE TABLE events (p INTEGER, s VARCHAR)"\n')
    server = ServerProcess(
        tmp_path / "two.duckdb",
        *("--config", str(config), "--queue-timeout", "20", "--body-timeout", "120"),
        *("--max-body", str(14_000_000)),
    )
    count = BUDGET // JSON_WEIGHT // 3 // 1010 + 1  # rows of ~1010 bytes: over a third
    halves = [
        (
            b"[" + _rows(n * 2 * count, count).encode(),
            b", " + _rows((n * 2 + 1) * count, count).encode() + b"]",
        )
        for n in range(2)
    ]
    assert all(len(first) * JSON_WEIGHT > BUDGET // 3 for first, _ in halves)
    socks: list[socket.socket] = []
    try:
        with server.http() as http:
            held = 0
            for first, _ in halves:
                sock = socket.create_connection(("127.0.0.1", server.port))
                socks.append(sock)
                sock.sendall(
                    b"POST /v1/tables/events/rows HTTP/1.1\r\nHost: localhost\r\n"
                    b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"%x\r\n%s\r\n" % (len(first), first)
                )
                held += len(first) * JSON_WEIGHT
                _until(time.monotonic() + 30, lambda held=held: _held(http) == held)
                assert _held(http) == held
            started = time.monotonic()
            for sock, (_, second) in zip(socks, halves, strict=True):
                with contextlib.suppress(OSError):  # the refused one may be closed
                    sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(second), second))
            statuses = []
            for sock in socks:
                sock.settimeout(30)
                head = sock.recv(65536).split(b"\r\n", 1)[0]
                statuses.append(int(head.split()[1]))
            assert time.monotonic() - started < 15
            assert sorted(statuses) == [200, 503], statuses
            _until(time.monotonic() + 30, lambda: _held(http) == 0)
            assert _held(http) == 0
        with server.client() as client:
            counted = client.query("SELECT count(*) AS n FROM events").to_pylist()
            assert counted == [{"n": 2 * count}]
    finally:
        for sock in socks:
            sock.close()
        assert server.stop() == 0
