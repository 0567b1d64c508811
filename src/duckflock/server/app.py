"""The HTTP skin over a Database: routes parse, call one library method, render.

One server policy applies to every route that runs SQL or waits (:mod:`.policy`'s
checks, :mod:`.guard`, :mod:`.limits`): the statement guard, a deadline counted from the
request's arrival, a row cap and a byte cap on what is sent, finite validated long-poll
bounds, and per-client and total concurrency with a queue timeout. Results stream
(:mod:`.render`); bodies are parsed in worker threads within a memory budget. Every
error is rendered by one function as ``{"error": {"type": …, "message": …, …}}`` with
the status its class carries; nothing reaches the client as a dropped connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import pyarrow as pa
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import __version__
from ..database import Database
from ..errors import (
    ClosedError,
    DuckflockError,
    ForbiddenError,
    PayloadTooLargeError,
    QueryError,
    RequestError,
    ResultTimeoutError,
    ServerBusyError,
    UnknownAnalysisError,
    UnsupportedMediaTypeError,
)
from ..results import Result
from . import formats, history, openapi, policy, render
from .auth import ROUTE_ROLES, AuthMiddleware, Tokens, allows
from .edge import Edge
from .guard import QueryGuard, run_statement
from .limits import ByteBudget, Slots
from .metrics import Metrics

_MiB = 2**20
_INLINE_BODY = 64 * 1024  # bytes: bodies up to this are parsed and queued on the event loop


@dataclass(frozen=True)
class ServerSettings:
    """Limits and auth of one server (validated: every bound finite and positive)."""

    token: str | None = None  # an admin token (``--token``)
    tokens: Mapping[str, str] = field(default_factory=dict)  # more tokens: token -> role
    max_body: int = 64 * _MiB  # bytes of one ingest body (CSV, Arrow)
    max_json_body: int = 16 * _MiB  # bytes of one JSON/NDJSON body (parsing costs ~40x)
    max_request_json: int = 1 * _MiB  # bytes of a query or analysis definition
    query_row_cap: int = 100_000
    query_byte_cap: int = 64 * _MiB  # bytes of one response
    query_timeout: float = 30.0  # seconds from arrival to the last byte of a result
    ingest_timeout: float | None = 60.0  # seconds a request may wait for room and commit
    result_timeout: float = 10.0  # default wait for an analysis's first/next result
    max_wait: float = 60.0  # the longest ``?timeout=`` a long poll may ask for
    concurrency: int = 8  # queries (and analysis definitions) running at once
    per_client: int = 4  # of which one client may hold
    waits: int = 256  # long polls waiting at once
    waits_per_client: int = 32
    queue_timeout: float = 10.0  # seconds a request may wait for a slot, then 503
    body_budget: int = 512 * _MiB  # weighted bytes of bodies being read/parsed at once
    min_every: float = 0.05  # seconds: the shortest analysis interval accepted over HTTP
    history_results: int = 120  # versions of each analysis kept for /history (the dashboard)
    history_bytes: int = 64 * _MiB  # Arrow bytes those versions may hold, all analyses together

    def __post_init__(self) -> None:
        Tokens(self.all_tokens())  # empty, short or role-less tokens fail here, at start
        for name in ("max_body", "max_json_body", "max_request_json", "query_row_cap"):
            policy.positive_int(getattr(self, name), name)
        for name in ("query_byte_cap", "concurrency", "per_client", "waits"):
            policy.positive_int(getattr(self, name), name)
        policy.positive_int(self.waits_per_client, "waits_per_client")
        policy.positive_int(self.body_budget, "body_budget")
        policy.positive_int(self.history_results, "history_results")
        policy.positive_int(self.history_bytes, "history_bytes")
        for name in ("query_timeout", "result_timeout", "max_wait", "queue_timeout", "min_every"):
            policy.bounded_seconds(getattr(self, name), name)
        if self.ingest_timeout is not None:
            policy.bounded_seconds(self.ingest_timeout, "ingest_timeout")

    def all_tokens(self) -> dict[str, str]:
        found = dict(self.tokens)
        if self.token is not None:
            found[self.token] = "admin"
        return found


def error_payload(exc: DuckflockError) -> dict[str, Any]:
    message = exc.message if isinstance(exc, QueryError) else str(exc)
    fields = {k: v for k, v in exc.fields().items() if v is not None}
    return {"error": {"type": type(exc).__name__, "message": message, **fields}}


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(formats.dumps(payload), status, headers, media_type=formats.JSON)


_STATUS_TYPES = {404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLargeError"}


def _dashboard_html() -> str:
    static = resources.files("duckflock.server") / "static"
    page = (static / "index.html").read_text()
    return page.replace("/*STYLE*/", (static / "style.css").read_text()).replace(
        "/*SCRIPT*/", (static / "app.js").read_text()
    )


def _result_headers(result: Result) -> dict[str, str]:
    headers = {
        "X-Duckflock-Version": str(result.version),
        "X-Duckflock-Refreshed-At": result.refreshed_at.isoformat(),
        "X-Duckflock-Duration": f"{result.duration:.6f}",
        "X-Duckflock-Watermark": str(result.watermark),
        "X-Duckflock-Mode": result.mode,
    }
    if result.now is not None:  # a sliding window's instant
        headers["X-Duckflock-Now"] = result.now.isoformat()
    if result.error is not None:
        headers["X-Duckflock-Error"] = json.dumps(
            {"type": type(result.error).__name__, "message": result.error.message}
        )
    return headers


def ingest_state(db: Database, *, thorough: bool = False) -> str | None:
    """Why ingest cannot be accepted now, or None when it can.

    The one place that reads the write path's health. ``thorough`` (health checks) also
    asks ``db.stats()``: a write path whose last commit failed on storage (``"failed"``)
    or that is reopening the database (``"recovering"``) is not ready. The per-request
    check stays cheap: a closed database, or a writer that died or is closing.
    """
    if db.closed:
        return "the database is closed"
    if thorough:
        stats = db.stats()
        if stats.state != "ok":
            why = f": {stats.last_storage_error}" if stats.last_storage_error else ""
            return f"the write path is {stats.state}{why}"
    writer = getattr(db, "_writer", None)
    if writer is None:
        return None
    if getattr(writer, "_broken", None) is not None:
        return "the writer died; ingest fails until the server restarts"
    if getattr(writer, "_closing", False):
        return "the writer is closing"
    return None


def create_app(
    db: Database,
    settings: ServerSettings | None = None,
    *,
    on_shutdown: Callable[[], None] | None = None,
) -> Starlette:
    """The ASGI app serving ``db``. ``on_shutdown`` runs (in a thread) when it stops;
    ``app.state.begin_shutdown()`` interrupts running queries and waits at once."""
    settings = settings or ServerSettings()
    guard = QueryGuard(db, row_cap=settings.query_row_cap, timeout=settings.query_timeout)
    metrics = Metrics(db)
    dashboard = _dashboard_html()
    kept = history.History(results=settings.history_results, max_bytes=settings.history_bytes)
    feeder = history.Feeder(db, kept)
    query_slots = Slots(
        total=settings.concurrency,
        per_client=settings.per_client,
        queue_timeout=settings.queue_timeout,
        what="query",
    )
    wait_slots = Slots(
        total=settings.waits,
        per_client=settings.waits_per_client,
        queue_timeout=settings.queue_timeout,
        what="long-poll",
    )
    # bodies under 64 KiB (weighted: a few MiB) are not counted: they come and go fast
    bodies = ByteBudget(settings.body_budget, settings.queue_timeout, free_below=4 * _MiB)
    ingest_slots = Slots(
        total=settings.concurrency,
        per_client=settings.per_client,
        queue_timeout=settings.ingest_timeout or settings.queue_timeout,
        what="large-ingest",
    )
    metrics.gauge("duckflock_query_slots_busy", "Queries holding a slot", lambda: query_slots.busy)
    metrics.gauge(
        "duckflock_query_slots_waiting", "Queries waiting for a slot", lambda: query_slots.waiting
    )
    metrics.gauge("duckflock_long_polls_waiting", "Long polls waiting", lambda: wait_slots.busy)
    metrics.gauge("duckflock_body_bytes_held", "Weighted body bytes held", lambda: bodies.used)
    stopping: dict[str, Any] = {"flag": False, "event": None}

    def render_error(exc: DuckflockError, headers: dict[str, str] | None = None) -> Response:
        payload = error_payload(exc)
        payload["error"]["message"] = guard.scrub(str(payload["error"]["message"]))
        extra = dict(headers or {})
        if isinstance(exc, ServerBusyError):
            extra["Retry-After"] = str(exc.retry_after)
        return _json(payload, exc.http_status, extra)

    async def on_duckflock_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DuckflockError)
        return render_error(exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind = _STATUS_TYPES.get(exc.status_code, "HTTPError")
        body = {"error": {"type": kind, "message": exc.detail}}
        return _json(body, exc.status_code, dict(exc.headers or {}))

    # -- helpers shared by the routes ------------------------------------------------------

    def arrived(request: Request) -> float:
        return float(request.scope.get("duckflock.arrived", time.monotonic()))

    def client_of(request: Request) -> str:
        return str(request.scope.get("duckflock.client", "local"))

    any_tokens = bool(settings.all_tokens())

    def needs(role: str, endpoint: Callable[[Request], Awaitable[Response]]) -> Any:
        async def guarded(request: Request) -> Response:
            if any_tokens and not allows(request.scope.get("duckflock.role"), role):
                raise ForbiddenError(f"this needs a token with the {role!r} role")
            return await endpoint(request)

        guarded.__name__ = endpoint.__name__
        return guarded

    def require_type(request: Request, *allowed: str) -> str:
        header = request.headers.get("content-type")
        kind = formats.content_type(header)
        if kind not in allowed:
            raise UnsupportedMediaTypeError(
                f"Content-Type {header!r} is not accepted here; send {' or '.join(allowed)}"
            )
        return kind

    def body_size(request: Request, limit: int) -> int:
        """The declared body size (or ``limit`` when not declared); 413 over ``limit``."""
        declared = request.headers.get("content-length")
        size = int(declared) if declared is not None and declared.isdigit() else limit
        if size > limit:
            raise PayloadTooLargeError(f"the body is {size:,} bytes; the limit is {limit:,}")
        return size

    async def read_body(request: Request, limit: int) -> bytes:
        chunks = []
        got = 0
        async for chunk in request.stream():
            got += len(chunk)
            if got > limit:
                raise PayloadTooLargeError(f"the body is over the {limit:,}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    async def json_object(request: Request) -> dict[str, Any]:
        require_type(request, formats.JSON)
        limit = settings.max_request_json
        async with bodies.hold(body_size(request, limit) * 20):
            body = await read_body(request, limit)
        payload = formats.loads(body or b"{}", "JSON")
        if not isinstance(payload, dict):
            raise RequestError("the body must be a JSON object")
        return payload

    def deadline_of(request: Request) -> float:
        return arrived(request) + settings.query_timeout

    async def stream(
        request: Request,
        open_source: Callable[[], tuple[pa.Schema, Callable[[], pa.RecordBatch | None]]],
        close_source: Callable[[], None],
        *,
        row_cap: int | None,
        headers: dict[str, str] | None = None,
        head: dict[str, Any] | None = None,
        slot: contextlib.AbstractAsyncContextManager[None] | None = None,
    ) -> Response:
        """Run ``open_source`` in a thread, then stream its batches within the caps.
        ``close_source`` and the slot are released when the stream ends, whatever way."""
        kind = formats.media_type(request.headers.get("accept"), formats.JSON) or formats.JSON
        stack = contextlib.AsyncExitStack()
        try:
            if slot is not None:
                await stack.enter_async_context(slot)
            stack.push_async_callback(run_in_threadpool, close_source)
            schema, next_batch = await run_in_threadpool(open_source)
            encoder = render.encoder_for(kind, schema, head)
            pump = render.Pump(
                next_batch, encoder, row_cap=row_cap, byte_cap=settings.query_byte_cap
            )
            first, complete = await run_in_threadpool(pump.prefetch)
        except BaseException:
            await stack.aclose()
            raise
        out_headers = dict(headers or {})
        if complete:
            out_headers["X-Duckflock-Truncated"] = str(pump.truncation is not None).lower()
            await stack.aclose()
            return Response(first, headers=out_headers, media_type=encoder.media_type)

        async def body() -> AsyncIterator[bytes]:
            try:
                yield first
                while (chunk := await run_in_threadpool(pump.step)) is not None:
                    yield chunk
            finally:
                await stack.aclose()

        return StreamingResponse(body(), headers=out_headers, media_type=encoder.media_type)

    # -- routes --------------------------------------------------------------------------------

    async def health(request: Request) -> Response:
        reason = (
            "the server is shutting down" if stopping["flag"] else ingest_state(db, thorough=True)
        )
        payload = {
            "status": "ok" if reason is None else "not ready",
            "version": __version__,
            "closed": db.closed,
        }
        if reason is not None:
            payload["reason"] = reason
        return _json(payload, 200 if reason is None else 503)

    async def spec(request: Request) -> Response:
        return _json(openapi.document(max_wait=settings.max_wait, history=settings.history_results))

    async def page(request: Request) -> Response:
        return HTMLResponse(dashboard)

    async def prometheus(request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def tables(request: Request) -> Response:
        async with query_slots.hold(client_of(request), deadline_of(request)):
            return _json(await run_in_threadpool(db.tables))

    async def stats(request: Request) -> Response:
        figures = (await run_in_threadpool(db.stats)).as_dict()
        lake = db.lake_state()
        if lake is not None:  # a DuckLake: its snapshot id and maintenance state
            figures["lake"] = lake
        return _json(figures)

    async def ingest(request: Request) -> Response:
        table = request.path_params["table"]
        wait = policy.flag(request.query_params.get("wait"), "wait", default=True)
        kind = require_type(request, formats.JSON, formats.NDJSON, formats.CSV, formats.ARROW)
        textual = kind in (formats.JSON, formats.NDJSON)
        limit = min(settings.max_json_body, settings.max_body) if textual else settings.max_body
        reason = ingest_state(db)
        if reason is not None:
            raise ClosedError(f"ingest is not accepted now: {reason}")
        content_type = request.headers.get("content-type")
        timeout = settings.ingest_timeout
        try:
            # the budget covers the body and what parsing makes of it, until queued
            async with bodies.hold(body_size(request, limit) * (40 if textual else 3)):
                body = await read_body(request, limit)
                if len(body) <= _INLINE_BODY and wait:  # microseconds: no thread hop
                    rows = formats.parse_rows(body, content_type)
                    receipt = None
                else:
                    # parsing a big body, and checking rows that are not Arrow, take a
                    # while: in a worker thread (a slot bounds how many), never on the loop
                    def parse_and_queue() -> Any:
                        parsed = formats.parse_rows(body, content_type)
                        if wait and isinstance(parsed, pa.Table):
                            return parsed  # columnar: queued on the loop in microseconds
                        return db.insert(table, parsed, wait=False, timeout=timeout)

                    async with ingest_slots.hold(client_of(request)):
                        outcome = await run_in_threadpool(parse_and_queue)
                    rows, receipt = (
                        (outcome, None) if isinstance(outcome, pa.Table) else (None, outcome)
                    )
                body = b""  # the parsed rows are queued: let the bytes go
            if receipt is None:
                receipt = await db.insert_async(table, rows, timeout=timeout)
            elif wait:
                await run_in_threadpool(receipt.wait, timeout)
        except DuckflockError:
            raise
        except (TypeError, ValueError, UnicodeError) as exc:  # the shape of the rows, in words
            raise RequestError(str(exc)) from exc
        payload = {"table": table, "rows": receipt.rows, "committed": wait}
        return _json(payload, 200 if wait else 202)

    async def query(request: Request) -> Response:
        payload = await json_object(request)
        sql, params = policy.sql_and_params(payload)
        deadline = deadline_of(request)
        running: list[Any] = []

        def open_source() -> tuple[pa.Schema, Callable[[], pa.RecordBatch | None]]:
            running.append(guard.open(sql, params, deadline=deadline))
            return running[0].schema, running[0].next_batch

        def close_source() -> None:
            for query in running:
                query.close()

        return await stream(
            request,
            open_source,
            close_source,
            row_cap=settings.query_row_cap,
            slot=query_slots.hold(client_of(request), deadline),
        )

    async def statement(request: Request) -> Response:
        # DDL and DML (`duckflock sql URL …`, admin role): a transaction of its own, so the
        # library sees the write (cached schemas, incremental states) and the deadline
        # interrupts the statement like a query's
        payload = await json_object(request)
        sql, params = policy.sql_and_params(payload)
        deadline = deadline_of(request)
        batches: list[pa.RecordBatch] = []

        def open_source() -> tuple[pa.Schema, Callable[[], pa.RecordBatch | None]]:
            schema = run_statement(db, sql, params, deadline, settings.query_row_cap, batches)
            return schema, lambda: batches.pop(0) if batches else None

        return await stream(
            request,
            open_source,
            batches.clear,
            row_cap=settings.query_row_cap,
            slot=query_slots.hold(client_of(request), deadline),
        )

    async def analyses(request: Request) -> Response:
        return _json(await run_in_threadpool(db.analyses))

    async def analysis(request: Request) -> Response:
        name = request.path_params["name"]
        if request.method == "DELETE":
            await run_in_threadpool(db.drop_analysis, name)
            return Response(status_code=204)
        payload = await json_object(request)
        options = policy.analysis_options(payload, min_every=settings.min_every)
        # an analysis runs under the server's query time limit, or a shorter one it asks
        if options["timeout"] is None:
            options["timeout"] = settings.query_timeout
        elif options["timeout"] > settings.query_timeout:
            raise RequestError(
                f'"timeout" may be at most the server\'s query time limit, '
                f"{settings.query_timeout:g} s, not {options['timeout']!r}"
            )

        def define_it() -> None:
            guard.check(options["sql"])  # the same statement guard as /v1/query
            try:
                db.analysis(name, **options)
            except DuckflockError:
                raise
            except (TypeError, ValueError) as exc:  # a bad option value, in words
                raise RequestError(str(exc)) from exc

        async with query_slots.hold(client_of(request), deadline_of(request)):
            await run_in_threadpool(define_it)
        feeder.follow(name)
        status = next(a for a in await run_in_threadpool(db.analyses) if a["name"] == name)
        return _json(status, 201)

    async def wait_for(name: str, min_version: int | None, timeout: float) -> Result:
        """The latest result of ``name`` at ``min_version`` or newer, waited for without
        a thread (the scheduler's async mailbox); ends early on shutdown."""
        found = await run_in_threadpool(db.result, name)  # UnknownAnalysisError now
        wanted = 1 if min_version is None else min_version
        if found is not None and found.version >= wanted:
            return found
        if stopping["flag"]:
            raise ClosedError("the server is shutting down")
        try:
            async with asyncio.timeout(timeout):
                async for result in db.watch_async(name):
                    if stopping["flag"]:
                        break
                    if result.version >= wanted:
                        return result
        except TimeoutError:
            raise ResultTimeoutError(
                f"analysis {name!r} did not reach version {wanted} within {timeout:g} s"
            ) from None
        if stopping["flag"] or db.closed:
            raise ClosedError("the server is shutting down")
        raise UnknownAnalysisError(name)  # dropped while waited for

    async def result(request: Request) -> Response:
        name = request.path_params["name"]
        min_version = policy.min_version(request.query_params.get("min_version"))
        timeout = policy.wait_seconds(
            request.query_params.get("timeout"), settings.result_timeout, settings.max_wait
        )
        async with wait_slots.hold(client_of(request)):
            waiter = asyncio.ensure_future(wait_for(name, min_version, timeout))
            stopping.setdefault("waiters", set()).add(waiter)
            try:
                found = await waiter
            except asyncio.CancelledError:
                if stopping["flag"]:
                    raise ClosedError("the server is shutting down") from None
                raise
            finally:
                stopping["waiters"].discard(waiter)
        batches = iter(found.table.to_batches(max_chunksize=2048))
        return await stream(
            request,
            lambda: (found.table.schema, lambda: next(batches, None)),
            lambda: None,
            row_cap=None,
            headers=_result_headers(found),
            head=formats.result_json_head(found),
        )

    async def analysis_history(request: Request) -> Response:
        # the last versions kept by this server (``history_results``), one table
        name = request.path_params["name"]
        last = policy.last_count(request.query_params.get("last"), settings.history_results)
        await run_in_threadpool(history.catch_up, kept, lambda: db.result(name))  # 404 here
        table, versions = await run_in_threadpool(history.history_table, kept.results(name), last)
        batches = iter(table.to_batches(max_chunksize=8192))
        head = {"name": name, "versions": versions, "limit": settings.history_results}
        return await stream(
            request,
            lambda: (table.schema, lambda: next(batches, None)),
            lambda: None,
            row_cap=settings.query_row_cap,
            head=head,
        )

    async def events(request: Request) -> Response:
        name = request.path_params["name"]
        await run_in_threadpool(db.result, name)  # 404 now for an unknown analysis

        async def feed() -> AsyncIterator[dict[str, str]]:
            async for found in db.watch_async(name):
                if stopping["flag"]:
                    return
                data = await run_in_threadpool(formats.result_event, found, settings.query_byte_cap)
                yield {"event": "result", "id": str(found.version), "data": data}

        return EventSourceResponse(feed(), ping=15)

    def route(path: str, endpoint: Any, methods: list[str]) -> Route:
        role = max((ROUTE_ROLES[(m, path)] for m in methods), key=("read", "write", "admin").index)
        return Route(path, needs(role, endpoint), methods=methods)

    routes = [
        Route("/", page, methods=["GET"]),  # public: the page holds no data
        route("/openapi.json", spec, ["GET"]),
        route("/metrics", prometheus, ["GET"]),
        Route("/v1/health", health, methods=["GET"]),
        route("/v1/tables", tables, ["GET"]),
        route("/v1/tables/{table}/rows", ingest, ["POST"]),
        route("/v1/query", query, ["POST"]),
        route("/v1/sql", statement, ["POST"]),
        route("/v1/stats", stats, ["GET"]),
        route("/v1/analyses", analyses, ["GET"]),
        Route(
            "/v1/analyses/{name}",
            _by_method({"PUT": needs("admin", analysis), "DELETE": needs("admin", analysis)}),
            methods=["PUT", "DELETE"],
        ),
        route("/v1/analyses/{name}/result", result, ["GET"]),
        route("/v1/analyses/{name}/history", analysis_history, ["GET"]),
        route("/v1/analyses/{name}/events", events, ["GET"]),
    ]

    def begin_shutdown() -> None:
        """Interrupt running queries and end long polls and event streams (any thread)."""
        stopping["flag"] = True
        query_slots.stopping = wait_slots.stopping = True  # first: queued ones must not start
        guard.stop()
        for waiter in list(stopping.get("waiters", ())):
            loop = waiter.get_loop()
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(waiter.cancel)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        feeder.start()
        yield
        begin_shutdown()
        await feeder.stop()
        if on_shutdown is not None:
            await run_in_threadpool(on_shutdown)

    app = Starlette(
        routes=routes,
        exception_handlers={DuckflockError: on_duckflock_error, HTTPException: on_http_error},
        lifespan=lifespan,
    )
    app.add_middleware(AuthMiddleware, tokens=Tokens(settings.all_tokens()), render=render_error)
    app.add_middleware(Edge, metrics=metrics, render=render_error)
    app.state.db = db
    app.state.metrics = metrics
    app.state.guard = guard
    app.state.begin_shutdown = begin_shutdown
    app.state.slots = query_slots
    app.state.history = kept
    return app


def _by_method(endpoints: dict[str, Any]) -> Any:
    async def dispatch(request: Request) -> Response:
        return await endpoints[request.method](request)  # type: ignore[no-any-return]

    return dispatch
