"""Query parameters of HTTP requests: each one given at most once.

One rule for every parameter, the token's (``?access_token=``, read by the auth
middleware) too: a parameter given twice is a 400 naming it, never one of its values
taken silently."""

from __future__ import annotations

from starlette.requests import Request

from duckflock.errors import RequestError


def query_param(request: Request, name: str) -> str | None:
    """Query parameter ``name`` (None: absent); a RequestError (400) when it is given
    more than once, rather than silently taking one of them."""
    if not request.scope.get("query_string"):  # the usual case: no parser built for it
        return None
    found = request.query_params.getlist(name)
    if len(found) > 1:
        raise RequestError(f"query parameter {name} is given {len(found)} times; give it once")
    return found[0] if found else None
