"""The serving service: one policy for every protocol ``duckflock serve`` speaks.

The HTTP app (:mod:`.app`) and the Postgres port (:mod:`.pgwire`) are thin protocol
layers over one :class:`Service`: they parse, ask it, and render. It holds what must be
the same whichever way a client comes in —

- **who**: the tokens and their roles, the name of a client (:meth:`client_key`:
  its address and its token), which keys its share of the slots on both protocols, and
  the one back-off after failed authentication (:mod:`.backoff`) both consult;
- **what may run**: the one :class:`~.guard.QueryGuard` over the locked-down database
  (every read surface's statement check and interruptible cursor) and the statement
  path of the admin role;
- **how much**: one pool of query slots (``concurrency`` in all, ``per_client`` for one
  client, waits bounded by ``queue_timeout``) taken by an HTTP query and a Postgres
  statement alike, and the time, row and byte caps;
- the analyses API (definitions checked by the same guard), health and metrics, and the
  shutdown that interrupts everything running on every protocol at once.

A limit written here applies to both protocols.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import duckdb
import pyarrow as pa

from duckflock import __version__
from duckflock.database import Database
from duckflock.errors import DuckflockError, RequestError
from duckflock.ingest.stats import WriterState
from duckflock.server.auth import Tokens
from duckflock.server.backoff import Backoff
from duckflock.server.guard import (
    BatchRows,
    QueryGuard,
    QueryOutcome,
    RunningQuery,
    run_statement,
)
from duckflock.server.limits import Release, Slots
from duckflock.server.metrics import Metrics
from duckflock.server.policy import analysis_options
from duckflock.server.settings import ServerSettings

LOCAL = "local"  # the client name of a caller with no address (in-process ASGI)


class Service:
    """The policy and state of one server, shared by its protocols.

    Owner: ``serve.prepare`` (or ``create_app``/``PgServer`` given a bare database) makes
    one; the event loop and every Postgres connection thread call it at once, so what it
    holds is immutable or thread-safe (:class:`~.limits.Slots`, the guard, the metrics
    registry); ``stopping`` is set once by :meth:`stop`.
    """

    def __init__(self, db: Database, settings: ServerSettings | None = None) -> None:
        self.db = db
        self.settings = settings = settings or ServerSettings()
        self.tokens = Tokens(settings.all_tokens())
        self.guard = QueryGuard(db, row_cap=settings.query_row_cap, timeout=settings.query_timeout)
        self.queries = Slots(
            total=settings.concurrency,
            per_client=settings.per_client,
            queue_timeout=settings.queue_timeout,
            what="query",
        )
        self.metrics = Metrics(db)
        self.metrics.gauge(
            "duckflock_query_slots_busy",
            "Queries holding a slot (HTTP and Postgres together)",
            lambda: self.queries.busy,
        )
        self.metrics.gauge(
            "duckflock_query_slots_waiting",
            "Queries waiting for a slot (HTTP and Postgres together)",
            lambda: self.queries.waiting,
        )
        self.metrics.gauge(
            "duckflock_query_slots_peak",
            "The most queries that held a slot at once since the server started",
            lambda: self.queries.peak,
        )
        # the failed-authentication back-off (per address and token), one for both
        # protocols: each waits it out before it checks a token, and counts a wrong one
        self.backoff = Backoff()
        self.metrics.watch_backoff(self.backoff)
        self.stopping = threading.Event()
        self._on_stop: list[Callable[[], None]] = []  # protocols' own wake-ups at shutdown
        self._on_stop_lock = threading.Lock()  # guards _on_stop

    # -- who -------------------------------------------------------------------------------------

    @staticmethod
    def client_key(peer: str | None, token: int | None) -> str:
        """The name of one client, the same over HTTP and Postgres: its address, and the
        token it authenticated with (its index; None: no tokens are configured)."""
        where = peer or LOCAL
        return where if token is None else f"{where}/token{token}"

    # -- queries ---------------------------------------------------------------------------------

    def deadline(self, arrived: float | None = None) -> float:
        """The deadline of a query that arrived at ``arrived`` (``time.monotonic()``; now
        when not given): the query time limit counts from arrival."""
        return (time.monotonic() if arrived is None else arrived) + self.settings.query_timeout

    def take_slot(self, client: str, deadline: float | None = None) -> Release:
        """A query slot for ``client``, waited for on this thread (Postgres)."""
        return self.queries.take(client, deadline)

    def hold_slot(
        self, client: str, deadline: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """A query slot for ``client`` as an async context manager (HTTP)."""
        return self.queries.hold(client, deadline)

    def open_query(
        self,
        sql: str,
        params: Any,
        deadline: float,
        prepare: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
        batch_rows: BatchRows = 2048,
    ) -> RunningQuery:
        """One guarded SELECT, started; the caller reads its batches and closes it."""
        return self.guard.open(
            sql, params, deadline=deadline, prepare=prepare, batch_rows=batch_rows
        )

    def run_query(self, sql: str, params: Any, deadline: float | None = None) -> QueryOutcome:
        """One guarded SELECT run to the end, at most the row cap."""
        return self.guard.run(sql, params, deadline=deadline)

    def run_statement(
        self, sql: str, params: Any, deadline: float, out: list[pa.RecordBatch]
    ) -> pa.Schema:
        """DDL or DML (the admin role) in a transaction of its own, at most the row cap
        of what it returns put into ``out``."""
        return run_statement(self.db, sql, params, deadline, self.settings.query_row_cap, out)

    def scrub(self, text: str) -> str:
        """An error text without the database's paths (for any client)."""
        return self.guard.scrub(text)

    # -- analyses --------------------------------------------------------------------------------

    def analysis_options(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``db.analysis`` keyword arguments from a definition, checked: an analysis runs
        under the server's query time limit, or a shorter one it asks for."""
        settings = self.settings
        options = analysis_options(payload, min_every=settings.min_every)
        if options["timeout"] is None:
            options["timeout"] = settings.query_timeout
        elif options["timeout"] > settings.query_timeout:
            raise RequestError(
                f'"timeout" may be at most the server\'s query time limit, '
                f"{settings.query_timeout:g} s, not {options['timeout']!r}"
            )
        return options

    def define_analysis(
        self, name: str, options: dict[str, Any], *, defined_by: str
    ) -> dict[str, Any]:
        """Define (or replace) analysis ``name`` after the statement guard's check, kept
        with who defined it; its status (blocking: run it in a worker thread holding a
        query slot)."""
        self.guard.check(options["sql"])  # the same statement guard as every query
        try:
            self.db.analysis(name, **options, defined_by=defined_by)
        except DuckflockError:
            raise
        except (TypeError, ValueError) as exc:  # a bad option value, in words
            raise RequestError(str(exc)) from exc
        return next(a for a in self.db.analyses() if a["name"] == name)

    # -- health ----------------------------------------------------------------------------------

    def ingest_refusal(self, *, thorough: bool = False) -> str | None:
        """Why ingest cannot be accepted now, or None when it can (see :func:`ingest_state`);
        a server that is stopping is not ready either."""
        if thorough and self.stopping.is_set():
            return "the server is shutting down"
        return ingest_state(self.db, thorough=thorough)

    def health(self) -> dict[str, Any]:
        """Liveness and readiness: ``status`` is "ok" or "not ready" (with a reason)."""
        reason = self.ingest_refusal(thorough=True)
        payload: dict[str, Any] = {
            "status": "ok" if reason is None else "not ready",
            "version": __version__,
            "closed": self.db.closed,
        }
        if reason is not None:
            payload["reason"] = reason
        # kept definitions refused at start (the guard, or no longer binding): ready,
        # but an admin should look (GET /v1/analyses shows them; DELETE drops them)
        refused = [a for a in self.db.analyses() if a["refused"]]
        if refused:
            payload["refused_analyses"] = [
                {"name": a["name"], "reason": self.guard.scrub(a["refused"])} for a in refused
            ]
        return payload

    # -- the end ---------------------------------------------------------------------------------

    def on_stop(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` (from any thread) when the server begins to stop: a protocol's
        own waits (long polls, event streams) end with it."""
        with self._on_stop_lock:
            self._on_stop.append(wake)

    def stop(self) -> None:
        """Begin the shutdown, on every protocol at once (any thread): queued queries are
        refused, running ones interrupted, nothing new starts."""
        self.stopping.set()
        self.queries.stop()  # first: queued ones must not start
        self.guard.stop()
        with self._on_stop_lock:
            wakes = list(self._on_stop)
        for wake in wakes:
            wake()


def ingest_state(db: Database, *, thorough: bool = False) -> str | None:
    """Why ingest cannot be accepted now, or None when it can.

    The one place that reads the write path's health. ``thorough`` (health checks) also
    asks ``db.stats()``: a write path whose last commit failed on storage (``"failed"``)
    or that is reopening the database (``"recovering"``) is not ready. The per-request
    check stays cheap: a closed database, or a writer that died or is closing.
    """
    if db.closed:
        return "the database is closed"
    if thorough:
        stats = db.stats()
        if stats.state is not WriterState.OK:
            why = f": {stats.last_storage_error}" if stats.last_storage_error else ""
            return f"the write path is {stats.state}{why}"
    writer = getattr(db, "_writer", None)  # the library has no public word for these yet
    if writer is None:
        return None
    if getattr(writer, "_broken", None) is not None:
        return "the writer died; ingest fails until the server restarts"
    if getattr(writer, "_closing", False):
        return "the writer is closing"
    return None
