"""The analysis verbs of a Database: ``analysis``, ``drop_analysis``,
``restore_analyses``, ``analyses``, ``result``, ``refresh``, ``watch``,
``watch_async`` and ``subscribe`` — and the scheduler they start on first use
(:mod:`duckflock.live`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeVar

import duckdb

from duckflock.core import project
from duckflock.core.checks import flag, text, texts
from duckflock.core.lifecycle import weakly
from duckflock.database.base import Base
from duckflock.errors import DuckflockError, OpenError, QueryError
from duckflock.lake.connection import CATALOG
from duckflock.live import definitions
from duckflock.live.changes import Change
from duckflock.live.results import Result, Subscription
from duckflock.live.scheduler import Scheduler

T = TypeVar("T")
log = logging.getLogger("duckflock")


class Analyses(Base):
    """Defining analyses and reading their results."""

    def analysis(
        self,
        name: str,
        sql: str,
        *,
        every: float | None = None,
        on_change: bool = False,
        min_interval: float = 0.1,
        params: Sequence[Any] | dict[str, Any] | None = None,
        timeout: float | None = None,
        persist: bool = True,
        wait: bool = False,
        defined_by: str = definitions.LIBRARY,
    ) -> Result | None:
        """Register (or replace) an analysis that keeps itself fresh.

        It runs at once, then every ``every`` seconds (at least 0.01) and/or
        (``on_change``) after commits that touched a table it reads, at most once per
        ``min_interval`` seconds (0 or more). A run taking longer than ``timeout``
        seconds (default: ``connect(analysis_timeout=…)``, 60) is interrupted and
        publishes a :class:`QueryTimeoutError` result that keeps the last good table.
        Replacing a running analysis interrupts it. Invalid SQL, unknown tables and
        timings that are not finite numbers in range raise here. Append-only aggregates
        over one table refresh incrementally; ``analyses()`` says which mode each uses
        and why.

        On a database file the definition is kept in the file (``persist=False`` does
        not) and defined again whenever the file is opened (see :func:`connect`).

        Errors that only running the SQL can find (a cast that fails on the data, a
        division by zero) show on the results (``result(name).error``) — unless
        ``wait=True``: then this returns the first result, or raises its error and
        defines nothing.

        ``defined_by`` is kept with the definition and shown by :meth:`analyses`: who
        defined it (``"library"``; the server records the role and token).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"an analysis needs a non-empty str name, not {name!r}")
        text(name, "the analysis name")
        if not isinstance(defined_by, str) or not defined_by:
            raise ValueError(f"defined_by must be a non-empty str, not {defined_by!r}")
        text(defined_by, "defined_by")
        if isinstance(sql, str):
            text(sql, "sql")
        texts(params, "params")
        keep = flag(persist, "persist") and self._keeps_definitions()
        first = flag(wait, "wait")
        if keep:
            definitions.params_json(params)  # refuse what cannot be kept, before defining
        self._analyses().define(
            name,
            sql,
            every=every,
            on_change=on_change,
            min_interval=min_interval,
            params=params,
            timeout=timeout,
        )
        result = None
        if first:
            result = self.refresh(name)
            if result.error is not None:
                with contextlib.suppress(DuckflockError):
                    self._analyses().drop(name)
                raise result.error
        self._ledger.defined(name, defined_by)
        if keep:
            definition = definitions.Definition(
                name, sql, every, on_change, min_interval, timeout, params, defined_by
            )
            self._on_private_cursor(definitions.save, definition)
        return result

    def drop_analysis(self, name: str) -> None:
        """Remove an analysis (and its kept definition); a run in progress is
        interrupted; its watchers end. A definition refused at start is dropped too."""
        if self._ledger.is_refused(name):
            self._life.check()
        else:
            self._analyses().drop(name)
        self._ledger.forget(name)
        if self._keeps_definitions():
            self._on_private_cursor(definitions.delete, name)

    def _keeps_definitions(self) -> bool:
        # not in a lake: its definitions table would be DDL that every process races on
        return (
            not self.is_lake
            and not self.read_only
            and not self.path.startswith(":memory:")
            and self.path != ""
        )

    def _on_private_cursor(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(cursor, *args)`` on a cursor of its own (no commit notice: bookkeeping)."""
        with self._life.running():
            cursor = self._cursors.new()
            try:
                return fn(cursor, *args)
            except duckdb.Error as exc:
                raise self._life.fail(exc, None) from exc
            finally:
                self._cursors.forget(cursor)

    def restore_analyses(self, check: Callable[[str], None] | None = None) -> None:
        """Define again every analysis kept in the file that this process has not
        defined yet, each only after ``check(sql)`` passed (a server's statement guard:
        ``duckflock serve`` opens the file with ``restore_analyses=False`` and calls
        this once it is locked down). A definition that fails the check, cannot be
        read, or no longer binds (its table was dropped) is not run: it is logged,
        listed by :meth:`analyses` as refused with the reason, and stays kept until
        :meth:`drop_analysis` or a new definition of its name."""
        try:
            found = self._on_private_cursor(definitions.load)
        except QueryError as exc:  # its columns changed: edited offline
            raise OpenError(
                f"the analyses kept in {self._shown!r} ({project.WHERE}) cannot be read: "
                f"{exc.message}; repair or drop that table with plain DuckDB, or open the "
                "file with restore_analyses=False",
                path=self._shown,
            ) from exc
        for kept in found:
            if self._ledger.knows(kept.name):
                continue  # defined in this process already (a server's config): newer
            reason = kept.reason if isinstance(kept, definitions.Unreadable) else None
            if reason is None and check is not None:
                try:
                    check(kept.sql)
                except DuckflockError as exc:
                    message = exc.message if isinstance(exc, QueryError) else str(exc)
                    reason = f"refused by the statement guard: {message}"
            if reason is None and isinstance(kept, definitions.Definition):
                try:
                    self._analyses().define(kept.name, kept.sql, **kept.options())
                    self._ledger.defined(kept.name, kept.defined_by)
                    continue
                except (DuckflockError, ValueError, TypeError) as exc:
                    message = exc.message if isinstance(exc, QueryError) else str(exc)
                    reason = f"could not be defined again: {message}"
            self._ledger.refuse(kept, reason or "not defined again")
            log.warning("analysis %r kept in %s was not run: %s", kept.name, self._shown, reason)

    def analyses(self) -> list[dict[str, Any]]:
        """Every analysis with its schedule, last refresh, duration, rows, error, mode,
        and who defined it (``defined_by``); a kept definition that was not defined
        again at start is listed too, with ``refused`` saying why (see
        :meth:`restore_analyses`)."""
        scheduler = self._scheduler
        return self._ledger.annotate([] if scheduler is None else scheduler.statuses())

    def result(
        self, name: str, *, min_version: int | None = None, timeout: float | None = None
    ) -> Result | None:
        """The latest result of ``name`` (None before its first run); never runs a query.

        With ``min_version`` (an int >= 0), waits until a result of at least that
        version exists (``ResultTimeoutError`` after ``timeout`` seconds; None waits
        until then, the drop of the analysis or close()). After a replacement only the
        replacement's results count.
        """
        return self._analyses().readers.result(name, min_version, timeout)

    def refresh(self, name: str, *, timeout: float | None = None) -> Result:
        """Run ``name`` now and return the result, which reflects every commit made
        before this call.

        Bounded even without ``timeout``: by the analysis's own time limit (a run past
        it returns a result carrying :class:`QueryTimeoutError`).
        """
        return self._analyses().refresh(name, timeout)

    def watch(self, name: str) -> Iterator[Result]:
        """Iterate over results: the current one, then each new version as it lands.

        A slow reader skips to the newest version. Ends when the analysis is dropped or
        the Database closes.
        """
        return self._analyses().readers.watch(name)

    def watch_async(self, name: str) -> AsyncIterator[Result]:
        """``watch`` for asyncio code: ``async for result in db.watch_async(name)``."""
        return self._analyses().readers.watch_async(name)

    def subscribe(
        self, name: str, callback: Callable[[Any], Any], *, changes: bool = False
    ) -> Subscription:
        """Call ``callback(result)`` for each new version, on a thread of its own.

        A callback that raises is logged and stays subscribed; a slow one skips
        versions. ``.cancel()`` the returned subscription to stop. With ``changes=True``
        the callback gets a :class:`Change` per version instead (a snapshot first; a
        slow one gets every change while they are kept, then a snapshot), as
        :meth:`changes` yields them.
        """
        return self._analyses().readers.subscribe(name, callback, changes=changes)

    def changes(
        self, name: str, *, since: int | str | None = None, timeout: float | None = None
    ) -> Iterator[Change]:
        """Iterate over what changed, version by version: each :class:`Change` holds the
        rows with ``__diff`` +1 (added) / -1 (removed) since the version before.

        ``since``: a version, or a change's ``id`` (``"lineage.version"``, valid across
        reconnects but not across a restart or a replacement). The first item is a
        snapshot (``snapshot=True``: the whole result, replace what you hold) when
        ``since`` is None, or when the changes after it are no longer kept
        (``connect(keep_changes=…)``, default 64 versions) or belong to another run.
        Ends when the analysis is dropped, the Database closes, or ``timeout`` seconds
        pass without a new version (None: no limit).
        """
        return self._analyses().readers.changes(name, since, timeout)

    def changes_async(self, name: str, *, since: int | str | None = None) -> AsyncIterator[Change]:
        """``changes`` for asyncio code: ``async for change in db.changes_async(name)``."""
        return self._analyses().readers.changes_async(name, since)

    def _analyses(self) -> Scheduler:
        self._life.check()
        scheduler = self._scheduler
        if scheduler is not None:
            return scheduler
        with self._life.guard:
            self._life.check()
            if self._scheduler is None:
                # its threads hold this Database weakly, as the writer's do
                lock, cursors = self._commit_lock, self._cursors
                self._scheduler = Scheduler(
                    new_cursor=cursors.new,
                    close_cursor=cursors.forget,
                    commit_lock=lambda: lock,
                    committed_seq=weakly(self._committed_seq),
                    on_capture_change=weakly(self._on_capture_change),
                    max_concurrent=self._max_concurrent_analyses,
                    default_timeout=self._analysis_timeout,
                    distinct_limit=self._distinct_limit,
                    keep_changes=self._keep_changes,
                    owner=self,  # for duckflock.live.internals
                    lake=CATALOG if self.is_lake else None,
                    settings=self._settings,
                    raw_handed_out=lambda: cursors.raw_handed_out,
                )
                self._life.drop_with(self, self._scheduler.close)
            return self._scheduler
