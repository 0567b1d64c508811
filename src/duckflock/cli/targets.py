"""A command's TARGET: a database file (opened here) or a server URL (through the Client)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from duckflock import sql
from duckflock.database import Database, connect
from duckflock.errors import OpenError

if TYPE_CHECKING:
    from duckflock.client import Client


def is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


@contextmanager
def database(path: str, *, read_only: bool, restore: bool = False) -> Iterator[Database]:
    """Open ``path``; a file another process holds (a running server) is a usage error
    that says to go through the server instead. ``restore`` defines the analyses kept
    in the file again (the ``analysis`` commands); other commands leave them be."""
    lake = path.startswith("ducklake:")  # a DuckLake: its catalog says what exists
    if read_only and path != ":memory:" and not lake and not Path(path).exists():
        raise click.UsageError(f"no database file {path!r} (give a .duckdb path or a server URL)")
    try:
        db = connect(path, read_only=read_only, restore_analyses=restore)
    except OpenError as exc:
        if "another process holds it" in str(exc):
            raise click.ClickException(
                f"{path} is in use by another process, most likely a running `duckflock "
                "serve` (DuckDB lets one process open a file for writing): run this "
                "command against the server's URL instead, e.g. http://127.0.0.1:8765"
            ) from None
        raise
    with db:
        yield db


@contextmanager
def client(url: str, token: str | None) -> Iterator[Client]:
    """A Client for ``url``; the [client] extra is named when httpx is missing."""
    from duckflock.extras import missing

    try:
        from duckflock.client import Client
    except ImportError as exc:
        raise click.ClickException(str(missing("client", "a server URL", exc))) from None
    with Client(url, token=token) as remote:
        yield remote


def table_name(name: str) -> tuple[str, str]:
    """The TABLE argument as (quoted SQL for CREATE TABLE, its parts in lower case).

    Split and quoted by :mod:`duckflock.sql`, the one place that turns a caller's name
    into SQL; a name it refuses is a usage error.
    """
    try:
        parts = sql.split_name(name)
        quoted = sql.quote_qualified(parts)
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="TABLE") from None
    return quoted, ".".join(part.lower() for part in parts)


def same_table(listed: str, wanted: str) -> bool:
    """Whether a name from ``tables()`` is the table whose lower-cased parts are ``wanted``."""
    try:
        return ".".join(part.lower() for part in sql.split_name(listed)) == wanted
    except ValueError:
        return False
