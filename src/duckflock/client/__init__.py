"""Client: the Database verbs against a ``duckflock serve`` over HTTP (httpx).

Errors come back as the same classes the embedded Database raises (the server sends the
class name; :func:`duckflock.errors.from_payload` rebuilds it), so code catches the same
things either way. Large inserts travel as Arrow IPC in chunks; each chunk is one
atomic request, with an ``Idempotency-Key`` of its own, so the client can send it again
after a failure without storing it twice (:mod:`.retries`, docs/delivery.md).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx
import pyarrow as pa

from duckflock.client.retries import DEFAULT_RETRIES, DEFAULT_TOTAL, Retries
from duckflock.client.wire import (
    ARROW,
    RemoteResults,
    json_or_empty,
    json_ready_rows,
    json_rows,
    raise_for,
    read_arrow,
    result_from_json,
    segment,
    sse,
    table_from_json,
)
from duckflock.errors import ClosedError, QueryError, TransportError, from_payload
from duckflock.ingest.keys import HEADER as IDEMPOTENCY_KEY
from duckflock.ingest.keys import check_header_key
from duckflock.ingest.rows import as_arrow, ipc_bytes
from duckflock.lake.connection import redact
from duckflock.live.changes import DIFF, Change, signed
from duckflock.live.results import Mode, Result

_ARROW_ABOVE = 1_000  # rows: list inserts this large (with uniform keys) go as Arrow


class Client:
    """Talk to a duckflock server: ``Client("http://127.0.0.1:8765", token=…)``."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 120.0,
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
        retries: int = DEFAULT_RETRIES,
        retry_seconds: float = DEFAULT_TOTAL,
    ) -> None:
        """``transport`` swaps the network (tests); ``http`` brings a ready httpx.Client
        (e.g. Starlette's TestClient) whose base URL is used instead of ``url``.

        A request the server could not answer (connection refused or broken, a
        ``timeout``, a 503) is tried up to ``retries`` more times (0: never) within
        ``retry_seconds``, with exponential back-off and jitter, honouring
        ``Retry-After``: reads, inserts (each request carries an ``Idempotency-Key``)
        and ``analysis``; other writes only when they never reached the server."""
        # the retry policy (public: a test moves its ``sleep`` seam)
        self.retries = Retries(retries, retry_seconds)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._shown = redact(self.url)  # in errors and repr: a user:password@ hidden
        if http is not None:
            http.headers.update(headers)
            self._http = http
        else:
            self._http = httpx.Client(
                base_url=self.url, headers=headers, timeout=timeout, transport=transport
            )
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool; idempotent. Later calls raise ClosedError."""
        if not self._closed:
            self._closed = True
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<duckflock.Client {self._shown} {'closed' if self._closed else 'open'}>"

    def _request(
        self, method: str, path: str, *, harmless: bool | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One request, tried again as :class:`Retries` says; ``harmless`` (default: a
        GET or PUT) says a repeat cannot do the work twice."""
        if self._closed:
            raise ClosedError("the client is closed")
        if harmless is None:
            harmless = method in ("GET", "PUT")
        try:
            response = self.retries.run(
                lambda: self._http.request(method, path, **kwargs), harmless=harmless
            )
        except httpx.TransportError as exc:
            raise TransportError(f"cannot reach {self._shown}: {redact(str(exc))}") from exc
        except UnicodeEncodeError as exc:  # a lone surrogate in the SQL, params or a name
            raise ValueError(
                f"the request holds a lone surrogate ({exc.object[exc.start]!r}): it is not "
                "valid text"
            ) from None
        raise_for(response)
        return response

    # -- verbs -------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The server's health: ``{"status": "ok" | "not ready", …}`` (a server that
        cannot take ingest now answers 503 with ``"reason"``; that is returned too)."""
        if self._closed:
            raise ClosedError("the client is closed")
        try:
            response = self._http.get("/v1/health")
        except httpx.TransportError as exc:
            raise TransportError(f"cannot reach {self._shown}: {redact(str(exc))}") from exc
        if response.status_code == 503 and "status" in json_or_empty(response):
            return dict(response.json())
        raise_for(response)
        return dict(response.json())

    def tables(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/v1/tables").json())

    def stats(self) -> dict[str, Any]:
        return dict(self._request("GET", "/v1/stats").json())

    def insert(
        self,
        table: str,
        data: Any,
        *,
        columns: Sequence[str] | None = None,
        wait: bool = True,
        chunk_rows: int = 100_000,
        idempotency_key: str | None = None,
    ) -> int:
        """Insert rows (same shapes as ``Database.insert``); returns how many were sent.

        One call is atomic when it fits in one request; larger Arrow data goes in
        ``chunk_rows`` chunks, each committed on its own. Each request carries an
        ``Idempotency-Key``: ``idempotency_key`` (with ``#<chunk number>`` appended when
        there are several chunks), or a random one; the same key sent again writes
        nothing, so a request is retried safely, and a caller that sends the same key
        again after a failure (``duckflock load`` does) stores the rows once.
        """
        if not isinstance(table, str):
            raise TypeError(f"table must be a str, not {type(table).__name__}")
        suffix = "" if wait else "?wait=false"
        path = f"/v1/tables/{segment(table)}/rows{suffix}"
        arrow = as_arrow(data)
        if arrow is None:
            rows = json_ready_rows(data, columns)
            uniform = rows and all(isinstance(r, dict) for r in rows)
            if uniform and len(rows) >= _ARROW_ABOVE and len({tuple(r) for r in rows}) == 1:
                arrow = pa.Table.from_pylist(rows)
            else:
                chunks = [rows[s : s + chunk_rows] for s in range(0, len(rows), chunk_rows)]
                self._post(path, chunks, json_rows, "application/json", idempotency_key)
                return len(rows)
        elif columns is not None:
            arrow = arrow.rename_columns(list(columns))
        batches = arrow.to_batches(max_chunksize=chunk_rows)
        self._post(
            path,
            batches,
            lambda batch: ipc_bytes(pa.Table.from_batches([batch])),
            ARROW,
            idempotency_key,
        )
        return int(arrow.num_rows)

    def _post(
        self,
        path: str,
        chunks: Sequence[Any],
        encode: Callable[[Any], bytes],
        content_type: str,
        key: str | None,
    ) -> None:
        """Each chunk as one request with a key of its own: ``key`` for a single chunk,
        ``key#n`` for chunk ``n`` of several (a random key when ``key`` is None)."""
        base = check_header_key(key) or uuid.uuid4().hex
        keyed = [base] if len(chunks) == 1 else [f"{base}#{n}" for n in range(len(chunks))]
        if keyed:  # a key too long with its chunk number: refused before anything is sent
            check_header_key(keyed[-1], "idempotency_key with its chunk number")
        for chunk, chunk_key in zip(chunks, keyed, strict=True):
            self._request(
                "POST",
                path,
                harmless=True,
                content=encode(chunk),
                headers={"Content-Type": content_type, IDEMPOTENCY_KEY: chunk_key},
            )

    def execute(
        self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> RemoteResults:
        """Run one read-only SELECT on the server; fetch with fetchall/df/arrow/pl."""
        response = self._request(
            "POST",
            "/v1/query",
            harmless=True,
            json={"sql": sql, "params": params},
            headers={"Accept": ARROW},
        )
        table, truncated = read_arrow(response.content)
        return RemoteResults(
            table, truncated or response.headers.get("x-duckflock-truncated") == "true"
        )

    def run(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> RemoteResults:
        """Run one DDL or DML statement on the server (``CREATE``, ``INSERT``, ``UPDATE``…);
        its rows (e.g. DuckDB's ``Count``) come back like a query's. Needs the token."""
        response = self._request(
            "POST",
            "/v1/sql",
            json={"sql": sql, "params": params},
            headers={"Accept": ARROW},
        )
        table = pa.ipc.open_stream(response.content).read_all()
        return RemoteResults(table, response.headers.get("x-duckflock-truncated") == "true")

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pa.Table:
        """``execute(…).arrow()``: the rows as a pyarrow Table."""
        return self.execute(sql, params).table

    def query_df(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Any:
        """The rows as a pandas DataFrame."""
        return self.execute(sql, params).df()

    # -- analyses ----------------------------------------------------------------------

    def analyses(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/v1/analyses").json())

    def analysis(
        self,
        name: str,
        sql: str,
        *,
        every: float | None = None,
        on_change: bool = False,
        min_interval: float = 0.1,
        params: Sequence[Any] | dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Define or replace an analysis on the server; returns its status. ``timeout``
        (at most the server's query time limit, which is the default) bounds each run."""
        body = {
            "sql": sql,
            "every": every,
            "on_change": on_change,
            "min_interval": min_interval,
            "params": params,
        }
        if timeout is not None:
            body["timeout"] = timeout
        return dict(self._request("PUT", f"/v1/analyses/{segment(name)}", json=body).json())

    def drop_analysis(self, name: str) -> None:
        self._request("DELETE", f"/v1/analyses/{segment(name)}")

    def result(
        self, name: str, *, min_version: int | None = None, timeout: float | None = None
    ) -> Result:
        """The latest result (waits for the first, or for ``min_version``)."""
        params: dict[str, Any] = {}
        if min_version is not None:
            params["min_version"] = min_version
        if timeout is not None:
            params["timeout"] = timeout
        response = self._request(
            "GET", f"/v1/analyses/{segment(name)}/result", params=params, headers={"Accept": ARROW}
        )
        headers = response.headers
        error = headers.get("x-duckflock-error")
        rebuilt = from_payload(json.loads(error)) if error else None
        return Result(
            name=name,
            table=read_arrow(response.content)[0],
            version=int(headers["x-duckflock-version"]),
            refreshed_at=datetime.fromisoformat(headers["x-duckflock-refreshed-at"]),
            duration=float(headers["x-duckflock-duration"]),
            watermark=int(headers["x-duckflock-watermark"]),
            mode=Mode(headers["x-duckflock-mode"]),
            error=rebuilt if isinstance(rebuilt, QueryError) else None,
            now=datetime.fromisoformat(headers["x-duckflock-now"])
            if "x-duckflock-now" in headers
            else None,
        )

    def watch(self, name: str, *, changes: bool = False) -> Iterator[Any]:
        """Each new version as the server pushes it (server-sent events); with
        ``changes=True`` each :class:`~duckflock.Change` instead (see :meth:`changes`)."""
        if changes:
            yield from self.changes(name)
            return
        for event, _, data in self._events(name, {}, {}):
            if event == "result":
                yield result_from_json(json.loads(data))

    def changes(
        self, name: str, *, since: int | str | None = None, reconnects: int = 3
    ) -> Iterator[Change]:
        """What changed, version by version (``GET …/events?changes=1``): a snapshot
        first (unless ``since`` — a version or a change id — is still kept on the
        server), then each change. A broken stream is opened again (up to
        ``reconnects`` times in a row) with ``Last-Event-ID`` set to the last change
        seen: the server resumes after it, or sends a snapshot when it no longer keeps
        what came since (it restarted, or the reader fell too far behind). A change too
        big for the server's byte cap comes as the result at that version or later, as a
        snapshot (a result itself over the cap cannot be followed: raise ``--byte-cap``).
        Values travel as JSON (NaN and infinities as null)."""
        if not isinstance(reconnects, int) or isinstance(reconnects, bool) or reconnects < 0:
            raise ValueError(f"reconnects must be an int >= 0, not {reconnects!r}")
        last = None if since is None else str(since)
        failures = 0
        held = 0  # the version what was yielded reaches (a fetched result may be ahead)
        while True:
            headers = {} if last is None else {"Last-Event-ID": last}
            try:
                for event, ident, data in self._events(name, {"changes": "1"}, headers):
                    if event != "change":
                        continue
                    failures = 0
                    payload = json.loads(data)
                    if not payload["snapshot"] and int(payload["version"]) <= held:
                        last = ident  # already in the result fetched for a truncated one
                        continue
                    change = self._change_from_json(name, payload)
                    last, held = ident, change.version
                    yield change
                return  # the server ended the stream: the analysis was dropped or it stopped
            except TransportError:
                failures += 1
                if failures > reconnects:
                    raise

    def _change_from_json(self, name: str, payload: dict[str, Any]) -> Change:
        lineage = str(payload["id"]).rpartition(".")[0]
        if payload.get("truncated"):
            result = self.result(name, min_version=int(payload["version"]))
            table = signed(result.table, 1)
            return Change(name, int(payload["since"]), result.version, table, True, lineage)
        table = table_from_json(payload, len(payload["columns"]) - 1)
        diff = pa.array([row[-1] for row in payload["rows"]], pa.int8())
        return Change(
            name,
            int(payload["since"]),
            int(payload["version"]),
            table.append_column(DIFF, diff),
            bool(payload["snapshot"]),
            lineage,
        )

    def _events(
        self, name: str, params: dict[str, str], headers: dict[str, str]
    ) -> Iterator[tuple[str, str, str]]:
        """(event, id, data) of ``name``'s event stream."""
        if self._closed:
            raise ClosedError("the client is closed")
        try:
            with self._http.stream(
                "GET",
                f"/v1/analyses/{segment(name)}/events",
                params=params,
                headers=headers,
                timeout=httpx.Timeout(60, read=60),
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise_for(response)
                yield from sse(response.iter_lines())
        except httpx.TransportError as exc:
            raise TransportError(
                f"the event stream from {self._shown} broke: {redact(str(exc))}"
            ) from exc


__all__ = ["Client", "RemoteResults"]
