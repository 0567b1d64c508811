"""The route table: every HTTP route written once — method, path, least role, the handler
that serves it, its request body and its answers.

Everything else is made from :data:`ROUTES`: the Starlette router and each route's role
check (:func:`duckflock.server.http.app.create_app`), the paths that need no token (the auth
middleware's), the role map the docs show (:func:`roles`) and the OpenAPI document
(:mod:`.openapi`). A test checks that nothing names a route anywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from duckflock.server.auth import Role
from duckflock.server.formats import MediaType

_PARAMS = {"oneOf": [{"type": "array"}, {"type": "object"}, {"type": "null"}]}
_SECONDS = {
    "oneOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": 86400}, {"type": "null"}]
}
SQL_BODY = {
    MediaType.JSON: {
        "schema": {
            "type": "object",
            "required": ["sql"],
            "properties": {"sql": {"type": "string"}, "params": _PARAMS},
        }
    }
}
ANALYSIS_BODY = {
    MediaType.JSON: {
        "schema": {
            "type": "object",
            "required": ["sql"],
            "additionalProperties": False,
            "properties": {
                "sql": {"type": "string"},
                "every": _SECONDS,
                "on_change": {"type": "boolean"},
                "min_interval": {"type": "number", "minimum": 0, "maximum": 86400},
                "params": _PARAMS,
                "timeout": _SECONDS,
            },
        }
    }
}
INGEST_BODY = {
    MediaType.JSON: {
        "schema": {
            "oneOf": [
                {"type": "object"},
                {"type": "array", "items": {"type": ["object", "array"]}},
            ]
        }
    },
    MediaType.NDJSON: {"schema": {"type": "string"}},
    MediaType.CSV: {"schema": {"type": "string"}},
    MediaType.ARROW: {"schema": {"type": "string", "format": "binary"}},
}
_INGESTED = {
    "type": "object",
    "required": ["table", "rows", "committed"],
    "properties": {
        "table": {"type": "string"},
        "rows": {"type": "integer"},
        "committed": {"type": "boolean"},
    },
}
ROWS = {
    "description": "Rows: JSON (columns, types, rows, truncated), NDJSON, CSV, Arrow or "
    "Parquet by Accept",
    "content": {
        MediaType.JSON: {"schema": {"$ref": "#/components/schemas/Rows"}},
        MediaType.NDJSON: {"schema": {"type": "string"}},
        MediaType.CSV: {"schema": {"type": "string"}},
        MediaType.ARROW: {"schema": {"type": "string", "format": "binary"}},
        MediaType.PARQUET: {"schema": {"type": "string", "format": "binary"}},
    },
}
_ANY_JSON = {"description": "OK", "content": {MediaType.JSON: {"schema": {}}}}
_OBJECT = {MediaType.JSON: {"schema": {"type": "object"}}}


@dataclass(frozen=True)
class Route:
    """One HTTP route. ``role`` None: public (no token). ``accept``: answers rows in the
    format its Accept header asks for; ``waits``: takes ``?timeout=`` up to the server's
    ``max_wait``; ``bounds``: query parameter -> the :class:`~.settings.ServerSettings`
    field that is its maximum (the handler checks it against the same field);
    ``documented`` False: left out of the OpenAPI document; ``idempotent``: takes an
    ``Idempotency-Key`` header (:mod:`duckflock.ingest.keys`), and answers a repeat of a
    committed key with the first reply and ``Idempotent-Replayed: true``; ``hot``: the
    app dispatches it before the router's walk over every route (the one-row ingest
    path, whose CPU per request the server benchmark measures)."""

    method: str
    path: str
    role: Role | None
    handler: str  # the name of the :class:`~duckflock.server.http.api.HttpApi` method
    summary: str
    responses: Mapping[str, Any]
    body: Mapping[MediaType, Any] | None = None  # media type -> schema
    query: tuple[Mapping[str, Any], ...] = ()
    accept: bool = False
    waits: bool = False
    bounds: Mapping[str, str] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    documented: bool = True
    idempotent: bool = False
    hot: bool = False


ROUTES: tuple[Route, ...] = (
    Route("GET", "/", None, "page", "The dashboard (holds no data)", {}, documented=False),
    Route("GET", "/openapi.json", Role.READ, "spec", "This document", {}, documented=False),
    Route(
        "GET",
        "/metrics",
        Role.READ,
        "prometheus",
        "Prometheus metrics",
        {
            "200": {
                "description": "Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    ),
    Route(
        "GET",
        "/v1/health",
        None,
        "health",
        "Liveness and readiness (503 'not ready' when ingest cannot be accepted)",
        {
            "200": {"description": "Ready", "content": _OBJECT},
            "503": {"description": "Not ready", "content": _OBJECT},
        },
    ),
    Route(
        "GET",
        "/v1/tables",
        Role.READ,
        "tables",
        "Tables with their columns and row counts",
        {"200": _ANY_JSON},
        errors=("504",),
    ),
    Route(
        "POST",
        "/v1/tables/{table}/rows",
        Role.WRITE,
        "ingest",
        "Insert rows; answers after the commit (202 at once with wait=false)",
        {
            "200": {"description": "Committed", "content": {MediaType.JSON: {"schema": _INGESTED}}},
            "202": {"description": "Accepted", "content": {MediaType.JSON: {"schema": _INGESTED}}},
        },
        body=INGEST_BODY,
        query=(
            {
                "name": "wait",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": ["true", "false", "1", "0"]},
            },
        ),
        errors=("404", "422", "504"),
        idempotent=True,
        hot=True,
    ),
    Route(
        "POST",
        "/v1/query",
        Role.READ,
        "query",
        "One read-only SELECT with parameters, streamed within the row and byte caps",
        {"200": ROWS},
        body=SQL_BODY,
        accept=True,
        errors=("404", "422", "504"),
    ),
    Route(
        "POST",
        "/v1/sql",
        Role.ADMIN,
        "statement",
        "One DDL or DML statement in a transaction of its own (admin role); "
        "what it returns, within the row and byte caps",
        {"200": ROWS},
        body=SQL_BODY,
        accept=True,
        errors=("404", "409", "422", "504"),
    ),
    Route("GET", "/v1/stats", Role.READ, "stats", "Write-path statistics", {"200": _ANY_JSON}),
    Route(
        "GET",
        "/v1/analyses",
        Role.READ,
        "analyses",
        "Every analysis with its status",
        {"200": _ANY_JSON},
    ),
    Route(
        "PUT",
        "/v1/analyses/{name}",
        Role.ADMIN,
        "define_analysis",
        "Define or replace an analysis (checked by the query guard)",
        {"201": {"description": "Defined", "content": {MediaType.JSON: {"schema": {}}}}},
        body=ANALYSIS_BODY,
        errors=("404", "422", "504"),
    ),
    Route(
        "DELETE",
        "/v1/analyses/{name}",
        Role.ADMIN,
        "drop_analysis",
        "Drop an analysis",
        {"204": {"description": "Dropped"}},
        errors=("404",),
    ),
    Route(
        "GET",
        "/v1/analyses/{name}/result",
        Role.READ,
        "result",
        "The latest result (or wait for min_version up to timeout seconds)",
        {"200": ROWS},
        query=(
            {
                "name": "min_version",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 2**62},
            },
        ),
        accept=True,
        waits=True,
        errors=("400", "404", "504"),
    ),
    Route(
        "GET",
        "/v1/analyses/{name}/history",
        Role.READ,
        "history",
        "The last versions this server kept (history_results, within history_bytes): "
        "version, refreshed_at, then the result's columns",
        {"200": ROWS},
        query=(
            {
                "name": "last",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 0},
            },
        ),
        bounds={"last": "history_results"},
        accept=True,
        errors=("400", "404"),
    ),
    Route(
        "GET",
        "/v1/analyses/{name}/events",
        Role.READ,
        "events",
        "Server-sent events: each new version as JSON (event result), or with changes=1 "
        "what changed (event change, id lineage.version: a Last-Event-ID header or since= "
        "resumes after it, a snapshot first when that is no longer kept)",
        {
            "200": {
                "description": "An event stream",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        },
        query=(
            {
                "name": "changes",
                "in": "query",
                "required": False,
                "schema": {"type": "boolean"},
            },
            {
                "name": "since",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
            },
        ),
        errors=("400", "404"),
    ),
)


def roles() -> dict[tuple[str, str], Role]:
    """``(method, path) -> least role`` of every route that needs a token."""
    return {(r.method, r.path): r.role for r in ROUTES if r.role is not None}


PUBLIC_PATHS = frozenset(r.path for r in ROUTES if r.role is None)
