"""``duckflock serve``: open the database, apply the TOML config, run uvicorn.

SIGINT/SIGTERM stop uvicorn gracefully: it stops accepting, then the app's shutdown
commits everything accepted, checkpoints and closes the database; the process exits 0.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from ..database import Database, connect
from .app import ServerSettings, create_app


@dataclass
class ServeConfig:
    """What a duckflock.toml declares: tables (DDL) and analyses."""

    tables: list[str] = field(default_factory=list)
    analyses: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> ServeConfig:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"cannot read config {str(path)!r}: {exc}") from exc
        tables = [t["sql"] if isinstance(t, dict) else t for t in data.get("tables", [])]
        analyses = data.get("analyses", [])
        for i, analysis in enumerate(analyses):
            if not isinstance(analysis, dict) or "name" not in analysis or "sql" not in analysis:
                raise ValueError(f"config: analyses[{i}] needs a name and sql")
        if not all(isinstance(t, str) for t in tables):
            raise ValueError("config: each [[tables]] entry needs sql = '…'")
        return cls(tables=tables, analyses=analyses)

    def apply(self, db: Database) -> None:
        for ddl in self.tables:
            db.execute(ddl)
        for analysis in self.analyses:
            db.analysis(
                analysis["name"],
                analysis["sql"],
                every=analysis.get("every"),
                on_change=bool(analysis.get("on_change", False)),
                min_interval=float(analysis.get("min_interval", 0.1)),
                params=analysis.get("params"),
            )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(info[4][0]).is_loopback
                for info in socket.getaddrinfo(host, None)
            )
        except OSError:
            return False


def prepare(
    database: str, settings: ServerSettings, config: ServeConfig | None, host: str
) -> tuple[Database, Any]:
    """The locked-down database and the app serving it (refuses an open bind)."""
    if settings.token is None and not is_loopback(host):
        raise ValueError(
            f"refusing to listen on {host} without a token: anyone who can reach it could "
            "write and read; pass --token (or bind to 127.0.0.1)"
        )
    db = connect(database)
    try:
        if config is not None:
            config.apply(db)
        db.lock_down()
    except BaseException:
        db.close()
        raise

    def shutdown() -> None:
        db.flush(timeout=60)
        if db.path != ":memory:":
            db.execute("CHECKPOINT")
        db.close()

    return db, create_app(db, settings, on_shutdown=shutdown)


def serve(
    database: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    settings: ServerSettings | None = None,
    config: ServeConfig | None = None,
    log_level: str = "info",
) -> None:
    """Run the server until SIGINT/SIGTERM."""
    settings = settings or ServerSettings()
    _, app = prepare(database, settings, config, host)
    # uvicorn handles SIGINT/SIGTERM while it runs (graceful shutdown), then re-raises the
    # signal under the handlers it found: make those a no-op, so a clean stop exits 0
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _after_shutdown)
    uvicorn.run(app, host=host, port=port, log_level=log_level, lifespan="on")


def _after_shutdown(sig: int, frame: FrameType | None) -> None:
    """The server has already shut down gracefully; nothing left to interrupt."""
