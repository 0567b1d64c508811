"""The lake's two background threads: the snapshot poller and scheduled maintenance.

Other processes commit into the lake without telling this one, so
``duckflock-lake-poll`` reads the catalog's latest snapshot id every ``poll_interval``
seconds and, when it moved, tells the Database (every analysis becomes dirty:
``on_change`` analyses refresh; incremental ones read what changed from the lake's
change feed, :mod:`duckflock.lake.feed`).

Every commit is a snapshot, and without data inlining a Parquet file, so
``duckflock-lake-maintenance`` runs the configured steps every ``maintenance_interval``
seconds: flush inlined rows into Parquet, merge adjacent small files, expire old
snapshots, delete the files nothing references any more. A failing step (another
process maintaining at the same moment, the catalog away) is logged and recorded in
:meth:`LakeWatch.state`; the thread goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import duckdb

from duckflock.lake.connection import (
    CATALOG,
    STEPS,
    LakeOptions,
    data_files,
    redact,
    snapshot_id,
)
from duckflock.lake.listing import Catalog

log = logging.getLogger("duckflock")
_JOIN = 10.0  # seconds close() waits for each thread


class LakeWatch:
    """Polls the snapshot id and maintains the lake, on cursors of its own."""

    def __init__(
        self,
        new_cursor: Callable[[], duckdb.DuckDBPyConnection],
        options: LakeOptions,
        on_change: Callable[[], None],
        *,
        maintain: bool,
    ) -> None:
        self._new_cursor = new_cursor
        self._options = options
        self._on_change = on_change
        self._stop = threading.Event()
        # guards the figures below and _maintaining; held only to read or write them
        self._lock = threading.Lock()
        self.snapshot: int | None = None
        self.polls = 0
        self.changes = 0  # times the snapshot id moved
        self.poll_error: str | None = None
        self.maintenance_runs = 0
        self.maintenance_failures = 0
        self.maintenance_error: str | None = None
        self.last_maintenance: dict[str, Any] | None = None
        # held by whoever runs maintenance (the thread or db.maintain()): one at a time
        self._maintenance_lock = threading.Lock()
        self._maintaining = False
        self._cursor: duckdb.DuckDBPyConnection | None = None  # maintenance's, to interrupt
        self._threads = [threading.Thread(target=self._poll, name="duckflock-lake-poll")]
        if maintain and options.maintenance_interval is not None:
            self._threads.append(
                threading.Thread(target=self._maintain_loop, name="duckflock-lake-maintenance")
            )
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    # -- polling -----------------------------------------------------------------------

    def _poll(self) -> None:
        # its own kept catalog connection (the analyses' reads have theirs), where the
        # catalog is PostgreSQL's: one statement a look, not a DuckLake transaction's six
        catalog = Catalog(CATALOG)
        try:
            self._poll_with(catalog)
        finally:
            catalog.session.close()

    def _poll_with(self, catalog: Catalog) -> None:
        cursor: duckdb.DuckDBPyConnection | None = None
        while not self._stop.is_set():
            try:
                if cursor is None:
                    cursor = self._new_cursor()
                latest = catalog.latest(cursor)
                if latest is None:
                    latest = snapshot_id(cursor)
                with self._lock:
                    moved = self.snapshot is not None and latest != self.snapshot
                    self.snapshot = latest
                    self.polls += 1
                    self.poll_error = None
                    if moved:
                        self.changes += 1
                if moved:
                    self._on_change()
            except Exception as exc:  # the catalog away, or closing: record, go on
                with self._lock:
                    self.poll_error = redact(str(exc).splitlines()[0])
                if isinstance(exc, RuntimeError):  # the cursor pool closed
                    return
            self._stop.wait(self._options.poll_interval)

    # -- maintenance -------------------------------------------------------------------

    def _maintain_loop(self) -> None:
        interval = self._options.maintenance_interval
        assert interval is not None
        while not self._stop.wait(interval):
            try:
                self.maintain()
            except Exception as exc:  # recorded by maintain(); the thread goes on
                log.warning("lake maintenance failed: %s", exc)

    def maintain(self, steps: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Run the maintenance ``steps`` (default: the configured ones) now; returns
        what was done: data files before and after, seconds, the steps' errors."""
        chosen = self._options.maintenance if steps is None else steps
        unknown = set(chosen) - set(STEPS)
        if unknown:
            raise ValueError(f"maintenance steps are {sorted(STEPS)}, not {sorted(unknown)}")
        with self._maintenance_lock:
            cursor = self._new_cursor()
            with self._lock:
                self._maintaining = True
                self._cursor = cursor
            started = time.monotonic()
            errors: dict[str, str] = {}
            try:
                before = data_files(cursor)
                for step in chosen:
                    if self._stop.is_set():
                        break
                    try:
                        if step in ("expire", "cleanup"):
                            cursor.execute(STEPS[step], [self._options.expire_older_than])
                        else:
                            cursor.execute(STEPS[step])
                        cursor.fetchall()
                    except duckdb.Error as exc:
                        errors[step] = redact(str(exc).splitlines()[0])
                after = data_files(cursor)
            except duckdb.Error as exc:
                errors["files"] = redact(str(exc).splitlines()[0])
                before = after = -1
            finally:
                with self._lock:
                    self._maintaining = False
                    self._cursor = None
                cursor.close()
            report = {
                "at": datetime.now(UTC).isoformat(),
                "steps": list(chosen),
                "seconds": round(time.monotonic() - started, 3),
                "files_before": before,
                "files_after": after,
                "errors": errors,
            }
            with self._lock:
                self.maintenance_runs += 1
                self.last_maintenance = report
                if errors:
                    self.maintenance_failures += 1
                    self.maintenance_error = "; ".join(f"{k}: {v}" for k, v in errors.items())
                else:
                    self.maintenance_error = None
        if errors:
            log.warning("lake maintenance: %s", errors)
        return report

    # -- state and lifecycle -----------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "snapshot": self.snapshot,
                "polls": self.polls,
                "changes": self.changes,
                "poll_error": self.poll_error,
                "poll_interval": self._options.poll_interval,
                "maintenance_interval": self._options.maintenance_interval,
                "maintaining": self._maintaining,
                "maintenance_runs": self.maintenance_runs,
                "maintenance_failures": self.maintenance_failures,
                "maintenance_error": self.maintenance_error,
                "last_maintenance": self.last_maintenance,
            }

    def close(self) -> None:
        """Stop both threads: a maintenance run in progress is interrupted."""
        self._stop.set()
        with self._lock:
            cursor = self._cursor
        if cursor is not None:
            cursor.interrupt()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(_JOIN)
