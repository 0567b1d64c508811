"""What every verb family of a Database shares: its state, its life, and the wiring
between its write path, its analyses and its lake.

The verbs live in mixins over :class:`Base` (``statements``, ``inserts``, ``analyses``,
``lake``) and :class:`duckflock.database.Database` puts them together. Mixins rather
than collaborator objects: every verb family uses the same lifecycle, cursor pool and
the two threads started lazily under one lock (the writer on the first insert, the
scheduler on the first analysis), and each family calls into the others (a commit
notifies the analyses, an analysis changes what the writer captures); collaborators
would need back-references to one another. The state is declared once, here, with
who guards it.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType
from typing import Any, Self

import duckdb

from duckflock.core import effects, opening
from duckflock.core.cursors import CursorPool
from duckflock.core.faults import FaultHook
from duckflock.core.lifecycle import Lifecycle
from duckflock.core.names import Identity
from duckflock.errors import StorageError
from duckflock.ingest.intake import Intake
from duckflock.ingest.writer import Writer
from duckflock.lake.connection import LakeOptions, open_lake
from duckflock.lake.watch import LakeWatch
from duckflock.live import definitions
from duckflock.live.scheduler import Scheduler

CLOSE_GRACE = 5.0  # seconds close() lets running statements finish before interrupting


class Base:
    """The state of one Database. Set up by ``Database.__init__``."""

    path: str
    read_only: bool
    is_lake: bool
    # the test seam: called at named points of a statement's run ("ran", and
    # retention's "deleted", "committed", "handed"), and before the capture set the
    # analyses publish reaches the writer ("capture"); a test raises there to simulate a
    # Ctrl-C, or waits to widen a race (the writer has its own: Writer.fault_hook)
    fault_hook: FaultHook
    _shown: str  # what messages and repr() show: a lake's password redacted
    _config: dict[str, Any]
    _data_path: str | os.PathLike[str] | None
    _lake_options: LakeOptions
    _max_queued_rows: int
    _max_batch_rows: int
    _idempotency_window: float  # seconds an idempotency key is kept (ingest/keys.py)
    _max_idempotency_keys: int
    _max_concurrent_analyses: int
    _analysis_timeout: float
    _distinct_limit: int
    _keep_changes: int  # versions of changes each analysis keeps
    _replayed: list[str]  # settings to apply again if the file is reopened
    _life: Lifecycle  # closed or not, statements running; its guard also guards
    _writer: Writer | None  # started on the first insert (under _life.guard)
    _scheduler: Scheduler | None  # started on the first analysis (under _life.guard)
    _connection: duckdb.DuckDBPyConnection
    _cursors: CursorPool
    _intake: Intake  # names of tables to insert into, resolved on a cursor of its own
    _effects: effects.Watch  # global settings and the catalog, read around SET and DDL
    _settings: effects.Epoch  # moved around every statement that may change a setting
    # held by the writer around each commit and its notice; exists before the writer so
    # that an analysis pinning a snapshot never races the writer's creation
    _commit_lock: threading.Lock
    _lake: LakeWatch | None  # the lake's snapshot poller and maintenance (None: no lake)
    _ledger: definitions.Ledger  # who defined each analysis; kept ones not defined again

    # -- opening and closing -----------------------------------------------------------

    def _open(self) -> duckdb.DuckDBPyConnection:
        if self.is_lake:
            return open_lake(
                self.path,
                data_path=self._data_path,
                options=self._lake_options,
                read_only=self.read_only,
                config=self._config,
            )
        return opening.open_connection(self.path, read_only=self.read_only, config=self._config)

    def _reopen(self) -> None:
        """DuckDB invalidated the database (a checkpoint failed on a full disk): close
        every cursor and open the file again. Called by the writer, between batches."""
        if self.path in ("", ":memory:") or self.path.startswith(":memory:"):
            raise StorageError("an in-memory database cannot be reopened: its data is gone")
        self._life.check()

        def connect() -> duckdb.DuckDBPyConnection:
            connection = self._open()
            try:
                for statement in self._replayed:  # lock_down() holds for the new one too
                    connection.execute(statement)
            except BaseException:
                connection.close()
                raise
            self._connection = connection
            return connection

        self._cursors.reconnect(connect)
        # the intake's own cursor was closed with the rest: a new one, new cursor
        self._intake = Intake(self._cursors.new())
        self._effects = effects.Watch(self._cursors.new)
        self._settings.move()  # the new instance's settings are the configuration's
        scheduler = self._scheduler
        if scheduler is not None:
            scheduler.notices.reopen()  # new cursors; incremental states rebuilt

    @property
    def closed(self) -> bool:
        return self._life.closed

    def close(self) -> None:
        """Close every cursor and the connection. Idempotent; safe from any thread.

        Running analyses are interrupted at once (their results are not published);
        inserts accepted before the call are committed; other statements already
        running get a few seconds to finish, then are interrupted. Any use afterwards,
        from any thread, raises :class:`ClosedError`.
        """
        if not self._life.close():
            return
        try:
            # no writer or scheduler starts once closed (both start under the guard)
            writer, scheduler = self._writer, self._scheduler
            if self._lake is not None:
                self._lake.close()  # interrupts a maintenance run
            if scheduler is not None:
                # first: interrupting analyses frees the cores for the writer's last commits
                scheduler.close()  # ends watchers and subscriptions cleanly
            if writer is not None:
                writer.close()  # commits everything accepted before close()
            if not self._life.drain(CLOSE_GRACE):
                self._connection.interrupt()
            self._cursors.close_all()
            self._connection.close()
        finally:
            opening.release(self._life)  # another Database may open the file now

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self._life)

    @property
    def open_cursors(self) -> int:
        """How many DuckDB cursors are open now: one per live thread that used this
        Database, plus explicit ones."""
        return self._cursors.open_count

    # -- the wiring between the writer, the analyses and the lake ----------------------

    def _wrote(self, why: str, *, replan: bool = True) -> None:
        """A statement that may have written ran outside db.insert (``why`` names it);
        ``replan``: it may have changed the catalog too."""
        scheduler = self._scheduler
        if scheduler is not None:
            scheduler.notices.raw_write(why, replan=replan)

    def _on_commit(
        self, seq: int, tables: set[Identity], stored: list[tuple[Identity, Any]]
    ) -> None:
        scheduler = self._scheduler
        if scheduler is None:
            return
        try:
            scheduler.notices.commit(seq, tables, stored)
        except Exception:
            scheduler.notices.lost()  # rebuild incremental states rather than miss rows
            raise

    def _schema_changed(self) -> None:
        """The writer saw a table's columns change: names resolve again."""
        self._intake.invalidate()  # through self: _reopen replaces the intake

    def _on_lake_change(self) -> None:
        """The lake's snapshot moved (any process committed): every analysis may be
        stale; incremental ones read what changed from the lake's feed."""
        scheduler = self._scheduler
        if scheduler is not None:
            scheduler.notices.lake_moved()

    def _committed_seq(self) -> int:
        writer = self._writer
        return writer.committed_seq if writer is not None else 0

    def _on_capture_change(self, tables: frozenset[Identity]) -> None:
        self.fault_hook("capture")
        writer = self._writer
        if writer is not None:
            # DuckLake refuses INSERT … RETURNING, and other processes' rows are never
            # handed over anyway: on a lake, analyses read rows from its change feed
            writer.capture = frozenset() if self.is_lake else tables
