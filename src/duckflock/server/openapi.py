"""The OpenAPI document served at ``/openapi.json``: one entry per route."""

from __future__ import annotations

from typing import Any

from .. import __version__

_ERROR = {
    "description": 'Error: {"error": {"type": <duckflock error class>, "message": …, …}}',
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_INGEST = [
    "application/json",
    "application/x-ndjson",
    "text/csv",
    "application/vnd.apache.arrow.stream",
]


def _op(
    summary: str,
    *,
    params: tuple[str, ...] = (),
    body: list[str] | None = None,
    responses: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {}}
    parameters = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params
    ]
    parameters += [
        {
            "name": q,
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": d,
        }
        for q, d in (query or {}).items()
    ]
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = {"required": True, "content": {t: {} for t in body}}
    for status, description in (responses or {"200": "OK"}).items():
        op["responses"][status] = {"description": description}
    for status in ("400", "401", "403", "404", "413", "415", "422", "503", "504"):
        op["responses"].setdefault(status, _ERROR)
    return op


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "duckflock",
            "version": __version__,
            "description": "A live DuckDB: ingest, read-only queries, live analyses.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {
                                "type": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                }
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/health": {"get": _op("Liveness; never needs the token")},
            "/v1/tables": {"get": _op("Tables with their columns and row counts")},
            "/v1/tables/{table}/rows": {
                "post": _op(
                    "Insert rows; answers after the commit (202 at once with wait=false)",
                    params=("table",),
                    body=_INGEST,
                    query={"wait": "false: answer 202 at once"},
                    responses={"200": "Committed", "202": "Accepted"},
                )
            },
            "/v1/query": {
                "post": _op(
                    "One read-only SELECT with parameters: JSON, Arrow or CSV by Accept",
                    body=["application/json"],
                )
            },
            "/v1/sql": {
                "post": _op(
                    "One DDL or DML statement (needs the token): its rows, capped like queries",
                    body=["application/json"],
                )
            },
            "/v1/stats": {"get": _op("Write-path statistics")},
            "/v1/analyses": {"get": _op("Every analysis with its status")},
            "/v1/analyses/{name}": {
                "put": _op(
                    "Define or replace an analysis", params=("name",), body=["application/json"]
                ),
                "delete": _op("Drop an analysis", params=("name",)),
            },
            "/v1/analyses/{name}/result": {
                "get": _op(
                    "The latest result: JSON, Arrow or CSV by Accept",
                    params=("name",),
                    query={"min_version": "wait for this version", "timeout": "seconds"},
                )
            },
            "/v1/analyses/{name}/events": {
                "get": _op("Server-sent events: each new version as JSON", params=("name",))
            },
            "/metrics": {"get": _op("Prometheus metrics")},
        },
    }
