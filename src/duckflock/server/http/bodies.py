"""What HTTP requests bring and take away: bodies read within a memory budget, results
streamed within the row and byte caps.

A body takes bytes from one budget (:class:`~.budget.ByteBudget`), weighted by what
parsing it costs: before it is read when its size is declared, as they arrive when not
(chunked); it is refused with 413 past its limit (declared or counted). A result is
opened in a worker thread and streamed batch by batch (:mod:`.render`); its query slot
and cursor are released when the stream ends, whatever way it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pyarrow as pa
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from duckflock.errors import (
    PayloadTooLargeError,
    RequestError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
)
from duckflock.server import formats
from duckflock.server.budget import BodyClock, ByteBudget, Share
from duckflock.server.http import render
from duckflock.server.limits import Slots
from duckflock.server.settings import ServerSettings

INLINE_BODY = 64 * 1024  # bytes: bodies up to this are parsed and queued on the event loop


_JSON_TYPE = (b"content-type", formats.MediaType.JSON.encode())


class JsonResponse(Response):
    """A JSON answer, its header list written directly (Starlette's ``init_headers``
    checks, per answer, what a JSON body never needs)."""

    media_type = formats.MediaType.JSON

    def __init__(self, body: bytes, status: int, headers: dict[str, str] | None) -> None:
        self.status_code = status
        self.background = None
        self.body = body
        raw = [(b"content-length", b"%d" % len(body)), _JSON_TYPE]
        for name, value in (headers or {}).items():
            raw.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        self.raw_headers = raw


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return JsonResponse(formats.dumps(payload), status, headers)


@functools.lru_cache(maxsize=1024)
def ingest_answer(table: str, rows: int, committed: bool) -> bytes:
    """The JSON body of an ingest's answer, encoded once per (table, rows, committed):
    one-row ingest answers the same bytes each time."""
    return formats.dumps({"table": table, "rows": rows, "committed": committed})


def headers_once(request: Request) -> dict[bytes, bytes]:
    """The request's headers by (lower-case) name, read in one pass; of a repeated name
    the first, as Starlette's ``request.headers.get`` (which scans them per lookup)."""
    return dict(reversed(request.scope["headers"]))


def text(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return None if value is None else value.decode("latin-1")


class Bodies:
    """Request bodies of one app: the byte budget and the slots of large ingest parses.

    Owner: :class:`~.app.HttpApi`; used on the event loop only.
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.budget = ByteBudget(
            settings.body_budget, settings.queue_timeout, free_below=settings.body_free_below
        )
        self.clock = BodyClock(settings.body_timeout, settings.min_body_rate)
        self.parsing = Slots(
            total=settings.concurrency,
            per_client=settings.per_client,
            queue_timeout=settings.ingest_timeout or settings.queue_timeout,
            what="large-ingest",
        )

    @property
    def used(self) -> int:
        return self.budget.used

    @staticmethod
    def require_type(request: Request, *allowed: str, header: str | None = None) -> str:
        """The media type of the body (``header``, else the request's Content-Type),
        one of ``allowed`` (else 415)."""
        if header is None:
            header = request.headers.get("content-type")
        kind = formats.content_type(header)
        if kind not in allowed:
            raise UnsupportedMediaTypeError(
                f"Content-Type {header!r} is not accepted here; send {' or '.join(allowed)}"
            )
        return kind

    @staticmethod
    def size(request: Request, limit: int, declared: str | None = None) -> int | None:
        """The declared body size (``declared``, else the request's Content-Length; None
        when not declared: chunked); 413 over ``limit``."""
        if declared is None:
            declared = request.headers.get("content-length")
        if declared is None or not declared.isdigit():
            return None
        size = int(declared)
        if size > limit:
            raise PayloadTooLargeError(f"the body is {size:,} bytes; the limit is {limit:,}")
        return size

    def hold(
        self, request: Request, limit: int, weight: int, declared: str | None = None
    ) -> contextlib.AbstractAsyncContextManager[Share | None]:
        """The budget a body holds until what parsing makes of it is let go, ``weight``
        times its bytes: a declared size (:meth:`size`) is taken before the body is read;
        a body of no declared size (chunked) takes a :class:`~.budget.Share` that
        :meth:`read` grows as the bytes arrive, so it holds what came, never its limit."""
        size = self.size(request, limit, declared)
        if size is None:
            return self.budget.share(weight)
        return self.budget.hold(size * weight)

    async def read(self, request: Request, limit: int, share: Share | None = None) -> bytes:
        """The body, at most ``limit`` bytes (413 past it), arriving in time: within
        ``body_timeout`` seconds of the first read, one second more per ``min_body_rate``
        bytes received (:class:`~.budget.BodyClock`) — else :class:`RequestTimeoutError`
        (408), so a body dribbled a byte at a time gives back the budget it holds.
        ``share`` (a body of no declared size: :meth:`hold`) grows with the bytes
        received; the clock stops while it waits for room."""
        receive = request.receive  # not request.stream(): an async generator per request
        chunks = []
        reading = self.clock.start()
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":  # http.disconnect
                    raise ClientDisconnect
                chunk = message.get("body", b"")
                reading.got += len(chunk)
                if reading.got > limit:
                    raise PayloadTooLargeError(f"the body is over the {limit:,}-byte limit")
                if share is not None and share.short(reading.got):
                    with self.clock.paused(reading):
                        await share.grow(reading.got)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        except asyncio.CancelledError:
            if not reading.late:
                raise
            reading.task.uncancel()  # cancelled by the clock: not a cancellation from above
            took = reading.loop.time() - reading.started
            raise RequestTimeoutError(
                f"the request body came too slowly: {reading.got:,} bytes in {took:.1f} s; "
                f"the server waits {self.clock.grace:g} s and one more per "
                f"{self.clock.rate:,} bytes received (--body-timeout, --min-body-rate)"
            ) from None
        finally:
            self.clock.end(reading)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def json_object(self, request: Request) -> dict[str, Any]:
        """A JSON object body (a query, an analysis definition), within its limit."""
        self.require_type(request, formats.MediaType.JSON)
        limit = self.settings.max_request_json
        # held until parsed: the weight covers the objects parsing makes, not the bytes
        async with self.hold(request, limit, self.settings.query_body_weight) as share:
            body = await self.read(request, limit, share)
            payload = formats.loads(body or b"{}", "JSON")
        if not isinstance(payload, dict):
            raise RequestError("the body must be a JSON object")
        return payload

    def ingest_kind(self, request: Request, header: str | None) -> tuple[str, int]:
        """The media type of an ingest body (``header``: its Content-Type) and its byte
        limit (JSON's is lower)."""
        kind = self.require_type(
            request,
            formats.MediaType.JSON,
            formats.MediaType.NDJSON,
            formats.MediaType.CSV,
            formats.MediaType.ARROW,
            header=header,
        )
        settings = self.settings
        textual = kind in (formats.MediaType.JSON, formats.MediaType.NDJSON)
        limit = min(settings.max_json_body, settings.max_body) if textual else settings.max_body
        return kind, limit

    def hold_ingest(
        self, request: Request, kind: str, limit: int, declared: str | None
    ) -> contextlib.AbstractAsyncContextManager[Share | None]:
        """The budget an ingest body (``declared``: its Content-Length) holds until its
        rows are queued (:meth:`hold`): the body and what parsing makes of it."""
        textual = kind in (formats.MediaType.JSON, formats.MediaType.NDJSON)
        settings = self.settings
        weight = settings.text_body_weight if textual else settings.binary_body_weight
        return self.hold(request, limit, weight, declared)


async def stream(
    request: Request,
    open_source: Callable[[], tuple[pa.Schema, Callable[[], pa.RecordBatch | None]]],
    close_source: Callable[[], None],
    *,
    row_cap: int | None,
    byte_cap: int,
    headers: dict[str, str] | None = None,
    head: dict[str, Any] | None = None,
    slot: contextlib.AbstractAsyncContextManager[None] | None = None,
) -> Response:
    """Run ``open_source`` in a thread, then stream its batches within the caps.
    ``close_source`` and the slot are released when the stream ends, whatever way."""
    kind = (
        formats.media_type(request.headers.get("accept"), formats.MediaType.JSON)
        or formats.MediaType.JSON
    )
    stack = contextlib.AsyncExitStack()
    try:
        if slot is not None:
            await stack.enter_async_context(slot)
        stack.push_async_callback(run_in_threadpool, close_source)
        schema, next_batch = await run_in_threadpool(open_source)
        encoder = render.encoder_for(kind, schema, head)
        pump = render.Pump(next_batch, encoder, row_cap=row_cap, byte_cap=byte_cap)
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
