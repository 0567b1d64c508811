"""What ``duckflock serve`` says when it starts: where to reach it and what guards it.

Addresses (HTTP, dashboard, Postgres DSN with its user, never a secret), where the
tokens came from (their sources and roles, never their values) and what is locked down.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from duckflock.server.pgwire import PgSettings
    from duckflock.server.settings import ServerSettings

PG_USER = "duckflock"  # any user name is accepted; the password is a token


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def text(
    database: str,
    *,
    host: str,
    port: int,
    settings: ServerSettings,
    pg: PgSettings | None,
    sources: list[str],
) -> str:
    """The banner. ``sources`` says where the tokens came from, with their roles
    (:func:`token_sources`)."""
    url = f"http://{_host(host)}:{port}"
    lines = [f"duckflock serving {database}", f"  HTTP       {url}"]
    tokens = bool(sources)
    dashboard = f"{url}/?access_token=<token>" if tokens else f"{url}/"
    lines.append(f"  dashboard  {dashboard}")
    if pg is not None:
        tls = " sslmode=require" if pg.certfile else ""
        password = " (password: a token)" if tokens else ""
        lines.append(
            f"  Postgres   postgresql://{PG_USER}@{_host(host)}:{pg.port}/{PG_USER}{tls}{password}"
        )
    if tokens:
        lines.append(
            f"  tokens     from {', '.join(sources)}; clients send one as "
            "Authorization: Bearer <token> (the CLI: --token or $DUCKFLOCK_TOKEN)"
        )
    else:
        lines.append(
            "  tokens     none: only this machine can reach it (loopback, loopback Host "
            "header); --token or $DUCKFLOCK_TOKEN to serve others"
        )
    mib = 2**20
    lines.append(
        "  locked     queries are one read-only SELECT each; no file, network, extension or "
        "settings access (ATTACH, COPY, INSTALL, SET refused); "
        f"responses <= {settings.query_row_cap:,} rows and {settings.query_byte_cap // mib} MiB, "
        f"{settings.query_timeout:g} s; bodies <= {settings.max_body // mib} MiB"
    )
    lines.append("  stop       Ctrl-C (commits what was accepted, then exits)")
    return "\n".join(lines)


def token_sources(
    token: str | None, env_tokens: Mapping[str, str], config_tokens: Mapping[str, str]
) -> list[str]:
    """Where the server's tokens came from, with their roles: option and variable names
    (``{token: role}`` maps in, never a token out)."""
    from duckflock.server.auth import ROLE_ENV

    found = ["--token or $DUCKFLOCK_TOKEN (admin)"] if token is not None else []
    found += [f"${ROLE_ENV[role]} ({role})" for role in sorted(set(env_tokens.values()))]
    roles = ", ".join(sorted(set(config_tokens.values())))
    if roles:
        found.append(f"[[tokens]] in the config ({roles})")
    return found
