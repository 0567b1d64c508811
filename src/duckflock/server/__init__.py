"""The server: ``create_app(db)`` for any ASGI host, ``duckflock serve`` to run it.

:mod:`.settings` needs no extra (the CLI reads its defaults from it); everything else
needs the ``server`` extra, which the first use of ``create_app`` or ``QueryGuard`` names
when it is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from duckflock.extras import require
from duckflock.server.settings import ServerSettings

if TYPE_CHECKING:
    from duckflock.server.guard import QueryGuard
    from duckflock.server.http.app import create_app

__all__ = ["QueryGuard", "ServerSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name not in ("create_app", "QueryGuard"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    require(
        "server", "duckflock.server", "starlette", "uvicorn", "sse_starlette", "prometheus_client"
    )
    from duckflock.server import guard
    from duckflock.server.http import app

    return {"create_app": app.create_app, "QueryGuard": guard.QueryGuard}[name]
