"""Database: one DuckDB connection shared safely by every thread of the process.

The class is put together from one module per family of verbs, over the state they
share (:mod:`~duckflock.database.base`): :mod:`~duckflock.database.statements` (SQL,
cursors, transactions), :mod:`~duckflock.database.inserts` (the write path),
:mod:`~duckflock.database.analyses` (live analyses) and :mod:`~duckflock.database.lake`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import weakref
from pathlib import Path
from typing import Any

from duckflock.core import effects, opening
from duckflock.core.checks import count, flag, seconds
from duckflock.core.cursors import CursorPool
from duckflock.core.faults import no_fault
from duckflock.core.lifecycle import Lifecycle, reaped, weakly
from duckflock.database.analyses import Analyses
from duckflock.database.inserts import Inserts
from duckflock.database.lake import Lake
from duckflock.database.statements import Statements
from duckflock.ingest.intake import Intake
from duckflock.ingest.keys import DEFAULT_MAX_KEYS, DEFAULT_WINDOW, check_max_keys, check_window
from duckflock.lake.connection import LakeOptions, is_lake, redact
from duckflock.lake.connection import prepare as prepare_lake
from duckflock.lake.watch import LakeWatch
from duckflock.live import definitions
from duckflock.live.changes import KEEP_CHANGES
from duckflock.live.plan.plans import DISTINCT_LIMIT
from duckflock.live.scheduler import DEFAULT_TIMEOUT, DEFAULT_WORKERS, MAX_WORKERS, TIMEOUT_FLOOR

__all__ = ["Database", "connect"]

# Databases not closed yet: closed at interpreter exit, before it tears down the objects
# their threads use (DuckDB aborts the process when its objects die under a running
# analysis or writer thread: "terminate called without an active exception")
_OPEN: weakref.WeakSet[Database] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    for db in list(_OPEN):
        with contextlib.suppress(Exception):
            db.close()
    reaped()  # and those dropped unclosed: their closes handed to the reaper


class Database(Statements, Inserts, Analyses, Lake):
    """A DuckDB database that any thread may use without cursor bookkeeping.

    Each thread transparently gets its own DuckDB cursor (what the guide does by hand with
    ``.cursor()``); statements return DuckDB's own result object, so ``fetchall``,
    ``fetchone``, ``df``, ``arrow`` and ``pl`` work as usual. Use :func:`duckflock.connect`
    to make one.
    """

    def __init__(
        self,
        database: str | os.PathLike[str] = ":memory:",
        *,
        read_only: bool = False,
        config: dict[str, Any] | None = None,
        max_queued_rows: int = 500_000,
        max_batch_rows: int = 200_000,
        max_concurrent_analyses: int = DEFAULT_WORKERS,
        analysis_timeout: float = DEFAULT_TIMEOUT,
        restore_analyses: bool = True,
        distinct_limit: int = DISTINCT_LIMIT,
        keep_changes: int = KEEP_CHANGES,
        data_path: str | os.PathLike[str] | None = None,
        lake: LakeOptions | None = None,
        idempotency_window: float = DEFAULT_WINDOW,
        max_idempotency_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        restore = flag(restore_analyses, "restore_analyses")
        self._distinct_limit = count(distinct_limit, "distinct_limit")
        self._keep_changes = count(keep_changes, "keep_changes")
        workers = count(
            max_concurrent_analyses, "max_concurrent_analyses", minimum=1, maximum=MAX_WORKERS
        )
        limit = seconds(analysis_timeout, "analysis_timeout", minimum=TIMEOUT_FLOOR, optional=False)
        assert limit is not None
        if max_queued_rows < 1 or max_batch_rows < 1:
            raise ValueError("max_queued_rows and max_batch_rows must be >= 1")
        self.path = os.fspath(database)
        self.read_only = read_only
        self._max_queued_rows = max_queued_rows
        self._max_batch_rows = max_batch_rows
        self._idempotency_window = check_window(idempotency_window)
        self._max_idempotency_keys = check_max_keys(max_idempotency_keys)
        self._max_concurrent_analyses = workers
        self._analysis_timeout = limit
        self._config = dict(config or {})
        self._replayed = []
        self.is_lake = is_lake(self.path)
        self._shown = redact(self.path) if self.is_lake else self.path
        if not self.is_lake and (data_path is not None or lake is not None):
            raise ValueError("data_path= and lake= are for a 'ducklake:' database only")
        if lake is not None and not isinstance(lake, LakeOptions):
            raise TypeError(f"lake must be a duckflock.LakeOptions, not {type(lake).__name__}")
        self._data_path = data_path
        self._lake_options = lake or LakeOptions()
        self._life = Lifecycle(self._shown)
        self._writer = None
        self._scheduler = None
        if not self.is_lake:  # (a lake's DuckDB is in memory: the catalog is shared)
            opening.claim(self.path, self._life, self._shown)
        try:
            self._connection = self._open()
        except BaseException:
            opening.release(self._life)
            raise
        if not self.is_lake:
            try:  # the file exists now: its inode is claimed too (a hard link to it)
                opening.claim(self.path, self._life, self._shown)
            except BaseException:
                self._connection.close()
                opening.release(self._life)
                raise
        self._cursors = cursors = CursorPool(
            self._connection, prepare_lake if self.is_lake else None
        )
        # names resolve on a cursor of their own: no caller's USE or SET changes them
        self._intake = Intake(self._cursors.new())
        self.fault_hook = no_fault
        self._effects = effects.Watch(self._cursors.new)
        # (a raw cursor's SET is unseen: the one flag of "a raw cursor is out")
        self._settings = effects.Epoch(lambda: cursors.raw_handed_out)
        self._commit_lock = threading.Lock()
        self._lake = None
        if self.is_lake:
            self._lake = LakeWatch(
                self._cursors.new,
                self._lake_options,
                weakly(self._on_lake_change),  # its threads hold this Database weakly
                maintain=not read_only,
            )
            self._life.drop_with(self, self._lake.close)
        self._ledger = definitions.Ledger()
        _OPEN.add(self)
        if restore:
            try:
                self.restore_analyses()
            except BaseException:
                self.close()
                raise


def connect(
    database: str | Path = ":memory:",
    *,
    read_only: bool = False,
    config: dict[str, Any] | None = None,
    max_queued_rows: int = 500_000,
    max_batch_rows: int = 200_000,
    max_concurrent_analyses: int = DEFAULT_WORKERS,
    analysis_timeout: float = DEFAULT_TIMEOUT,
    restore_analyses: bool = True,
    distinct_limit: int = DISTINCT_LIMIT,
    keep_changes: int = KEEP_CHANGES,
    data_path: str | Path | None = None,
    lake: LakeOptions | None = None,
    idempotency_window: float = DEFAULT_WINDOW,
    max_idempotency_keys: int = DEFAULT_MAX_KEYS,
) -> Database:
    """Open (or create) a DuckDB database for use from many threads.

    ``database`` is a file path, or ``":memory:"`` (the default) for an in-memory
    database. ``config`` is passed to DuckDB (e.g. ``{"threads": 4}``).

    Ingest tuning: at most ``max_queued_rows`` accepted-but-uncommitted rows are held
    (producers block beyond that); one commit takes at most ``max_batch_rows`` rows.
    Analyses: at most ``max_concurrent_analyses`` (1 to 64, default 2) refresh at
    once; a run of one is interrupted after ``analysis_timeout`` seconds (0.01 to a
    day, default 60) unless ``analysis(timeout=…)`` says otherwise. The analyses kept
    in the file (every ``analysis()`` on a file keeps its definition) are defined again
    at once, unless ``restore_analyses=False`` (for one-off work on the file). An
    incremental analysis with ``count(DISTINCT …)`` keeps each group's distinct values:
    beyond ``distinct_limit`` values in all (default 1,000,000) it runs in full instead.
    Each analysis keeps the changes of its last ``keep_changes`` versions (default 64,
    and 1,000,000 changed rows at most) for :meth:`Database.changes` readers that resume.

    ``"ducklake:postgres:dbname=… host=…"`` opens a DuckLake with its catalog in
    PostgreSQL and its Parquet files under ``data_path`` (needed when the lake is new),
    which many processes on many machines may write at once; ``"ducklake:<file>"``
    keeps the catalog in a DuckDB file (one process). ``lake`` tunes inlining, the
    snapshot polling, maintenance and retries (:class:`LakeOptions`). Needs
    ``pip install 'duckflock[lake]'``.

    ``insert(…, idempotency_key=…)`` keys are kept ``idempotency_window`` seconds after
    their commit (1 s to 30 days, default a day), and ``max_idempotency_keys`` of them
    at most (default 1,000,000): docs/delivery.md.
    """
    return Database(
        database,
        read_only=read_only,
        config=config,
        max_queued_rows=max_queued_rows,
        max_batch_rows=max_batch_rows,
        max_concurrent_analyses=max_concurrent_analyses,
        analysis_timeout=analysis_timeout,
        restore_analyses=restore_analyses,
        distinct_limit=distinct_limit,
        keep_changes=keep_changes,
        data_path=data_path,
        lake=lake,
        idempotency_window=idempotency_window,
        max_idempotency_keys=max_idempotency_keys,
    )
