"""The HTTP server: ``create_app(db)`` for any ASGI host, ``duckflock serve`` to run it."""

from .._extras import require

require("server", "duckflock.server", "starlette", "uvicorn", "sse_starlette", "prometheus_client")

from .app import ServerSettings, create_app  # noqa: E402  (after the check naming the extra)
from .guard import QueryGuard  # noqa: E402

__all__ = ["QueryGuard", "ServerSettings", "create_app"]
