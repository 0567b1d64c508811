"""The serving service: one policy under both protocols, one route table, one settings table.

A real ``duckflock serve`` (uvicorn, 127.0.0.1) with its Postgres port, driven by real
httpx and psycopg clients at once: ``--concurrency`` and ``--per-client`` count queries
of both protocols together, as the server's own metrics show. Then the route table is
checked to be the only place a route is named, and the settings table the only place a
``serve`` default is written.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

import duckflock
from conftest import ServerProcess, free_port
from duckflock.server import ServerSettings
from duckflock.server.routes import ROUTES
from pgclients import dsn, sqlstate

SLOW = "SELECT count(*) FROM range(1000000000000) a"  # runs until its time limit stops it
ADMIN = "admin-token-0123456789abcdef"
READ = "read-token-0123456789abcdefgh"


def _metrics(server: ServerProcess, token: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{server.url}/metrics", headers=headers, timeout=10).text


def _gauge(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, f"{name} is not in /metrics"
    return float(found.group(1))


def _until(server: ServerProcess, wanted: dict[str, float], token: str | None = None) -> str:
    """/metrics once every gauge of ``wanted`` reads its value (within 15 s)."""
    deadline = time.monotonic() + 15
    while True:
        text = _metrics(server, token)
        if all(_gauge(text, name) == value for name, value in wanted.items()):
            return text
        assert time.monotonic() < deadline, {n: _gauge(text, n) for n in wanted}
        threading.Event().wait(0.05)  # polling the server's own figures, not a sync


def _over_http(server: ServerProcess, token: str | None, out: list[str]) -> Callable[[], None]:
    def run() -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answer = httpx.post(
            f"{server.url}/v1/query", json={"sql": SLOW}, headers=headers, timeout=60
        )
        out.append({504: "ran", 503: "refused"}.get(answer.status_code, answer.text))

    return run


def _over_postgres(port: int, token: str, out: list[str]) -> Callable[[], None]:
    def run() -> None:
        with psycopg.connect(dsn(port, token), autocommit=True) as conn:
            try:
                conn.execute(SLOW).fetchall()
                out.append("finished")
            except psycopg.Error as exc:
                code = sqlstate(exc)
                out.append({"57014": "ran", "53300": "refused"}.get(code or "", repr(exc)))

    return run


@pytest.fixture
def two_slots(tmp_path: Path) -> Iterator[tuple[ServerProcess, int]]:
    pg_port = free_port()
    server = ServerProcess(
        tmp_path / "two.duckdb",
        *("--concurrency", "2", "--query-timeout", "12", "--queue-timeout", "1"),
        *("--pg-port", str(pg_port)),
    )
    yield server, pg_port
    assert server.stop() == 0, server.output()


def test_concurrency_counts_http_and_postgres_queries_together(
    two_slots: tuple[ServerProcess, int],
) -> None:
    """Two slow queries over HTTP and two over the Postgres port, at once, with
    ``--concurrency 2``: two run, two wait and are refused (503 / 53300) — never four."""
    server, pg_port = two_slots
    outcomes: list[str] = []
    calls = [
        _over_http(server, None, outcomes),
        _over_http(server, None, outcomes),
        _over_postgres(pg_port, "", outcomes),
        _over_postgres(pg_port, "", outcomes),
    ]
    threads = [threading.Thread(target=call) for call in calls]
    for thread in threads:
        thread.start()
    # every query has arrived: two hold the server's slots, two wait for one
    _until(server, {"duckflock_query_slots_busy": 2, "duckflock_query_slots_waiting": 2})
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes) == ["ran", "ran", "refused", "refused"], outcomes
    text = _metrics(server)
    assert _gauge(text, "duckflock_query_slots_peak") == 2  # never more at once
    assert _gauge(text, "duckflock_query_slots_busy") == 0


def test_one_clients_share_counts_both_protocols(tmp_path: Path) -> None:
    """``--per-client 2``: one token's slow query over HTTP and one over Postgres fill its
    share; its next query waits and is refused, while another token's query from the same
    address runs at once (the total, 4, has room)."""
    pg_port = free_port()
    server = ServerProcess(
        tmp_path / "share.duckdb",
        *("--concurrency", "4", "--per-client", "2", "--query-timeout", "10"),
        *("--queue-timeout", "1", "--pg-port", str(pg_port)),
        token=ADMIN,
        env={"DUCKFLOCK_READ_TOKEN": READ},
    )
    try:
        held: list[str] = []
        threads = [
            threading.Thread(target=_over_http(server, READ, held)),
            threading.Thread(target=_over_postgres(pg_port, READ, held)),
        ]
        for thread in threads:
            thread.start()
        _until(server, {"duckflock_query_slots_busy": 2}, ADMIN)
        bearer = {"Authorization": f"Bearer {READ}"}
        third = httpx.post(
            f"{server.url}/v1/query", json={"sql": "SELECT 1"}, headers=bearer, timeout=30
        )
        assert third.status_code == 503, third.text
        assert "2 per client" in third.json()["error"]["message"]
        with psycopg.connect(dsn(pg_port, READ), autocommit=True) as conn:
            with pytest.raises(psycopg.Error) as refused:
                conn.execute("SELECT 1")
            assert sqlstate(refused.value) == "53300"
        # another token is another client: its share is untouched
        with psycopg.connect(dsn(pg_port, ADMIN), autocommit=True) as conn:
            assert conn.execute("SELECT 2").fetchone() == (2,)
        with duckflock.Client(server.url, token=ADMIN) as client:
            assert client.execute("SELECT 3").fetchone() == (3,)
        for thread in threads:
            thread.join(60)
        assert held == ["ran", "ran"], held
        assert _gauge(_metrics(server, ADMIN), "duckflock_query_slots_peak") == 3
    finally:
        assert server.stop() == 0, server.output()


# -- the route table ------------------------------------------------------------------------


def test_the_route_table_makes_the_router_the_role_checks_and_the_openapi_paths() -> None:
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from duckflock.server import create_app
    from duckflock.server.auth import ROLES, Role
    from duckflock.server.http.openapi import document

    table = {(r.method, r.path) for r in ROUTES}
    assert len(table) == len(ROUTES)  # no route twice
    tokens = {f"{role}-token-0123456789abcdef": role for role in ROLES}
    with duckflock.connect() as db:
        app = create_app(db, ServerSettings(tokens=tokens))
        routed = {
            (method, route.path)
            for route in app.routes
            if isinstance(route, Route)
            for method in route.methods or ()
            if method != "HEAD"
        }
        assert routed == table
        spec = document()
        documented = {
            (method.upper(), path): op.get("x-duckflock-role")
            for path, ops in spec["paths"].items()
            for method, op in ops.items()
        }
        assert documented == {
            (r.method, r.path): r.role and str(r.role) for r in ROUTES if r.documented
        }
        # the role checks: each route refuses the role below its own, and takes its own
        with TestClient(app, base_url="http://localhost") as http:
            for route in ROUTES:
                path = route.path.format(table="events", name="nothing_here")
                if route.role is None:
                    assert http.request(route.method, path).status_code not in (401, 403)
                    continue
                assert http.request(route.method, path).status_code == 401
                if route.role != Role.READ:
                    below = ROLES[ROLES.index(route.role) - 1]
                    answer = http.request(
                        route.method,
                        path,
                        headers={"Authorization": f"Bearer {below}-token-0123456789abcdef"},
                    )
                    assert answer.status_code == 403, (route, answer.text)
                own = {"Authorization": f"Bearer {route.role}-token-0123456789abcdef"}
                if route.path.endswith("/events"):
                    continue  # an event stream never ends; its 404 for a missing name:
                assert http.request(route.method, path, headers=own).status_code != 403


def test_no_module_of_the_server_names_a_route_but_the_table() -> None:
    server = Path(duckflock.__file__).parent / "server"
    paths = {r.path for r in ROUTES} - {"/"}
    for module in server.rglob("*.py"):
        if module.name == "routes.py":
            continue
        text = module.read_text()
        named = [p for p in paths if f'"{p}"' in text or f"'{p}'" in text]
        assert not named, f"{module.relative_to(server)} names {named}: use the route table"


# -- one back-off after failed authentication ------------------------------------------------


def test_one_back_off_counts_wrong_tokens_of_both_protocols_in_the_services_metrics() -> None:
    """The HTTP app and the Postgres port consult the service's back-off (not one each):
    a wrong bearer token and a wrong password land in the same counts and /metrics."""
    from starlette.testclient import TestClient

    from duckflock.server import create_app
    from duckflock.server.backoff import Door
    from duckflock.server.pgwire import PgServer
    from duckflock.server.service import Service
    from duckflock.server.settings import PgSettings

    wrong = "wrong-token-0123456789abcdef"
    db = duckflock.connect(":memory:")
    try:
        service = Service(db, ServerSettings(tokens={READ: "read"}))
        client = TestClient(create_app(db, service=service))
        pg = PgServer(db, None, PgSettings(port=0), service=service).start()
        try:
            refused = client.get("/metrics", headers={"Authorization": f"Bearer {wrong}"})
            assert refused.status_code == 401
            with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
                psycopg.connect(dsn(pg.port, wrong))
            assert service.backoff.failures == {Door.HTTP: 1, Door.POSTGRES: 1}
            text = client.get("/metrics", headers={"Authorization": f"Bearer {READ}"}).text
            for door in Door:
                assert f'duckflock_auth_failures_total{{protocol="{door}"}} 1.0' in text
        finally:
            pg.stop()
    finally:
        db.close()


# -- the settings table ---------------------------------------------------------------------


def test_serve_options_take_their_defaults_and_help_from_the_settings() -> None:
    import dataclasses

    import click

    from duckflock.cli.app import serve
    from duckflock.server.settings import ListenSettings, flagged

    options = {o.opts[0]: o for o in serve.params if isinstance(o, click.Option)}
    for cls in (ServerSettings, ListenSettings):
        for flag, spec in flagged(cls):
            option = options[flag]
            assert option.name == spec.name
            assert option.default == spec.default
            assert option.help == spec.metadata["help"]
    # every setting of the service is checked where it enters: a bad one names itself
    for spec in dataclasses.fields(ServerSettings):
        if spec.metadata.get("check") is not None:
            with pytest.raises(ValueError, match=spec.name):
                ServerSettings(**{spec.name: -1})


# -- one pool of slots, from threads and the event loop -----------------------------------


def test_one_pool_of_slots_serves_threads_and_the_event_loop_first_come_first_served() -> None:
    """A thread (the Postgres side) and a coroutine (the HTTP side) take from one pool; a
    queued thread is woken by a release on the event loop; a client over its share is
    passed over for the next client in the queue; stop() refuses the queued at once."""
    import asyncio

    from duckflock.errors import ServerBusyError
    from duckflock.server.limits import Slots

    slots = Slots(total=2, per_client=1, queue_timeout=30, what="query")
    first = slots.take("a")  # a Postgres connection's thread
    got: dict[str, Callable[[], None]] = {}
    queued = threading.Event()

    refused: list[str] = []

    def wait_for(client: str) -> None:
        try:
            got[client] = slots.take(client)
        except ServerBusyError as exc:
            refused.append(str(exc))

    async def http_side() -> None:
        release = await slots.acquire("b")  # the second slot, on the event loop
        assert (slots.busy, slots.peak) == (2, 2)
        flood = threading.Thread(target=wait_for, args=("a",))  # "a" holds its share
        flood.start()
        other = threading.Thread(target=wait_for, args=("c",))
        while slots.waiting < 1:  # bounded by the thread's start
            await asyncio.sleep(0.001)
        other.start()
        while slots.waiting < 2:
            await asyncio.sleep(0.001)
        queued.set()
        release()  # from the loop: "c" is next — "a" is passed over, over its share
        await asyncio.to_thread(other.join, 10)
        assert "c" in got and "a" not in got
        assert slots.held_by("c") == 1 and slots.waiting == 1
        slots.stop()  # "a" is refused now, not after its 30 s queue timeout
        await asyncio.to_thread(flood.join, 10)
        assert not flood.is_alive() and "a" not in got
        assert len(refused) == 1 and "shutting down" in refused[0]

    asyncio.run(http_side())
    assert queued.is_set()
    first()
    first()  # a release is idempotent
    got["c"]()
    assert slots.busy == 0 and slots.held_by("a") == 0
    with pytest.raises(ServerBusyError, match="shutting down"):
        slots.take("d")
