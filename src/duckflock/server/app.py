"""The HTTP skin over a Database: routes parse, call one library method, render.

Blocking DuckDB work runs in Starlette's thread pool; nothing here knows DuckDB details
the library does not. Every error is rendered by one handler as
``{"error": {"type": …, "message": …, …}}`` with the status its class carries.
"""

from __future__ import annotations

import contextlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..database import Database
from ..errors import (
    AuthenticationError,
    DuckflockError,
    PayloadTooLargeError,
    QueryError,
    RequestError,
)
from ..results import Result
from ..rows import ipc_bytes
from . import formats, openapi
from .guard import QueryGuard
from .metrics import Metrics

PUBLIC_PATHS = {"/v1/health"}


@dataclass(frozen=True)
class ServerSettings:
    """Limits and auth of one server."""

    token: str | None = None
    max_body: int = 64 * 2**20  # bytes
    query_row_cap: int = 100_000
    query_timeout: float = 30.0  # seconds
    ingest_timeout: float | None = 60.0  # seconds a request may wait for room and commit
    result_timeout: float = 10.0  # default wait for an analysis's first result


def error_payload(exc: DuckflockError) -> dict[str, Any]:
    message = exc.message if isinstance(exc, QueryError) else str(exc)
    fields = {k: v for k, v in exc.fields().items() if v is not None}
    return {"error": {"type": type(exc).__name__, "message": message, **fields}}


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(formats.dumps(payload), status, headers, media_type=formats.JSON)


async def _on_duckflock_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DuckflockError)
    return _json(error_payload(exc), exc.http_status)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
    return _json({"error": {"type": kind, "message": exc.detail}}, exc.status_code)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    message = f"internal error: {type(exc).__name__}: {exc}"
    return _json({"error": {"type": "InternalError", "message": message}}, 500)


class _Auth:
    """Bearer token on every path but /v1/health (header, or ``access_token`` in the
    query string for EventSource and the dashboard's first load)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.token is None or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        token = token or request.query_params.get("access_token", "")
        if hmac.compare_digest(token.encode(), self.token.encode()):
            await self.app(scope, receive, send)
            return
        error = AuthenticationError("a valid bearer token is required (Authorization: Bearer …)")
        response = _json(error_payload(error), 401, {"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


class _CountRequests:
    """Counts finished requests by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            # the router leaves the matched route in the scope
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()


_INLINE_BODY = 64 * 1024  # bytes: ingest bodies up to this are parsed on the event loop


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the body is {int(declared):,} bytes; the limit is {limit:,}")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"the body is over the {limit:,}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def _json_body(request: Request, limit: int) -> dict[str, Any]:
    body = await _body(request, limit)
    payload = formats.loads(body or b"{}", "JSON")
    if not isinstance(payload, dict):
        raise RequestError("the body must be a JSON object")
    return payload


def _number(request: Request, name: str, cast: Callable[[str], Any]) -> Any:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return cast(raw)
    except ValueError:
        raise RequestError(f"query parameter {name}={raw!r} is not a number") from None


def _render(table: Any, accept: str | None, headers: dict[str, str], payload: Any) -> Response:
    kind = formats.media_type(accept, default=formats.JSON) or formats.JSON
    if kind == formats.ARROW:
        return Response(ipc_bytes(table), headers=headers, media_type=formats.ARROW)
    if kind == formats.CSV:
        return Response(formats.csv_bytes(table), headers=headers, media_type=formats.CSV)
    return _json(payload, headers=headers)


def _result_headers(result: Result) -> dict[str, str]:
    headers = {
        "X-Duckflock-Version": str(result.version),
        "X-Duckflock-Refreshed-At": result.refreshed_at.isoformat(),
        "X-Duckflock-Duration": f"{result.duration:.6f}",
        "X-Duckflock-Watermark": str(result.watermark),
        "X-Duckflock-Mode": result.mode,
    }
    if result.error is not None:
        headers["X-Duckflock-Error"] = json.dumps(
            {"type": type(result.error).__name__, "message": result.error.message}
        )
    return headers


def _capped(db: Database, sql: str, params: Any, cap: int) -> tuple[Any, bool]:
    """Run one statement; its first ``cap`` rows as an Arrow table, and whether cut."""
    import pyarrow as pa

    reader = db.execute(sql, params).to_arrow_reader(8192)
    batches, rows = [], 0
    for batch in reader:
        if rows + batch.num_rows > cap:
            batches.append(batch.slice(0, cap - rows))
            return pa.Table.from_batches(batches, schema=reader.schema), True
        batches.append(batch)
        rows += batch.num_rows
    return pa.Table.from_batches(batches, schema=reader.schema), False


def _dashboard_html() -> str:
    static = resources.files("duckflock.server") / "static"
    page = (static / "index.html").read_text()
    return page.replace("/*STYLE*/", (static / "style.css").read_text()).replace(
        "/*SCRIPT*/", (static / "app.js").read_text()
    )


def create_app(
    db: Database,
    settings: ServerSettings | None = None,
    *,
    on_shutdown: Callable[[], None] | None = None,
) -> Starlette:
    """The ASGI app serving ``db``. ``on_shutdown`` runs (in a thread) when it stops."""
    settings = settings or ServerSettings()
    guard = QueryGuard(db, row_cap=settings.query_row_cap, timeout=settings.query_timeout)
    metrics = Metrics(db)
    dashboard = _dashboard_html()

    async def health(request: Request) -> Response:
        return _json({"status": "ok", "version": __version__, "closed": db.closed})

    async def spec(request: Request) -> Response:
        return _json(openapi.document())

    async def page(request: Request) -> Response:
        return HTMLResponse(dashboard)

    async def prometheus(request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def tables(request: Request) -> Response:
        return _json(await run_in_threadpool(db.tables))

    async def stats(request: Request) -> Response:
        return _json((await run_in_threadpool(db.stats)).as_dict())

    async def ingest(request: Request) -> Response:
        table = request.path_params["table"]
        wait = request.query_params.get("wait", "true").lower() not in ("false", "0", "no")
        body = await _body(request, settings.max_body)
        kind = request.headers.get("content-type")

        def parse() -> Any:
            return formats.parse_rows(body, kind)

        # small bodies are parsed on the event loop (microseconds); big ones in a thread
        rows = parse() if len(body) <= _INLINE_BODY else await run_in_threadpool(parse)
        try:
            if wait:
                receipt = await db.insert_async(table, rows, timeout=settings.ingest_timeout)
            else:
                receipt = await run_in_threadpool(
                    lambda: db.insert(table, rows, wait=False, timeout=settings.ingest_timeout)
                )
        except DuckflockError:
            raise
        except (TypeError, ValueError) as exc:  # the shape of the rows, in words
            raise RequestError(str(exc)) from exc
        payload = {"table": table, "rows": receipt.rows, "committed": wait}
        return _json(payload, 200 if wait else 202)

    async def query(request: Request) -> Response:
        payload = await _json_body(request, settings.max_body)
        sql = payload.get("sql")
        if not isinstance(sql, str):
            raise RequestError('the body needs "sql": a string')
        params = payload.get("params")
        if params is not None and not isinstance(params, list | dict):
            raise RequestError('"params" must be an array or an object')
        outcome = await run_in_threadpool(guard.run, sql, params)
        headers = {"X-Duckflock-Truncated": str(outcome.truncated).lower()}
        body = {**formats.table_json(outcome.table), "truncated": outcome.truncated}
        return _render(outcome.table, request.headers.get("accept"), headers, body)

    async def statement(request: Request) -> Response:
        # DDL and DML (`duckflock sql URL …`), through db.execute like embedded code.
        # TODO(roles): admin role only once tokens carry roles; until then it is gated
        # like ingest, by the server's one token (none on a loopback-only server)
        payload = await _json_body(request, settings.max_body)
        sql = payload.get("sql")
        if not isinstance(sql, str):
            raise RequestError('the body needs "sql": a string')
        params = payload.get("params")
        if params is not None and not isinstance(params, list | dict):
            raise RequestError('"params" must be an array or an object')
        table, truncated = await run_in_threadpool(_capped, db, sql, params, settings.query_row_cap)
        headers = {"X-Duckflock-Truncated": str(truncated).lower()}
        body = {**formats.table_json(table), "truncated": truncated}
        return _render(table, request.headers.get("accept"), headers, body)

    async def analyses(request: Request) -> Response:
        return _json(await run_in_threadpool(db.analyses))

    async def define(request: Request) -> Response:
        name = request.path_params["name"]
        payload = await _json_body(request, settings.max_body)
        sql = payload.get("sql")
        if not isinstance(sql, str):
            raise RequestError('the body needs "sql": a string')
        try:
            every = None if payload.get("every") is None else float(payload["every"])
            min_interval = float(payload.get("min_interval", 0.1))
        except (TypeError, ValueError) as exc:
            raise RequestError(f"bad analysis options: {exc}") from exc

        def define_it() -> None:
            try:
                db.analysis(
                    name,
                    sql,
                    every=every,
                    on_change=bool(payload.get("on_change", False)),
                    min_interval=min_interval,
                    params=payload.get("params"),
                )
            except DuckflockError:
                raise
            except (TypeError, ValueError) as exc:  # a bad option value (every <= 0, …)
                raise RequestError(str(exc)) from exc

        await run_in_threadpool(define_it)
        status = next(a for a in await run_in_threadpool(db.analyses) if a["name"] == name)
        return _json(status, 201)

    async def drop(request: Request) -> Response:
        await run_in_threadpool(db.drop_analysis, request.path_params["name"])
        return Response(status_code=204)

    async def result(request: Request) -> Response:
        name = request.path_params["name"]
        min_version = _number(request, "min_version", int) or 1
        timeout = _number(request, "timeout", float)
        found = await run_in_threadpool(
            lambda: db.result(
                name,
                min_version=min_version,
                timeout=settings.result_timeout if timeout is None else timeout,
            )
        )
        assert found is not None
        return _render(
            found.table,
            request.headers.get("accept"),
            _result_headers(found),
            formats.result_json(found),
        )

    async def events(request: Request) -> Response:
        name = request.path_params["name"]
        await run_in_threadpool(db.result, name)  # 404 now for an unknown analysis

        async def stream() -> AsyncIterator[dict[str, str]]:
            async for found in db.watch_async(name):
                yield {
                    "event": "result",
                    "id": str(found.version),
                    "data": formats.dumps(formats.result_json(found)).decode(),
                }

        return EventSourceResponse(stream(), ping=15)

    routes = [
        Route("/", page),
        Route("/openapi.json", spec),
        Route("/metrics", prometheus),
        Route("/v1/health", health),
        Route("/v1/tables", tables),
        Route("/v1/tables/{table}/rows", ingest, methods=["POST"]),
        Route("/v1/query", query, methods=["POST"]),
        Route("/v1/sql", statement, methods=["POST"]),
        Route("/v1/stats", stats),
        Route("/v1/analyses", analyses),
        Route("/v1/analyses/{name}", define, methods=["PUT"]),
        Route("/v1/analyses/{name}", drop, methods=["DELETE"]),
        Route("/v1/analyses/{name}/result", result),
        Route("/v1/analyses/{name}/events", events),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if on_shutdown is not None:
            await run_in_threadpool(on_shutdown)

    app = Starlette(
        routes=routes,
        exception_handlers={
            DuckflockError: _on_duckflock_error,
            HTTPException: _on_http_error,
            Exception: _on_unexpected,
        },
        lifespan=lifespan,
    )
    app.add_middleware(_Auth, token=settings.token)
    app.add_middleware(_CountRequests, metrics=metrics)
    app.state.db = db
    app.state.metrics = metrics
    return app
