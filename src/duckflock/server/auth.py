"""Who may do what: bearer tokens with roles, and the Host check of a tokenless server.

Roles are ordered — ``read`` (query, tables, results, events, metrics, the dashboard),
``write`` (+ ingest), ``admin`` (+ analyses CRUD, DDL) — and each route names the least
role it needs in the route table (:mod:`.routes`, which the docs show). Tokens are compared in
constant time as SHA-256 digests (every configured token is compared, so the time does
not depend on which one matched). A token shorter than :data:`MIN_TOKEN_LENGTH` is
refused at start.

Without tokens the server only listens on loopback (``serve`` refuses otherwise) and
every request must name a loopback Host: a web page on another origin can make a
browser send requests to 127.0.0.1 through DNS rebinding (``Host: attacker.example``),
which this refuses.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import ipaddress
import math
import os
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from duckflock.errors import (
    AuthenticationError,
    DuckflockError,
    ForbiddenError,
    RequestError,
    ServerBusyError,
)
from duckflock.server.backoff import Backoff, Door, Refused
from duckflock.server.http.params import query_param


class Role(StrEnum):
    """What a token may do; ordered, each role includes the ones before it."""

    READ = "read"  # queries, tables, results, events, metrics
    WRITE = "write"  # + ingest
    ADMIN = "admin"  # + analyses' definitions, DDL and DML


ROLES = tuple(Role)
# who a tokenless server's requests are, as analyses record their definer (a StrEnum
# formatted once, not per request)
LOOPBACK_PRINCIPAL = f"{Role.ADMIN} (no token, loopback)"
MIN_TOKEN_LENGTH = 16
# environment variables read by ``duckflock serve`` (DUCKFLOCK_TOKEN is ``--token``: admin)
ROLE_ENV: dict[str, str] = {
    Role.READ: "DUCKFLOCK_READ_TOKEN",
    Role.WRITE: "DUCKFLOCK_WRITE_TOKEN",
    Role.ADMIN: "DUCKFLOCK_ADMIN_TOKEN",
}


def check_token(token: str, where: str) -> str:
    """``token`` if it is usable; ValueError naming ``where`` it came from otherwise."""
    if not isinstance(token, str) or not token.strip():
        raise ValueError(f"{where}: the token is empty; give a long random one or none at all")
    if len(token) < MIN_TOKEN_LENGTH or token != token.strip():
        raise ValueError(
            f"{where}: a token needs at least {MIN_TOKEN_LENGTH} characters and no surrounding "
            'spaces (python -c "import secrets; print(secrets.token_urlsafe(32))")'
        )
    return token


def check_role(role: Any, where: str) -> str:
    if role not in ROLES:
        raise ValueError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
    return str(role)


def tokens_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{token: role}`` from DUCKFLOCK_{READ,WRITE,ADMIN}_TOKEN (when set)."""
    environ = os.environ if environ is None else environ
    found = {}
    for role, name in ROLE_ENV.items():
        if name in environ:
            found[check_token(environ[name], f"${name}")] = role
    return found


def tokens_from_config(entries: Iterable[Any]) -> dict[str, str]:
    """``{token: role}`` from ``[[tokens]]`` entries: ``role`` and ``token`` or ``env``."""
    found = {}
    for i, entry in enumerate(entries):
        where = f"config: tokens[{i}]"
        if not isinstance(entry, dict) or "role" not in entry:
            raise ValueError(f"{where} needs a role and a token (or env = 'VARIABLE')")
        role = check_role(entry["role"], where)
        if "env" in entry:
            name = str(entry["env"])
            if name not in os.environ:
                raise ValueError(f"{where}: environment variable {name} is not set")
            token = os.environ[name]
        elif "token" in entry:
            token = entry["token"]
        else:
            raise ValueError(f"{where} needs token = '…' or env = 'VARIABLE'")
        found[check_token(token, where)] = role
    return found


class Tokens:
    """The configured tokens, kept as digests."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._entries = [
            (hashlib.sha256(check_token(t, "token").encode()).digest(), check_role(r, "token"))
            for t, r in tokens.items()
        ]

    def __bool__(self) -> bool:
        return bool(self._entries)

    def match(self, given: str) -> tuple[int, str] | None:
        """(index, role) of the token ``given``, or None; constant time in ``given``."""
        digest = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
        found = None
        for i, (known, role) in enumerate(self._entries):
            if hmac.compare_digest(digest, known) and found is None:
                found = (i, role)
        return found


def allows(role: str | None, needed: str) -> bool:
    return role is not None and ROLES.index(role) >= ROLES.index(needed)


_CACHED_HOST = 64  # characters: the answers for short Host headers are kept (256 of them)


def is_loopback_host(host: str) -> bool:
    """A Host header (with or without port) that names this machine's loopback."""
    if len(host) <= _CACHED_HOST:  # every request of a tokenless server asks
        return _loopback_host_cached(host)
    return _loopback_host(host)


@functools.lru_cache(maxsize=256)
def _loopback_host_cached(host: str) -> bool:
    return _loopback_host(host)


def _loopback_host(host: str) -> bool:
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:8765
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class AuthMiddleware:
    """Sets ``scope["duckflock.role"]``, ``scope["duckflock.client"]`` (the key the
    concurrency limits use: :meth:`Service.client_key`) and ``scope["duckflock.principal"]``
    (who, as analyses record it: the role and the token's number, never the token), or
    answers 401/403 itself. ``public`` are the paths that need no token (the route
    table's). A presented token waits out the peer's ``backoff`` (the service's, shared
    with the Postgres port: :mod:`.backoff`) before it is checked; a wrong one adds to it."""

    def __init__(
        self,
        app: ASGIApp,
        tokens: Tokens,
        render: Any,
        public: frozenset[str],
        client_key: Callable[[str | None, int | None], str],
        backoff: Backoff,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.render = render  # (DuckflockError, headers) -> Response
        self.public = public
        self.client_key = client_key
        self.backoff = backoff

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        peer = (scope.get("client") or (None, 0))[0]
        scope["duckflock.client"] = self.client_key(peer, None)
        error: DuckflockError | None = None
        headers: dict[str, str] = {}
        if scope["path"] in self.public:
            scope["duckflock.role"] = None
        elif not self.tokens:
            host = next((v for k, v in scope["headers"] if k == b"host"), b"")
            if is_loopback_host(host.decode("latin-1")):
                scope["duckflock.role"] = Role.ADMIN  # tokenless: loopback only, everything
                scope["duckflock.principal"] = LOOPBACK_PRINCIPAL
            else:
                error = ForbiddenError(
                    "this server has no token, so it answers only requests addressed to a "
                    "loopback host (localhost, 127.0.0.1, [::1]); set a token to serve others"
                )
        else:
            request = Request(scope)
            given = request.headers.get("authorization", "")
            token = given[7:].strip() if given.lower().startswith("bearer ") else ""
            match = None
            try:  # ?access_token= given twice, bearer or not: any repeated parameter's 400
                in_query = query_param(request, "access_token")
                token = token or in_query or ""
                match = await self.check(str(peer), token)
            except RequestError as exc:
                error = exc
            except Refused as exc:
                error = ServerBusyError(str(exc), retry_after=math.ceil(exc.retry_after))
            if match is not None:
                scope["duckflock.role"] = match[1]
                scope["duckflock.client"] = self.client_key(peer, match[0])
                # who, in what an analysis records as its definer: never the token itself
                scope["duckflock.principal"] = f"{match[1]} token #{match[0] + 1}"
            elif error is None:
                error = AuthenticationError(
                    "a valid bearer token is required (Authorization: Bearer …)"
                )
                headers["WWW-Authenticate"] = "Bearer"
        if error is None:
            await self.app(scope, receive, send)
            return
        response = self.render(error, headers)
        await response(scope, receive, send)

    async def check(self, peer: str, token: str) -> tuple[int, str] | None:
        """The token's (index, role), after the peer's back-off; None when it is wrong
        or missing (only a wrong one counts as a failure)."""
        if not token:
            return None
        wait = self.backoff.reserve(peer, token, Door.HTTP)
        if wait:
            await asyncio.sleep(wait)
        match = self.tokens.match(token)
        if match is None:
            self.backoff.failed(peer, token, Door.HTTP)
        return match
