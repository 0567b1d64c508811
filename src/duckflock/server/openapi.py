"""The OpenAPI document served at ``/openapi.json``: every route, body, parameter, status.

It is precise enough for a fuzzer (schemathesis, in the test suite) to generate valid
and invalid requests and check every answer against it: request bodies with their
schemas, query parameters with their bounds (from the server's settings), the role each
route needs, and every status a route can answer with the error body's schema.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from .auth import ROUTE_ROLES

_JSON = "application/json"
_NDJSON = "application/x-ndjson"
_CSV = "text/csv"
_ARROW = "application/vnd.apache.arrow.stream"
_PARQUET = "application/vnd.apache.parquet"

_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
_ERROR = {
    "description": 'Error: {"error": {"type": <duckflock error class>, "message": …, …}}',
    "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_ROWS = {
    "description": "Rows: JSON (columns, types, rows, truncated), NDJSON, CSV, Arrow or "
    "Parquet by Accept",
    "content": {
        _JSON: {"schema": {"$ref": "#/components/schemas/Rows"}},
        _NDJSON: {"schema": {"type": "string"}},
        _CSV: {"schema": {"type": "string"}},
        _ARROW: {"schema": {"type": "string", "format": "binary"}},
        _PARQUET: {"schema": {"type": "string", "format": "binary"}},
    },
}
_ANY_JSON = {"description": "OK", "content": {_JSON: {"schema": {}}}}
_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
}
_TABLE = {
    "name": "table",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
}
_ACCEPT = {
    "name": "Accept",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "enum": [_JSON, _NDJSON, _CSV, _ARROW, _PARQUET]},
}
_PARAMS = {"oneOf": [{"type": "array"}, {"type": "object"}, {"type": "null"}]}


def _op(
    summary: str,
    path: str,
    method: str,
    responses: dict[str, Any],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    errors: tuple[str, ...] = (),
    public: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": dict(responses)}
    if public:
        op["security"] = []
    else:
        role = ROUTE_ROLES[(method.upper(), path)]
        op["description"] = f"Needs a token with the `{role}` role (or none on loopback)."
        op["x-duckflock-role"] = role
        errors = ("401", "403", *errors)
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
        errors = ("400", "413", "415", *errors)
    for status in (*errors, "503"):
        op["responses"].setdefault(status, _ERROR)
    return op


def document(*, max_wait: float = 60.0, history: int = 120) -> dict[str, Any]:
    sql_body = {
        _JSON: {
            "schema": {
                "type": "object",
                "required": ["sql"],
                "properties": {"sql": {"type": "string"}, "params": _PARAMS},
            }
        }
    }
    analysis_body = {
        _JSON: {
            "schema": {
                "type": "object",
                "required": ["sql"],
                "additionalProperties": False,
                "properties": {
                    "sql": {"type": "string"},
                    "every": {
                        "oneOf": [
                            {"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
                            {"type": "null"},
                        ]
                    },
                    "on_change": {"type": "boolean"},
                    "min_interval": {"type": "number", "minimum": 0, "maximum": 86400},
                    "params": _PARAMS,
                    "timeout": {
                        "oneOf": [
                            {"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
                            {"type": "null"},
                        ]
                    },
                },
            }
        }
    }
    ingest_body = {
        _JSON: {
            "schema": {
                "oneOf": [
                    {"type": "object"},
                    {"type": "array", "items": {"type": ["object", "array"]}},
                ]
            }
        },
        _NDJSON: {"schema": {"type": "string"}},
        _CSV: {"schema": {"type": "string"}},
        _ARROW: {"schema": {"type": "string", "format": "binary"}},
    }
    ingested = {
        "type": "object",
        "required": ["table", "rows", "committed"],
        "properties": {
            "table": {"type": "string"},
            "rows": {"type": "integer"},
            "committed": {"type": "boolean"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "duckflock",
            "version": __version__,
            "description": "A live DuckDB: ingest, read-only queries, live analyses. "
            "Roles: read (queries, results, events), write (+ ingest), admin (+ analyses, DDL).",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": _ERROR_SCHEMA,
                "Rows": {
                    "type": "object",
                    "required": ["columns", "types", "rows", "truncated"],
                    "properties": {
                        "columns": {"type": "array", "items": {"type": "string"}},
                        "types": {"type": "array", "items": {"type": "string"}},
                        "rows": {"type": "array", "items": {"type": "array"}},
                        "truncated": {"type": "boolean"},
                        "truncation": {"type": "object"},
                    },
                },
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/health": {
                "get": _op(
                    "Liveness and readiness (503 'not ready' when ingest cannot be accepted)",
                    "/v1/health",
                    "get",
                    {
                        "200": {
                            "description": "Ready",
                            "content": {_JSON: {"schema": {"type": "object"}}},
                        },
                        "503": {
                            "description": "Not ready",
                            "content": {_JSON: {"schema": {"type": "object"}}},
                        },
                    },
                    public=True,
                )
            },
            "/v1/tables": {
                "get": _op(
                    "Tables with their columns and row counts",
                    "/v1/tables",
                    "get",
                    {"200": _ANY_JSON},
                    errors=("504",),
                )
            },
            "/v1/tables/{table}/rows": {
                "post": _op(
                    "Insert rows; answers after the commit (202 at once with wait=false)",
                    "/v1/tables/{table}/rows",
                    "post",
                    {
                        "200": {
                            "description": "Committed",
                            "content": {_JSON: {"schema": ingested}},
                        },
                        "202": {
                            "description": "Accepted",
                            "content": {_JSON: {"schema": ingested}},
                        },
                    },
                    parameters=[
                        _TABLE,
                        {
                            "name": "wait",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": ["true", "false", "1", "0"]},
                        },
                    ],
                    body=ingest_body,
                    errors=("404", "422", "504"),
                )
            },
            "/v1/query": {
                "post": _op(
                    "One read-only SELECT with parameters, streamed within the row and byte caps",
                    "/v1/query",
                    "post",
                    {"200": _ROWS},
                    parameters=[_ACCEPT],
                    body=sql_body,
                    errors=("404", "422", "504"),
                )
            },
            "/v1/stats": {
                "get": _op("Write-path statistics", "/v1/stats", "get", {"200": _ANY_JSON})
            },
            "/v1/analyses": {
                "get": _op(
                    "Every analysis with its status", "/v1/analyses", "get", {"200": _ANY_JSON}
                )
            },
            "/v1/sql": {
                "post": _op(
                    "One DDL or DML statement in a transaction of its own (admin role); "
                    "what it returns, within the row and byte caps",
                    "/v1/sql",
                    "post",
                    {"200": _ROWS},
                    parameters=[_ACCEPT],
                    body=sql_body,
                    errors=("404", "409", "422", "504"),
                )
            },
            "/v1/analyses/{name}": {
                "put": _op(
                    "Define or replace an analysis (checked by the query guard)",
                    "/v1/analyses/{name}",
                    "put",
                    {"201": {"description": "Defined", "content": {_JSON: {"schema": {}}}}},
                    parameters=[_NAME],
                    body=analysis_body,
                    errors=("404", "422", "504"),
                ),
                "delete": _op(
                    "Drop an analysis",
                    "/v1/analyses/{name}",
                    "delete",
                    {"204": {"description": "Dropped"}},
                    parameters=[_NAME],
                    errors=("404",),
                ),
            },
            "/v1/analyses/{name}/result": {
                "get": _op(
                    "The latest result (or wait for min_version up to timeout seconds)",
                    "/v1/analyses/{name}/result",
                    "get",
                    {"200": _ROWS},
                    parameters=[
                        _NAME,
                        _ACCEPT,
                        {
                            "name": "min_version",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 2**62},
                        },
                        {
                            "name": "timeout",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "number", "minimum": 0, "maximum": max_wait},
                        },
                    ],
                    errors=("400", "404", "504"),
                )
            },
            "/v1/analyses/{name}/history": {
                "get": _op(
                    "The last versions this server kept (history_results, within "
                    "history_bytes): version, refreshed_at, then the result's columns",
                    "/v1/analyses/{name}/history",
                    "get",
                    {"200": _ROWS},
                    parameters=[
                        _NAME,
                        _ACCEPT,
                        {
                            "name": "last",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 0, "maximum": history},
                        },
                    ],
                    errors=("400", "404"),
                )
            },
            "/v1/analyses/{name}/events": {
                "get": _op(
                    "Server-sent events: each new version as JSON",
                    "/v1/analyses/{name}/events",
                    "get",
                    {
                        "200": {
                            "description": "An event stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        }
                    },
                    parameters=[_NAME],
                    errors=("404",),
                )
            },
            "/metrics": {
                "get": _op(
                    "Prometheus metrics",
                    "/metrics",
                    "get",
                    {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                )
            },
        },
    }
