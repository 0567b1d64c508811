"""The HTTP server: ``create_app(db)`` for any ASGI host, ``duckflock serve`` to run it."""

from .app import ServerSettings, create_app
from .guard import QueryGuard

__all__ = ["QueryGuard", "ServerSettings", "create_app"]
