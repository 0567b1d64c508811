"""The HTTP handlers over the serving service: each parses, asks it, renders.

The policy (tokens and roles, the statement guard, query slots shared with the
Postgres port, deadlines and caps) is the :class:`~duckflock.server.service.Service`'s;
the routes are the route table's (:mod:`duckflock.server.routes`), assembled into the
app by :mod:`.app`. What is HTTP's own lives here: request bodies (parsed in worker
threads within a memory budget, :mod:`.bodies`), streamed results (:mod:`.render`), long
polls and event streams, each analysis's recent versions kept for the dashboard
(:mod:`duckflock.server.history`), and the one function that renders every error as
``{"error": {"type": …, "message": …, …}}`` with the status its class carries; nothing
reaches the client as a dropped connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from functools import partial
from importlib import resources
from typing import Any

import pyarrow as pa
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from duckflock.errors import (
    ClosedError,
    DuckflockError,
    QueryError,
    RequestError,
    RequestTimeoutError,
    ResultTimeoutError,
    ServerBusyError,
    UnknownAnalysisError,
)
from duckflock.ingest.keys import HEADER as IDEMPOTENCY_KEY
from duckflock.ingest.keys import REPLAYED
from duckflock.live.changes import checked_since
from duckflock.live.results import Result
from duckflock.server import formats, policy
from duckflock.server.history import Feeder, History, catch_up, history_table
from duckflock.server.http import openapi, render
from duckflock.server.http.bodies import (
    INLINE_BODY,
    Bodies,
    JsonResponse,
    headers_once,
    ingest_answer,
    json_response,
    stream,
    text,
)
from duckflock.server.http.params import query_param
from duckflock.server.limits import Slots
from duckflock.server.service import Service

__all__ = ["HttpApi", "error_payload", "json_response"]


def error_payload(exc: DuckflockError) -> dict[str, Any]:
    message = exc.message if isinstance(exc, QueryError) else str(exc)
    fields = {k: v for k, v in exc.fields().items() if v is not None}
    return {"error": {"type": type(exc).__name__, "message": message, **fields}}


_KEY_HEADER = IDEMPOTENCY_KEY.lower().encode()


STATUS_TYPES = {404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLargeError"}


def dashboard_html() -> str:
    static = resources.files("duckflock.server") / "static"
    page = (static / "index.html").read_text()
    return page.replace("/*STYLE*/", (static / "style.css").read_text()).replace(
        "/*SCRIPT*/", (static / "app.js").read_text()
    )


def _client(request: Request) -> str:
    """The client's name the auth middleware left (:meth:`Service.client_key`)."""
    return str(request.scope.get("duckflock.client", "local"))


class HttpApi:
    """The HTTP routes over one service: each handler (named by the route table) parses
    the request, asks the service or the database, and renders.

    Owner: :func:`create_app`; its handlers run on the event loop. What it holds of its
    own is HTTP's: the long-poll slots, the large-ingest slots, the body budget, the
    analyses' history and its feeder (started and stopped by the app's lifespan) and the
    set of long polls to end at shutdown (touched on the loop only, and by
    :meth:`_end_waits` through ``call_soon_threadsafe``).
    """

    def __init__(self, service: Service) -> None:
        self.service = service
        self.db = service.db
        self.settings = settings = service.settings
        self.dashboard = dashboard_html()
        self.waits = Slots(
            total=settings.waits,
            per_client=settings.waits_per_client,
            queue_timeout=settings.queue_timeout,
            what="long-poll",
        )
        self.bodies = Bodies(settings)
        self.kept = History(results=settings.history_results, max_bytes=settings.history_bytes)
        self.feeder = Feeder(self.db, self.kept)
        metrics = service.metrics
        metrics.gauge("duckflock_long_polls_waiting", "Long polls waiting", lambda: self.waits.busy)
        metrics.gauge(
            "duckflock_body_bytes_held", "Weighted body bytes held", lambda: self.bodies.used
        )
        self._waiters: set[asyncio.Future[Result]] = set()  # long polls, ended at shutdown
        service.on_stop(self._end_waits)

    @property
    def stopping(self) -> bool:
        return self.service.stopping.is_set()

    def _end_waits(self) -> None:
        self.waits.stop()
        for waiter in list(self._waiters):
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                waiter.get_loop().call_soon_threadsafe(waiter.cancel)

    def render_error(self, exc: DuckflockError, headers: dict[str, str] | None = None) -> Response:
        payload = error_payload(exc)
        payload["error"]["message"] = self.service.scrub(str(payload["error"]["message"]))
        extra = dict(headers or {})
        if isinstance(exc, ServerBusyError):
            extra["Retry-After"] = str(exc.retry_after)
        elif isinstance(exc, RequestTimeoutError):  # the rest of its body is not read
            extra["Connection"] = "close"
        return json_response(payload, exc.http_status, extra)

    def _deadline(self, request: Request) -> float:
        return self.service.deadline(request.scope.get("duckflock.arrived"))

    # -- public --------------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        return HTMLResponse(self.dashboard)

    async def health(self, request: Request) -> Response:
        payload = await run_in_threadpool(self.service.health)
        return json_response(payload, 200 if payload["status"] == "ok" else 503)

    # -- read ----------------------------------------------------------------------------------

    async def spec(self, request: Request) -> Response:
        return json_response(openapi.document(self.settings))

    async def prometheus(self, request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, self.service.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def tables(self, request: Request) -> Response:
        async with self.service.hold_slot(_client(request), self._deadline(request)):
            return json_response(await run_in_threadpool(self.db.tables))

    async def stats(self, request: Request) -> Response:
        figures = (await run_in_threadpool(self.db.stats)).as_dict()
        lake = self.db.lake_state()
        if lake is not None:  # a DuckLake: its snapshot id and maintenance state
            figures["lake"] = lake
        return json_response(figures)

    async def query(self, request: Request) -> Response:
        sql, params = policy.sql_and_params(await self.bodies.json_object(request))
        deadline = self._deadline(request)
        running: list[Any] = []

        def open_source() -> tuple[pa.Schema, Callable[[], pa.RecordBatch | None]]:
            running.append(self.service.open_query(sql, params, deadline))
            return running[0].schema, running[0].next_batch

        def close_source() -> None:
            for query in running:
                query.close()

        return await stream(
            request,
            open_source,
            close_source,
            row_cap=self.settings.query_row_cap,
            byte_cap=self.settings.query_byte_cap,
            slot=self.service.hold_slot(_client(request), deadline),
        )

    async def analyses(self, request: Request) -> Response:
        return json_response(await run_in_threadpool(self.db.analyses))

    async def result(self, request: Request) -> Response:
        name = request.path_params["name"]
        min_version = policy.min_version(query_param(request, "min_version"))
        timeout = policy.wait_seconds(
            query_param(request, "timeout"),
            self.settings.result_timeout,
            self.settings.max_wait,
        )
        async with self.waits.hold(_client(request)):
            waiter = asyncio.ensure_future(self._wait_for(name, min_version, timeout))
            self._waiters.add(waiter)
            try:
                found = await waiter
            except asyncio.CancelledError:
                if self.stopping:
                    raise ClosedError("the server is shutting down") from None
                raise
            finally:
                self._waiters.discard(waiter)
        batches = iter(found.table.to_batches(max_chunksize=2048))
        return await stream(
            request,
            lambda: (found.table.schema, lambda: next(batches, None)),
            lambda: None,
            row_cap=None,
            byte_cap=self.settings.query_byte_cap,
            headers=render.result_headers(found),
            head=formats.result_json_head(found),
        )

    async def history(self, request: Request) -> Response:
        # the last versions kept by this server (``history_results``), one table
        name = request.path_params["name"]
        cap = self.settings.history_results
        last = policy.last_count(query_param(request, "last"), cap)
        await run_in_threadpool(catch_up, self.kept, partial(self.db.result, name))  # 404 here
        table, versions = await run_in_threadpool(history_table, self.kept.results(name), last)
        batches = iter(table.to_batches(max_chunksize=8192))
        return await stream(
            request,
            lambda: (table.schema, lambda: next(batches, None)),
            lambda: None,
            row_cap=self.settings.query_row_cap,
            byte_cap=self.settings.query_byte_cap,
            head={"name": name, "versions": versions, "limit": cap},
        )

    async def _wait_for(self, name: str, min_version: int | None, timeout: float) -> Result:
        """The latest result of ``name`` at ``min_version`` or newer, waited for without
        a thread (the scheduler's async mailbox); ends early on shutdown."""
        found = await run_in_threadpool(self.db.result, name)  # UnknownAnalysisError now
        wanted = 1 if min_version is None else min_version
        if found is not None and found.version >= wanted:
            return found
        if self.stopping:
            raise ClosedError("the server is shutting down")
        try:
            async with asyncio.timeout(timeout):
                async for result in self.db.watch_async(name):
                    if self.stopping:
                        break
                    if result.version >= wanted:
                        return result
        except TimeoutError:
            raise ResultTimeoutError(
                f"analysis {name!r} did not reach version {wanted} within {timeout:g} s"
            ) from None
        if self.stopping or self.db.closed:
            raise ClosedError("the server is shutting down")
        raise UnknownAnalysisError(name)  # dropped while waited for

    async def events(self, request: Request) -> Response:
        name = request.path_params["name"]
        changes = policy.flag(query_param(request, "changes"), "changes", default=False)
        raw = request.headers.get("last-event-id") or query_param(request, "since")
        try:
            since = checked_since(raw)
        except ValueError as exc:
            raise RequestError(f"Last-Event-ID / since: {exc}") from None
        await run_in_threadpool(self.db.result, name)  # 404 now for an unknown analysis
        if changes:
            return EventSourceResponse(self._change_feed(name, since), ping=15)

        async def feed() -> AsyncIterator[dict[str, str]]:
            async for found in self.db.watch_async(name):
                if self.stopping:
                    return
                data = await run_in_threadpool(
                    formats.result_event, found, self.settings.query_byte_cap
                )
                yield {"event": "result", "id": str(found.version), "data": data}

        return EventSourceResponse(feed(), ping=15)

    async def _change_feed(
        self, name: str, since: int | str | None
    ) -> AsyncIterator[dict[str, str]]:
        """Each change as an event ``change`` with ``id: lineage.version``: a reconnecting
        EventSource resumes after it (a snapshot first when that is no longer kept)."""
        async for change in self.db.changes_async(name, since=since):
            if self.stopping:
                return
            data = await run_in_threadpool(
                formats.change_event, change, self.settings.query_byte_cap
            )
            yield {"event": "change", "id": change.id, "data": data}

    # -- write ---------------------------------------------------------------------------------

    async def ingest(self, request: Request) -> Response:
        table = request.path_params["table"]
        wait = policy.flag(query_param(request, "wait"), "wait", default=True)
        headers = headers_once(request)
        content_type = text(headers, b"content-type")
        kind, limit = self.bodies.ingest_kind(request, content_type)
        reason = self.service.ingest_refusal()
        if reason is not None:
            raise ClosedError(f"ingest is not accepted now: {reason}")
        key = policy.idempotency_key(text(headers, _KEY_HEADER))
        timeout = self.settings.ingest_timeout
        db = self.db
        try:
            # the budget covers the body and what parsing makes of it, until queued
            declared = text(headers, b"content-length")
            async with self.bodies.hold_ingest(request, kind, limit, declared) as share:
                body = await self.bodies.read(request, limit, share)
                if len(body) <= INLINE_BODY and wait:  # microseconds: no thread hop
                    rows = formats.parse_rows(body, content_type)
                    if type(rows) is list and len(rows) == 1 and type(rows[0]) is dict:
                        rows = rows[0]  # one object: the single-row path (Intake.single)
                    receipt = None
                else:
                    # parsing a big body, and checking rows that are not Arrow, take a
                    # while: in a worker thread (a slot bounds how many), never on the loop
                    def parse_and_queue() -> Any:
                        parsed = formats.parse_rows(body, content_type)
                        if wait and isinstance(parsed, pa.Table):
                            return parsed  # columnar: queued on the loop in microseconds
                        return db.insert(
                            table, parsed, wait=False, timeout=timeout, idempotency_key=key
                        )

                    async with self.bodies.parsing.hold(_client(request)):
                        outcome = await run_in_threadpool(parse_and_queue)
                    rows, receipt = (
                        (outcome, None) if isinstance(outcome, pa.Table) else (None, outcome)
                    )
                body = b""  # the parsed rows are queued: let the bytes go
            if receipt is None:
                receipt = await db.insert_async(table, rows, timeout=timeout, idempotency_key=key)
            elif wait:
                await run_in_threadpool(receipt.wait, timeout)
        except DuckflockError:
            raise
        except (TypeError, ValueError, UnicodeError) as exc:  # the shape of the rows, in words
            raise RequestError(str(exc)) from exc
        answer = ingest_answer(table, receipt.rows, wait)
        if receipt.replayed:  # a repeat of a committed key: the first call's reply
            return JsonResponse(answer, 200, {REPLAYED: "true"})
        return JsonResponse(answer, 200 if wait else 202, None)

    # -- admin ---------------------------------------------------------------------------------

    async def statement(self, request: Request) -> Response:
        # DDL and DML (`duckflock sql URL …`, admin role): a transaction of its own, so the
        # library sees the write (cached schemas, incremental states) and the deadline
        # interrupts the statement like a query's
        if IDEMPOTENCY_KEY in request.headers:  # refused, not ignored: no false promise
            raise RequestError(
                f"POST /v1/sql takes no {IDEMPOTENCY_KEY} (a statement is not recorded "
                "under a key, so a repeat would run again): make the statement idempotent, "
                "or send rows to POST /v1/tables/{table}/rows, which takes one"
            )
        sql, params = policy.sql_and_params(await self.bodies.json_object(request))
        deadline = self._deadline(request)
        batches: list[pa.RecordBatch] = []

        def open_source() -> tuple[pa.Schema, Callable[[], pa.RecordBatch | None]]:
            schema = self.service.run_statement(sql, params, deadline, batches)
            return schema, lambda: batches.pop(0) if batches else None

        return await stream(
            request,
            open_source,
            batches.clear,
            row_cap=self.settings.query_row_cap,
            byte_cap=self.settings.query_byte_cap,
            slot=self.service.hold_slot(_client(request), deadline),
        )

    async def define_analysis(self, request: Request) -> Response:
        name = request.path_params["name"]
        options = self.service.analysis_options(await self.bodies.json_object(request))
        async with self.service.hold_slot(_client(request), self._deadline(request)):
            who = str(request.scope.get("duckflock.principal", "http"))
            status = await run_in_threadpool(
                partial(self.service.define_analysis, name, options, defined_by=who)
            )
        self.feeder.follow(name)
        return json_response(status, 201)

    async def drop_analysis(self, request: Request) -> Response:
        await run_in_threadpool(self.db.drop_analysis, request.path_params["name"])
        return Response(status_code=204)
