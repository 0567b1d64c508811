"""Every setting of ``duckflock serve``, written once: name, default, help and CLI flag.

Each setting is a field of one of three frozen dataclasses — :class:`ServerSettings`
(the serving service's limits and tokens, the same for HTTP and the Postgres port),
:class:`ListenSettings` (the HTTP listener) and :class:`PgSettings` (the Postgres
listener) — declared with :func:`setting`, which keeps its help text, its CLI flag and
its check beside its default. The CLI's ``serve`` options, the ``[pg]`` keys a config
file may set and each setting's validation are all read from these fields
(:func:`flagged`, :data:`PG_CONFIG_KEYS`), so a default is never written twice.

This module needs no extra (no Starlette): the CLI reads its defaults from here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from duckflock.server.policy import bounded_seconds, positive_int

_MiB = 2**20


def setting(
    default: Any,
    help: str = "",
    *,
    flag: str | None = None,
    check: Callable[[Any, str], Any] | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field with its help text, its ``duckflock serve`` flag (None: no
    flag) and its check (called as ``check(value, name)`` at construction)."""
    metadata = {"help": help, "flag": flag, "check": check}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _optional_seconds(value: Any, name: str) -> Any:
    return None if value is None else bounded_seconds(value, name)


def _port(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"{name} must be from 0 to 65535, not {value!r}")
    return value


def _boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, not {value!r}")
    return value


def _check_fields(instance: Any, prefix: str = "") -> None:
    for spec in dataclasses.fields(instance):
        check = spec.metadata.get("check")
        if check is not None:
            check(getattr(instance, spec.name), f"{prefix}{spec.name}")


def flagged(cls: type) -> Iterator[tuple[str, dataclasses.Field[Any]]]:
    """``(flag, field)`` of every setting of ``cls`` that ``duckflock serve`` takes, in
    declaration order (the order of ``--help``)."""
    for spec in dataclasses.fields(cls):
        if spec.metadata.get("flag"):
            yield spec.metadata["flag"], spec


def default(cls: type, name: str) -> Any:
    """The default of setting ``name`` of ``cls``."""
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


@dataclass(frozen=True)
class ServerSettings:
    """Limits and auth of one server, shared by every protocol it speaks: a query over
    HTTP and one over the Postgres port take from the same slots and caps. Validated at
    construction: every bound finite and positive."""

    # -- with a ``duckflock serve`` flag, in the order ``--help`` shows them
    max_body: int = setting(
        64 * _MiB, "Body size cap, bytes.", flag="--max-body", check=positive_int
    )
    query_row_cap: int = setting(
        100_000, "Rows a query returns at most.", flag="--row-cap", check=positive_int
    )
    query_byte_cap: int = setting(
        64 * _MiB, "Bytes one response sends at most.", flag="--byte-cap", check=positive_int
    )
    query_timeout: float = setting(
        30.0,
        "Seconds from a query's arrival to its last byte.",
        flag="--query-timeout",
        check=bounded_seconds,
    )
    concurrency: int = setting(
        8,
        "Queries running at once (all clients, HTTP and Postgres together).",
        flag="--concurrency",
        check=positive_int,
    )
    per_client: int = setting(
        4,
        "Queries one client (token and address) may run, over both protocols.",
        flag="--per-client",
        check=positive_int,
    )
    queue_timeout: float = setting(
        10.0,
        "Seconds a request waits for a free slot before 503.",
        flag="--queue-timeout",
        check=bounded_seconds,
    )
    body_timeout: float = setting(
        5.0,
        "Seconds a request body may take to arrive, one more per --min-body-rate bytes "
        "received (then 408, and the memory it reserved is free again).",
        flag="--body-timeout",
        check=bounded_seconds,
    )
    min_body_rate: int = setting(
        64 * 1024,  # 512 kbit/s: a slow uplink's upload passes, a dribble does not
        "Bytes per second a request body must average past --body-timeout.",
        flag="--min-body-rate",
        check=positive_int,
    )
    body_budget: int = setting(
        512 * _MiB,
        "Bytes of request bodies being read and parsed at once, each byte counted times "
        "what parsing it costs (JSON most, Arrow least); a body with no room waits "
        "--queue-timeout, then 503.",
        flag="--body-budget",
        check=positive_int,
    )
    max_wait: float = setting(
        60.0,
        "Seconds a long poll (?timeout= of a result) may wait at most.",
        flag="--max-wait",
        check=bounded_seconds,
    )
    history_results: int = setting(
        120,
        "Versions of each analysis kept for its history (the dashboard's chart over time).",
        flag="--history-results",
        check=positive_int,
    )
    history_bytes: int = setting(
        64 * _MiB,
        "Arrow bytes those versions may hold, all analyses together.",
        flag="--history-bytes",
        check=positive_int,
    )
    # -- set from the environment, the config file or by a program
    token: str | None = setting(None, "an admin token (--token)")
    tokens: Mapping[str, str] = setting(None, "more tokens: token -> role", factory=dict)
    max_json_body: int = setting(
        16 * _MiB, "bytes of one JSON/NDJSON body (parsing costs ~40x)", check=positive_int
    )
    max_request_json: int = setting(
        1 * _MiB, "bytes of a query or analysis definition", check=positive_int
    )
    ingest_timeout: float | None = setting(
        60.0, "seconds a request may wait for room and commit", check=_optional_seconds
    )
    result_timeout: float = setting(
        10.0, "default wait for an analysis's first/next result", check=bounded_seconds
    )
    waits: int = setting(256, "long polls waiting at once", check=positive_int)
    waits_per_client: int = setting(32, "of which one client may hold", check=positive_int)
    body_free_below: int = setting(
        4 * _MiB,
        "weighted bytes a body may hold without being counted in body_budget (the small "
        "bodies of the one-row ingest path come and go fast: not worth the bookkeeping)",
        check=positive_int,
    )
    query_body_weight: int = setting(
        20, "what a byte of a query or analysis definition (JSON) counts", check=positive_int
    )
    text_body_weight: int = setting(
        40, "what a byte of a JSON or NDJSON ingest body counts", check=positive_int
    )
    binary_body_weight: int = setting(
        3, "what a byte of a CSV or Arrow ingest body counts", check=positive_int
    )
    min_every: float = setting(
        0.05, "seconds: the shortest analysis interval accepted over HTTP", check=bounded_seconds
    )

    def __post_init__(self) -> None:
        from duckflock.server.auth import Tokens

        Tokens(self.all_tokens())  # empty, short or role-less tokens fail here, at start
        _check_fields(self)

    def all_tokens(self) -> dict[str, str]:
        """Every token with its role (``token`` is an admin's)."""
        from duckflock.server.auth import Role

        found = dict(self.tokens)
        if self.token is not None:
            found[self.token] = Role.ADMIN
        return found


@dataclass(frozen=True)
class ListenSettings:
    """The HTTP listener's own bounds (uvicorn's, extended in :mod:`.serve`)."""

    shutdown_timeout: float = setting(
        30.0,
        "Seconds the shutdown (commit, checkpoint) may take; exit 1 past it.",
        flag="--shutdown-timeout",
        check=bounded_seconds,
    )
    header_timeout: float = setting(
        10.0,
        "Seconds a connection may take to send a request's headers (then 408).",
        flag="--header-timeout",
        check=bounded_seconds,
    )
    max_header_bytes: int = setting(
        64 * 1024,
        "Bytes a request's line and headers may take (then 431).",
        flag="--max-header-bytes",
        check=positive_int,
    )
    max_connections: int = setting(
        1000, "Open connections at most.", flag="--max-connections", check=positive_int
    )
    max_connections_per_peer: int = setting(
        100,
        "Open HTTP connections one address may hold.",
        flag="--max-connections-per-peer",
        check=positive_int,
    )

    def __post_init__(self) -> None:
        _check_fields(self)


@dataclass(frozen=True)
class PgSettings:
    """The Postgres port's own options (its limits are the server's :class:`ServerSettings`).
    Every field but ``host`` may be set under ``[pg]`` in the config file."""

    port: int = setting(5433, "0: any free port", check=_port)
    host: str = setting("127.0.0.1", "the address to listen on (serve's --host)")
    certfile: str | None = setting(None, "TLS: a PEM certificate chain …")
    keyfile: str | None = setting(None, "… and its key (or both in certfile)")
    require_tls: bool = setting(
        False, "refuse connections that did not negotiate TLS", check=_boolean
    )
    cleartext: bool = setting(
        False, "over TLS, ask for the password itself instead of SCRAM", check=_boolean
    )
    max_connections: int = setting(64, "connections past start-up", check=positive_int)
    startup_timeout: float = setting(
        10.0, "seconds a client may take to start up and authenticate", check=bounded_seconds
    )
    # connections still starting up (TLS, start-up packet, password) have their own, smaller
    # budget, in all and per peer address: sockets re-opened every startup_timeout seconds
    # no longer lock out logins once max_connections of them are open
    max_startups: int = setting(16, "connections still starting up", check=positive_int)
    max_startups_per_peer: int = setting(8, "of which from one address", check=positive_int)
    max_connections_per_peer: int = setting(
        32, "logged-in connections from one address", check=positive_int
    )

    def __post_init__(self) -> None:
        _check_fields(self, "pg ")
        if (self.require_tls or self.cleartext) and not self.certfile:
            raise ValueError("pg require_tls and cleartext need a TLS certificate (pg_certfile)")


# the keys a config file's [pg] table may set: every Postgres setting but the address
PG_CONFIG_KEYS = frozenset(f.name for f in dataclasses.fields(PgSettings)) - {"host"}
