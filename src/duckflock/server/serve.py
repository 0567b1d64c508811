"""``duckflock serve``: open the database, apply the TOML config, run uvicorn.

The first SIGINT/SIGTERM stops accepting, interrupts running queries and long polls,
then the app's shutdown commits everything accepted, checkpoints and closes the
database, all within ``shutdown_timeout``: exit status 0 when that finished, 1 when it
could not (a commit or the checkpoint failed, or time ran out). A second signal stops
the process at once (status 1); everything acknowledged is already committed.

uvicorn's HTTP protocol is extended with what uvicorn lacks (:mod:`.connections`): a
deadline for a request's headers (slow-header connections are closed with 408), a cap
on open connections and one per address (more are closed at once), so idle sockets
cannot exhaust file descriptors. One back-off after failed authentication
(:mod:`.backoff`) serves both ports, and every log handler hides secrets
(:mod:`.redaction`).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import LOG_LEVELS

from duckflock.database import Database, connect
from duckflock.errors import DuckflockError
from duckflock.server import redaction
from duckflock.server.auth import tokens_from_config
from duckflock.server.connections import http_protocol
from duckflock.server.http.app import create_app
from duckflock.server.pgwire import PgServer
from duckflock.server.policy import bounded_seconds
from duckflock.server.service import Service
from duckflock.server.settings import (
    PG_CONFIG_KEYS,
    ListenSettings,
    PgSettings,
    ServerSettings,
    default,
)

log = logging.getLogger("duckflock.server")


@dataclass
class ServeConfig:
    """What a duckflock.toml declares: tables (DDL), analyses and tokens with roles."""

    tables: list[str] = field(default_factory=list)
    analyses: list[dict[str, Any]] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)  # token -> role
    pg: dict[str, Any] = field(default_factory=dict)  # [pg]: the Postgres port's options

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
            for key in ("every", "min_interval"):
                if analysis.get(key) is not None:
                    bounded_seconds(analysis[key], f"config: analyses[{i}].{key}", zero_ok=True)
        if not all(isinstance(t, str) for t in tables):
            raise ValueError("config: each [[tables]] entry needs sql = '…'")
        tokens = tokens_from_config(data.get("tokens", []))
        pg = data.get("pg", {})
        if not isinstance(pg, dict):
            raise ValueError("config: [pg] must be a table of options (port = 5433, …)")
        unknown = set(pg) - PG_CONFIG_KEYS
        if unknown:
            raise ValueError(f"config: unknown [pg] options {sorted(unknown)}")
        return cls(tables=tables, analyses=analyses, tokens=tokens, pg=pg)

    def apply_tables(self, db: Database) -> None:
        """The config's DDL (before the lockdown: it may load files)."""
        for ddl in self.tables:
            db.execute(ddl)

    def apply_analyses(self, db: Database, check: Callable[[str], None]) -> None:
        """The config's analyses, each through ``check`` (the statement guard) first."""
        for i, analysis in enumerate(self.analyses):
            try:
                check(analysis["sql"])
            except DuckflockError as exc:
                raise ValueError(f"config: analyses[{i}] ({analysis['name']!r}): {exc}") from exc
            db.analysis(
                analysis["name"],
                analysis["sql"],
                every=analysis.get("every"),
                on_change=bool(analysis.get("on_change", False)),
                min_interval=float(analysis.get("min_interval", 0.1)),
                params=analysis.get("params"),
                defined_by="config",
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


class Shutdown:
    """The outcome of the app's shutdown: finished, and without error?"""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.ok = False
        self.error: str | None = None


KILL_AFTER_COMMITS = "DUCKFLOCK_TEST_KILL_AFTER_COMMITS"


def _kill_after_commits(db: Database) -> None:
    """The fault tests' seam (tests/test_exactly_once.py): with ``$KILL_AFTER_COMMITS``
    = N, the process kills itself (SIGKILL) right after its Nth commit is durable and
    before any caller is told — the window an exactly-once ingest must survive."""
    raw = os.environ.get(KILL_AFTER_COMMITS)
    if not raw:
        return
    left = [int(raw)]

    def hook(point: str) -> None:
        if point == "committed":
            left[0] -= 1
            if left[0] <= 0:
                os.kill(os.getpid(), signal.SIGKILL)

    db.writer().fault_hook = hook


def prepare(
    database: str,
    settings: ServerSettings,
    config: ServeConfig | None,
    host: str,
    *,
    shutdown_timeout: float = default(ListenSettings, "shutdown_timeout"),
    pg: PgSettings | None = None,
) -> tuple[Database, Any]:
    """The locked-down database and the app serving it (refuses an open bind); with
    ``pg``, the Postgres port too: both protocol layers over one serving service, so
    one policy and one pool of query slots."""
    if config is not None and config.tokens:
        settings = ServerSettings(
            **{**settings.__dict__, "tokens": {**config.tokens, **settings.tokens}}
        )
    if not settings.all_tokens() and not is_loopback(host):
        raise ValueError(
            f"refusing to listen on {host} without a token: anyone who can reach it could "
            "write and read; pass --token (or bind to 127.0.0.1)"
        )
    # kept analyses are defined only once the lockdown holds and each passed the same
    # statement guard as PUT /v1/analyses: the file may have been edited offline
    db = connect(database, restore_analyses=False)
    _kill_after_commits(db)
    outcome = Shutdown(shutdown_timeout)
    pg_server = None
    try:
        if config is not None:
            config.apply_tables(db)
        db.lock_down()
        service = Service(db, settings)
        check = service.guard.check  # the one guard every protocol's statements pass
        if config is not None:
            config.apply_analyses(db, check)
        db.restore_analyses(check)
        if pg is not None:
            pg_server = PgServer(db, None, pg, service=service).start()
    except BaseException:
        db.close()
        raise

    def finish() -> None:
        if pg_server is not None:  # no statement starts once the flush begins
            pg_server.stop(timeout=min(5.0, shutdown_timeout / 3))
        db.flush(timeout=shutdown_timeout)
        if db.path != ":memory:" and not db.is_lake:  # a lake's CHECKPOINT is maintenance
            db.execute("CHECKPOINT")
        db.close()

    def shutdown() -> None:
        """``finish`` within the time limit, in a daemon thread (a hung checkpoint must
        not hang the process)."""
        errors: list[BaseException] = []

        def run() -> None:
            try:
                finish()
            except BaseException as exc:  # reported as the exit status, not raised
                errors.append(exc)

        worker = threading.Thread(target=run, name="duckflock-shutdown", daemon=True)
        worker.start()
        worker.join(shutdown_timeout)
        if worker.is_alive():
            outcome.error = f"shutdown did not finish within {shutdown_timeout:g} s"
        elif errors:
            outcome.error = f"shutdown failed: {type(errors[0]).__name__}: {errors[0]}"
        else:
            outcome.ok = True
        if outcome.error:
            log.error("%s", outcome.error)

    app = create_app(db, service=service, on_shutdown=shutdown)
    app.state.shutdown = outcome
    app.state.pg = pg_server
    return db, app


class _Server(uvicorn.Server):
    """First signal: graceful stop, interrupting queries and waits. Second: exit now."""

    def __init__(self, config: uvicorn.Config, app: Any) -> None:
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            log.error("second signal: stopping now, without waiting for the shutdown")
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        super().handle_exit(sig, frame)
        self.app.state.begin_shutdown()


def serve(
    database: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    settings: ServerSettings | None = None,
    config: ServeConfig | None = None,
    log_level: str = "info",
    shutdown_timeout: float = default(ListenSettings, "shutdown_timeout"),
    header_timeout: float = default(ListenSettings, "header_timeout"),
    max_header_bytes: int = default(ListenSettings, "max_header_bytes"),
    max_connections: int = default(ListenSettings, "max_connections"),
    max_connections_per_peer: int = default(ListenSettings, "max_connections_per_peer"),
    pg: PgSettings | None = None,
) -> int:
    """Run the server until SIGINT/SIGTERM; the exit status (0: clean shutdown). With
    ``pg``, the Postgres wire protocol is served on its port as well."""
    settings = settings or ServerSettings()
    ListenSettings(  # each checked: ValueError naming it
        shutdown_timeout=shutdown_timeout,
        header_timeout=header_timeout,
        max_header_bytes=max_header_bytes,
        max_connections=max_connections,
        max_connections_per_peer=max_connections_per_peer,
    )
    _, app = prepare(database, settings, config, host, shutdown_timeout=shutdown_timeout, pg=pg)
    # uvicorn re-raises the signal it handled once it is done, under the handlers it
    # found: make those a no-op, so the exit status is ours
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _after_shutdown)
    uv_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        http=http_protocol(
            header_timeout=header_timeout,
            max_header_bytes=max_header_bytes,
            max_connections=max_connections,
            per_peer=max_connections_per_peer,
        ),
        timeout_keep_alive=5,
        # the access log's arguments are built per request even when its level is off
        access_log=LOG_LEVELS.get(log_level.lower(), logging.INFO) <= logging.INFO,
        server_header=False,  # no "server: uvicorn" on every answer
        # the peer is the socket's: X-Forwarded-For (trusted from 127.0.0.1 by uvicorn's
        # default) would let any local process, or a client whose proxy passes the header
        # on, pick a new address each try and escape the back-off and per-peer limits
        proxy_headers=False,
        timeout_graceful_shutdown=max(1, int(shutdown_timeout // 3)),
    )
    # uvicorn's handlers exist now: every one of them hides secrets, the known tokens too
    redaction.install(app.state.service.settings.all_tokens())
    if app.state.pg is not None:  # uvicorn's logging is configured now: say it beside its own
        where = f"{host}:{app.state.pg.port}"
        logging.getLogger("uvicorn.error").info("Postgres protocol on %s", where)
    server = _Server(uv_config, app)
    server.run()
    outcome: Shutdown = app.state.shutdown
    return 0 if outcome.ok else 1


def _after_shutdown(sig: int, frame: FrameType | None) -> None:
    """The server has already shut down gracefully; nothing left to interrupt."""
