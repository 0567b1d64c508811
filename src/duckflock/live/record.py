"""One registered analysis, split by who writes each part.

An :class:`Analysis` is four records, each with one owner:

- :class:`Spec` — what ``db.analysis(…)`` was called with. Immutable: any thread reads it.
- :class:`Schedule` — when it runs and what it published. Owner: the scheduler
  (:mod:`duckflock.live.scheduler`); every field is read and written under the
  registry's lock (:class:`duckflock.live.registry.Registry`), by the scheduler thread,
  the analysis thread finishing a run, and API callers (``refresh()``, ``result()``).
- :class:`Changes` — what the writer reported since the state was taken (appended and
  deleted rows, taints, "plan again"). Written by the change notices (the writer's
  thread, DDL callers) and taken by the refresher, always under the registry's lock.
- :class:`State` — the plan and the kept incremental state. Owner: the analysis thread
  running it (one run per analysis at a time); ``shape`` is also read by the notices,
  so the refresher replaces it under the registry's lock. ``mode``/``reason`` are read
  by ``status()`` as a snapshot (one attribute each).

The cursor is in :class:`State`: the running refresher uses it; the scheduler
interrupts it at any time (DuckDB allows that from another thread) and replaces it,
under the lock, only while no run holds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

import duckdb
import pyarrow as pa

from duckflock.live.changes import ChangeLog, Touched
from duckflock.live.fold.segments import Slot
from duckflock.live.fold.touch import Kept
from duckflock.live.marks import Carried
from duckflock.live.plan.incremental import Shape
from duckflock.live.results import Mailbox, Mode, Result


class Stop(Enum):
    """Why a run in progress was told to stop."""

    TIMEOUT = "timeout"  # past its time limit: it publishes a QueryTimeoutError
    DROPPED = "dropped"  # the others publish nothing
    REPLACED = "replaced"
    CLOSING = "closing"


class Cancelled(Exception):
    """The run was cancelled between two statements (its ``stop`` says why)."""


@dataclass(frozen=True)
class Spec:
    """An analysis as defined: name, SQL and options, checked by the scheduler."""

    name: str
    sql: str
    params: Any
    every: float | None
    on_change: bool
    min_interval: float
    timeout: float  # seconds one run may take before it is interrupted


@dataclass(eq=False)
class Schedule:
    """When the analysis runs next, the run in progress, and what it published.
    Guarded by the registry's lock."""

    runs: int = 0  # runs dispatched so far
    last_started: float | None = None  # clock.monotonic() seconds
    dirty_at: float | None = None
    running: bool = False
    forced: bool = False  # refresh() asked for a run now
    dropped: bool = False
    stale_cursor: bool = False  # the database was reopened while it ran: new cursor after
    # the run in progress: when the scheduler interrupts it next, and why it was stopped
    deadline: float = 0.0
    stop: Stop | None = None
    # published: the newest result, its version, the run it came from, who reads it
    version: int = 0
    result: Result | None = None
    published_run: int = 0
    mailboxes: set[Mailbox] = field(default_factory=set)
    history: ChangeLog = field(default_factory=ChangeLog)  # the last versions' changes

    def due_at(self, spec: Spec) -> float | None:
        """When the analysis should next run (monotonic seconds), or None."""
        if self.running or self.dropped:
            return None
        if self.last_started is None or self.forced:
            return 0.0
        times = []
        if spec.every is not None:
            times.append(self.last_started + spec.every)
        if spec.on_change and self.dirty_at is not None:
            times.append(max(self.dirty_at, self.last_started + spec.min_interval))
        return min(times) if times else None

    def mark_dirty(self, spec: Spec, now: float) -> None:
        """A change it reads: an ``on_change`` analysis becomes due (debounced)."""
        if spec.on_change and self.dirty_at is None:
            self.dirty_at = now


@dataclass(eq=False)
class Changes:
    """The writer's reports since the incremental state was taken. Guarded by the
    registry's lock: the notices append, the refresher takes (:meth:`take`)."""

    collecting: bool = False  # the state exists and deltas are being kept for it
    deltas: list[pa.Table] = field(default_factory=list)  # appended rows
    delta_rows: int = 0
    delta_watermark: int = 0  # the writer commit the deltas reach
    removed: list[pa.Table] = field(default_factory=list)  # deleted rows (retention)
    removed_rows: int = 0
    tainted: str | None = None  # why the next run rebuilds (the first reason shown)
    reinspect: bool = False  # a write outside db.insert (DDL too): plan the SQL again

    def taint(self, why: str) -> None:
        """Drop the deltas: the next run rebuilds. The first reason since the last
        rebuild is the one shown."""
        self.tainted = self.tainted or why
        self.collecting = False
        self.clear()

    def clear(self) -> None:
        self.deltas, self.delta_rows = [], 0
        self.removed, self.removed_rows = [], 0

    def take(self) -> tuple[list[pa.Table], list[pa.Table], int]:
        """(appended, deleted, watermark), leaving none behind."""
        taken = self.deltas, self.removed, self.delta_watermark
        self.clear()
        return taken

    def put_back(self, deltas: list[pa.Table], removed: list[pa.Table]) -> None:
        """Rows taken by a refresh that did not fold them, before whatever arrived since."""
        self.deltas[:0] = deltas
        self.delta_rows += sum(d.num_rows for d in deltas)
        self.removed[:0] = removed
        self.removed_rows += sum(r.num_rows for r in removed)


@dataclass(eq=False)
class State:
    """The plan and the kept state. Owner: the analysis thread of the run."""

    shape: Shape
    cursor: duckdb.DuckDBPyConnection
    state: pa.Table | None = None  # incremental: the kept partial aggregates
    last_table: pa.Table | None = None  # the result the state gave: reused when nothing new
    window_now: datetime | None = None  # the instant the last window result is at
    carried: Carried | None = None  # what the last window refresh left for the next
    fast: bool = True  # the pyarrow fold may be used (see Plan.arrow)
    touched: Touched | None = None  # the groups the last run changed (None: any)
    snapshot: int | None = None  # on a lake: the snapshot the state describes
    # the result settings the state is built under, read at this settings epoch
    settings: dict[str, str] | None = None
    settings_epoch: int | None = None
    kept: Kept | None = None  # every group's outputs, for folds of touched groups
    segments: Slot = field(default_factory=Slot)  # floating sums per segment (retention)
    mode: Mode | None = None  # how the last run ran, and why
    reason: str = ""


@dataclass(eq=False)
class Analysis:
    """One registered analysis: its spec, schedule, changes and state."""

    spec: Spec
    schedule: Schedule
    changes: Changes
    state: State

    @property
    def name(self) -> str:
        return self.spec.name

    def check(self) -> None:
        """Raise :class:`Cancelled` when the run was told to stop (between two statements).
        One attribute read: safe without the lock."""
        stop = self.schedule.stop
        if stop is not None:
            raise Cancelled(stop.value)

    def status(self) -> dict[str, Any]:
        """The row of ``db.analyses()`` (caller holds the registry's lock)."""
        spec, schedule, state = self.spec, self.schedule, self.state
        result = schedule.result
        shape = state.shape
        return {
            "name": spec.name,
            "sql": spec.sql,
            "every": spec.every,
            "on_change": spec.on_change,
            "min_interval": spec.min_interval,
            "timeout": spec.timeout,
            "tables": sorted(t.display() for t in shape.tables),
            "version": schedule.version,
            "last_refresh": result.refreshed_at if result else None,
            "duration": result.duration if result else None,
            "rows": result.table.num_rows if result else None,
            "error": result.error.message if result and result.error else None,
            "mode": state.mode or (Mode.INCREMENTAL if shape.plan else Mode.FULL),
            "reason": state.reason or shape.reason,
            "incremental": shape.plan is not None,
            "running": schedule.running,
            "lake_snapshot": state.snapshot,
        }
