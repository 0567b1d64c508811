"""The OpenAPI document served at ``/openapi.json``, made from the route table.

It is precise enough for a fuzzer (schemathesis, in the test suite) to generate valid
and invalid requests and check every answer against it: request bodies with their
schemas, query parameters with their bounds (from the server's settings), the role each
route needs, and every status a route can answer with the error body's schema. Each
route's own part comes from :data:`~duckflock.server.routes.ROUTES`; what every route
shares (auth errors, the error body, the Accept header, path parameters) is added here.
"""

from __future__ import annotations

import re
from typing import Any

from duckflock import __version__
from duckflock.ingest.keys import HEADER as IDEMPOTENCY_KEY
from duckflock.ingest.keys import MAX_KEY_CHARS, REPLAYED
from duckflock.server.formats import MediaType
from duckflock.server.routes import ROUTES, ROWS, Route
from duckflock.server.settings import ServerSettings

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
    "content": {MediaType.JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_ROWS_SCHEMA = {
    "type": "object",
    "required": ["columns", "types", "rows", "truncated"],
    "properties": {
        "columns": {"type": "array", "items": {"type": "string"}},
        "types": {"type": "array", "items": {"type": "string"}},
        "rows": {"type": "array", "items": {"type": "array"}},
        "truncated": {"type": "boolean"},
        "truncation": {"type": "object"},
    },
}
_ACCEPT = {
    "name": "Accept",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "enum": list(ROWS["content"])},  # the formats rows come in
}


def _parameters(route: Route, settings: ServerSettings) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in re.findall(r"{(\w+)}", route.path)
    ]
    if route.accept:
        found.append(_ACCEPT)
    for given in route.query:
        parameter = dict(given)
        bound = route.bounds.get(parameter["name"])
        if bound is not None:  # its maximum is this server's setting
            parameter["schema"] = {**parameter["schema"], "maximum": getattr(settings, bound)}
        found.append(parameter)
    if route.idempotent:
        found.append(
            {
                "name": IDEMPOTENCY_KEY,
                "in": "header",
                "required": False,
                "description": "Names this batch: a repeat of a committed key writes nothing "
                f"and gets the first reply with `{REPLAYED}: true`; the same key with other "
                "rows is refused (422 KeyReusedError). Kept a day by default.",
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS},
            }
        )
    if route.waits:
        found.append(
            {
                "name": "timeout",
                "in": "query",
                "required": False,
                "schema": {"type": "number", "minimum": 0, "maximum": settings.max_wait},
            }
        )
    return found


def operation(route: Route, settings: ServerSettings) -> dict[str, Any]:
    """The OpenAPI operation of one route."""
    op: dict[str, Any] = {"summary": route.summary, "responses": dict(route.responses)}
    errors = route.errors
    if route.role is None:
        op["security"] = []
    else:
        op["description"] = f"Needs a token with the `{route.role}` role (or none on loopback)."
        op["x-duckflock-role"] = str(route.role)
        errors = ("401", "403", *errors)
    if route.idempotent and "200" in op["responses"]:
        op["responses"]["200"] = {
            **op["responses"]["200"],
            "headers": {
                REPLAYED: {
                    "description": "`true` when this answers a repeat of a committed "
                    f"{IDEMPOTENCY_KEY}: nothing was written",
                    "schema": {"type": "string", "enum": ["true"]},
                }
            },
        }
    parameters = _parameters(route, settings)
    if parameters:
        op["parameters"] = parameters
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": dict(route.body)}
        errors = ("400", "408", "413", "415", *errors)
    for status in (*errors, "503"):
        op["responses"].setdefault(status, _ERROR)
    return op


def document(settings: ServerSettings | None = None) -> dict[str, Any]:
    """The document of the server with ``settings`` (its bounds: the defaults if None)."""
    settings = settings or ServerSettings()
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        if route.documented:
            paths.setdefault(route.path, {})[route.method.lower()] = operation(route, settings)
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
            "schemas": {"Error": _ERROR_SCHEMA, "Rows": _ROWS_SCHEMA},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
