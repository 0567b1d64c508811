"""Database: one DuckDB connection shared safely by every thread of the process."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import duckdb

from duckflock.core import effects, project, transactions
from duckflock.core.checks import count, flag, seconds, text, texts
from duckflock.core.cursors import CursorPool, Slot
from duckflock.core.names import Identity
from duckflock.core.opening import open_connection
from duckflock.core.statements import Results
from duckflock.core.syntax import READ, SESSION, WRITE, catalog_only, classify, data_only, said
from duckflock.errors import (
    ClosedError,
    DuckflockError,
    IngestError,
    IngestTimeoutError,
    OpenError,
    QueryError,
    QueueFullError,
    StorageError,
    translate,
)
from duckflock.ingest.receipts import Receipt
from duckflock.ingest.rows import to_parts
from duckflock.ingest.schema import SchemaCache
from duckflock.ingest.writer import IngestStats, Writer
from duckflock.lake.connection import LakeOptions, Retry, is_lake, open_lake, redact
from duckflock.lake.connection import allowed_directories as lake_allowed
from duckflock.lake.connection import prepare as prepare_lake
from duckflock.lake.watch import LakeWatch
from duckflock.live import definitions
from duckflock.live.analyses import (
    DEFAULT_TIMEOUT,
    DEFAULT_WORKERS,
    MAX_WORKERS,
    TIMEOUT_FLOOR,
    Scheduler,
)
from duckflock.live.fold import capture
from duckflock.live.plan.plans import DISTINCT_LIMIT
from duckflock.live.results import Result, Subscription

T = TypeVar("T")
log = logging.getLogger("duckflock")

# Databases not closed yet: closed at interpreter exit, before it tears down the objects
# their threads use (DuckDB aborts the process when its objects die under a running
# analysis or writer thread: "terminate called without an active exception")
_OPEN: weakref.WeakSet[Database] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    for db in list(_OPEN):
        with contextlib.suppress(Exception):
            db.close()


_CLOSE_GRACE = 5.0  # seconds close() lets running statements finish before interrupting


class Database:
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
        data_path: str | os.PathLike[str] | None = None,
        lake: LakeOptions | None = None,
    ) -> None:
        restore = flag(restore_analyses, "restore_analyses")
        self._distinct_limit = count(distinct_limit, "distinct_limit")
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
        self._max_concurrent_analyses = workers
        self._analysis_timeout = limit
        self._config = dict(config or {})
        self._replayed: list[str] = []  # settings to apply again if the file is reopened
        self.is_lake = is_lake(self.path)
        # what messages and repr() show: a lake's connection string may hold a password
        self._shown = redact(self.path) if self.is_lake else self.path
        if not self.is_lake and (data_path is not None or lake is not None):
            raise ValueError("data_path= and lake= are for a 'ducklake:' database only")
        if lake is not None and not isinstance(lake, LakeOptions):
            raise TypeError(f"lake must be a duckflock.LakeOptions, not {type(lake).__name__}")
        self._data_path = data_path
        self._lake_options = lake or LakeOptions()
        self._connection = self._open()
        self._cursors = CursorPool(self._connection, prepare_lake if self.is_lake else None)
        # names resolve on a cursor of their own: no caller's USE or SET changes them
        self._schemas = SchemaCache(self._cursors.new())
        # a test's seam: called at named points of a statement's run ("ran", and
        # retention's "deleted", "committed", "handed"); raises to simulate a Ctrl-C
        self._fault: Callable[[str], None] = _no_fault
        # global settings and the catalog, read around SET and DDL (a cursor of its own)
        self._effects = effects.Watch(self._cursors.new)
        # guards _closed, _active, _writer and _scheduler: close() waits for running
        # statements to drain; the writer starts on the first insert, the scheduler on
        # the first analysis
        self._state = threading.Condition()
        self._closed = False
        self._active = 0
        self._writer: Writer | None = None
        self._scheduler: Scheduler | None = None
        # held by the writer around each commit and its notice; exists before the writer
        # so that an analysis pinning a snapshot never races the writer's creation
        self._commit_lock = threading.Lock()
        # the lake's snapshot poller and maintenance (None: not a lake)
        self._lake: LakeWatch | None = None
        if self.is_lake:
            self._lake = LakeWatch(
                self._cursors.new,
                self._lake_options,
                self._on_lake_change,
                maintain=not read_only,
            )
        # who defined each analysis; kept definitions not defined again at start
        self._ledger = definitions.Ledger()
        _OPEN.add(self)
        if restore:
            try:
                self.restore_analyses()
            except BaseException:
                self.close()
                raise

    # -- lifecycle ---------------------------------------------------------------------

    def _open(self) -> duckdb.DuckDBPyConnection:
        if self.is_lake:
            return open_lake(
                self.path,
                data_path=self._data_path,
                options=self._lake_options,
                read_only=self.read_only,
                config=self._config,
            )
        return open_connection(self.path, read_only=self.read_only, config=self._config)

    def _reopen(self) -> None:
        """DuckDB invalidated the database (a checkpoint failed on a full disk): close
        every cursor and open the file again. Called by the writer, between batches."""
        if self.path in ("", ":memory:") or self.path.startswith(":memory:"):
            raise StorageError("an in-memory database cannot be reopened: its data is gone")
        if self._closed:
            raise ClosedError(f"database {self._shown!r} is closed")

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
        # the schema cache's own cursor was closed with the rest: a new cache, new cursor
        self._schemas = SchemaCache(self._cursors.new())
        self._effects = effects.Watch(self._cursors.new)
        scheduler = self._scheduler
        if scheduler is not None:
            scheduler.on_reopen()  # new cursors; incremental states rebuilt

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close every cursor and the connection. Idempotent; safe from any thread.

        Running analyses are interrupted at once (their results are not published);
        inserts accepted before the call are committed; other statements already
        running get a few seconds to finish, then are interrupted. Any use afterwards,
        from any thread, raises :class:`ClosedError`.
        """
        with self._state:
            if self._closed:
                return
            self._closed = True
            writer = self._writer
            scheduler = self._scheduler
        if self._lake is not None:
            self._lake.close()  # interrupts a maintenance run
        if scheduler is not None:
            # first: interrupting analyses frees the cores for the writer's last commits
            scheduler.close()  # ends watchers and subscriptions cleanly
        if writer is not None:
            writer.close()  # commits everything accepted before close()
        with self._state:
            drained = self._state.wait_for(lambda: self._active == 0, timeout=_CLOSE_GRACE)
        if not drained:
            self._connection.interrupt()
        self._cursors.close_all()
        self._connection.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<duckflock.Database {self._shown!r} {state}>"

    def _enter(self) -> None:
        with self._state:
            if self._closed:
                raise ClosedError(f"database {self._shown!r} is closed")
            self._active += 1

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        """Count a statement as running (close() waits for it); ClosedError if closed."""
        self._enter()
        try:
            yield
        finally:
            self._leave()

    def _leave(self) -> None:
        with self._state:
            self._active -= 1
            if self._active == 0 and self._closed:
                self._state.notify_all()

    def _fail(self, exc: BaseException, sql: str | None, params: Any = None) -> Exception:
        if self._closed:
            return ClosedError(f"database {self._shown!r} was closed during the call")
        return translate(exc, sql=sql, params=params)

    # -- statements --------------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Results:
        """Run one statement on this thread's cursor and return it for fetching.

        ``params`` fill ``?`` or ``$name`` placeholders. The result is DuckDB's: call
        ``fetchall()``, ``fetchone()``, ``df()``, ``arrow()`` or ``pl()`` on it. A result
        kept while the thread runs more statements still reads its own rows.
        """
        _check_sql(sql, params)
        return self._run(sql, params, many=False)

    def executemany(self, sql: str, params: Iterable[Sequence[Any] | dict[str, Any]]) -> Results:
        """Run one statement once per parameter set, on this thread's cursor."""
        rows = list(params)
        _check_sql(sql, rows)
        return self._run(sql, rows, many=True)

    def _run(self, sql: str, params: Any, *, many: bool) -> Results:
        self._enter()
        try:
            slot = self._cursors.slot()
            cursor, spare = slot.cursor, False
            holder = slot.current() if slot.current is not None else None
            if slot.streaming():  # an Arrow reader reads the thread's cursor
                cursor, spare = self._cursors.spare(slot), True
            elif holder is not None and holder.pending:
                holder.settle()  # kept whole if unread, else no longer readable
            try:
                kind = self._before(sql)
                self._resolving(slot, cursor, kind, sql)
                with self._watching(sql, kind, "db.execute") as watched:
                    if many:
                        cursor.executemany(sql, params)
                    elif kind == WRITE and self._delete(cursor, sql, params):
                        watched.handed = True  # its rows went to the analyses: no rebuild
                    else:
                        cursor.execute(sql, params)
                    self._fault("ran")
            except BaseException:
                if spare:
                    slot.retire(slot, cursor)
                raise
            return Results(self, slot, cursor, sql, spare=spare)
        except duckdb.Error as exc:
            raise self._fail(exc, sql, params) from exc
        finally:
            self._leave()

    def _before(self, sql: str) -> str:
        """Classify ``sql`` (DuckDB's parser); drop cached schemas if it may change them.
        A statement that would write duckflock's own schema is refused here."""
        project.check_statement(sql)
        kind = classify(sql)
        if kind != READ:
            self._schemas.invalidate()
        return kind

    @staticmethod
    def _resolving(slot: Slot, cursor: duckdb.DuckDBPyConnection, kind: str, sql: str) -> None:
        """Before a write on a cursor whose search path a SET or USE changed: refused
        while duckflock's own schema is on it (:func:`project.check_search_path`)."""
        if kind == SESSION:
            slot.resolving |= project.resolves(sql)
        elif kind == WRITE and slot.resolving:
            project.check_search_path(cursor, sql)
            if cursor is slot.cursor:  # (a spare cursor has a search path of its own)
                slot.resolving = False  # clean now; the next SET or USE asks again

    @contextlib.contextmanager
    def _watching(self, sql: str, kind: str, via: str) -> Iterator[_Watched]:
        """Around a statement: what it changed decides which analyses rebuild. A SET
        that changes a global setting of :mod:`duckflock.core.effects` rebuilds all; DDL
        rebuilds those reading what it changed in the catalog; any other write taints
        every incremental state unless its rows were handed over (``handed``).

        The check runs in ``finally``, even when the statement failed or was
        interrupted (Ctrl-C) after its commit: part of it may have run, and no analysis
        may be left believing nothing changed."""
        watched = _Watched()
        scheduler = self._scheduler
        if scheduler is None or kind == READ:
            yield watched
            return
        catalog = kind == WRITE and catalog_only(sql)
        if kind == WRITE and not catalog:
            try:
                yield watched
            finally:
                if not watched.handed:
                    self._wrote(f"{said(sql)} through {via}", replan=not data_only(sql))
            return
        settings = self._effects.settings()
        objects = self._effects.catalog() if catalog else None
        try:
            yield watched
        finally:
            self._changed(scheduler, sql, settings, objects)

    def _changed(
        self,
        scheduler: Scheduler,
        sql: str,
        settings: dict[str, str],
        objects: effects.Catalog | None,
    ) -> None:
        changed = effects.changed_settings(settings, self._effects.settings())
        if changed:
            scheduler.on_raw_write(f"{said(sql)} changed {', '.join(changed)}")
        if objects is not None:
            gone = effects.changed_objects(objects, self._effects.catalog())
            if gone:
                scheduler.on_catalog_change(gone, f"{said(sql)} changed the catalog")

    def sql(self, query: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Any:
        """A lazy DuckDB relation for ``query`` on this thread's cursor.

        A statement that is not a query (INSERT, UPDATE, DDL…) runs at once, as in DuckDB.
        Writes made with the relation's own methods (``insert_into``, ``create``,
        ``to_table``…) bypass duckflock like an explicit :meth:`cursor` does: analyses do
        not see them; run such writes with :meth:`execute`.
        """
        _check_sql(query, params)
        self._enter()
        try:
            kind = self._before(query)
            slot = self._cursors.slot()
            holder = slot.current() if slot.current is not None else None
            if holder is not None and holder.pending and not slot.streaming():
                holder.settle()  # a statement that is not a query runs on the cursor now
            self._resolving(slot, slot.cursor, kind, query)
            with self._watching(query, kind, "db.sql"):
                relation = slot.cursor.sql(query, params=params)
                self._fault("ran")
            return relation
        except duckdb.Error as exc:
            raise self._fail(exc, query, params) from exc
        finally:
            self._leave()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A dedicated DuckDB cursor, for code that wants one explicitly.

        It has its own transaction state and temp objects; ``close()`` it when done (the
        Database closes any left open).
        """
        self._enter()
        try:
            return self._cursors.new()
        finally:
            self._leave()

    # -- ingest ------------------------------------------------------------------------

    def insert(
        self,
        table: str,
        data: Any,
        *,
        columns: Sequence[str] | None = None,
        wait: bool = True,
        timeout: float | None = None,
    ) -> Receipt:
        """Append rows to ``table`` through the group-commit writer.

        ``data`` is one row (a dict, or a tuple in table or ``columns`` order), an
        iterable of rows, a pandas or polars DataFrame, or a pyarrow Table/RecordBatch.
        Columns left out take their DEFAULT. One call is all-or-nothing.

        With ``wait=True`` (the default) this returns once the rows are committed
        (durable); otherwise it returns at once and the :class:`Receipt` tells when. A
        full queue blocks the caller, or raises :class:`QueueFullError` after
        ``timeout`` seconds (which also bounds the wait for the commit).
        """
        if self._closed:
            raise ClosedError(f"database {self._shown!r} is closed")
        timeout = seconds(timeout, "timeout")
        wait = flag(wait, "wait")
        started = None if timeout is None else time.monotonic()
        receipt = self._receipt(table, data, columns)
        if receipt._finished:  # a call without rows
            return receipt
        writer = self._writer or self._ingest()
        writer.submit(receipt, timeout, wait=wait)
        if wait:
            if started is not None and timeout is not None:
                timeout = max(0.0, timeout - (time.monotonic() - started))
            receipt.wait(timeout)
        return receipt

    async def insert_async(
        self,
        table: str,
        data: Any,
        *,
        columns: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> Receipt:
        """``insert`` for asyncio code: awaits the commit without holding a thread.

        Checking and queueing take microseconds on the event loop; only when the queue is
        full does the wait for room move to the loop's default executor.
        """
        if self._closed:
            raise ClosedError(f"database {self._shown!r} is closed")
        timeout = seconds(timeout, "timeout")
        receipt = self._receipt(table, data, columns)
        if receipt._finished:  # a call without rows
            return receipt
        loop = asyncio.get_running_loop()
        committed = loop.create_future()

        def settle() -> None:
            if not committed.done():
                committed.set_result(None)

        def wake() -> None:
            # a loop that closed (its asyncio.run gave up) raises: nobody is waiting
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle)

        # set before queueing: the writer treats a call someone awaits as urgent
        receipt._on_done = wake
        writer = self._writer or self._ingest()
        try:
            writer.submit(receipt, 0, wait=False)
        except QueueFullError:
            await loop.run_in_executor(None, lambda: writer.submit(receipt, timeout, wait=False))
        try:
            await asyncio.wait_for(committed, timeout)
        except TimeoutError:
            raise IngestTimeoutError(
                f"{receipt.rows} rows for {receipt.table!r} were accepted but not committed "
                f"within {timeout} s; they may still commit"
            ) from None
        receipt.wait(0)  # done: returns, or raises the call's own error
        return receipt

    def _receipt(self, table: str, data: Any, columns: Sequence[str] | None) -> Receipt:
        """Check ``data`` against the table (in the caller) and wrap it for the writer."""
        if type(data) is dict and columns is None and type(table) is str:
            # the hot path, one dict row: two dict lookups when the keys were seen before
            schema = self._schemas.get(table)
            keys = tuple(data)
            names = schema.checked.get(keys)
            if names is None:
                schema, names = self._schemas.resolve(table, keys)
            return Receipt(schema, columns=names, row=tuple(data.values()))
        if type(data) is tuple and type(table) is str and not isinstance(columns, str):
            # the hot path, one tuple row: the column list is resolved once per schema,
            # then found again by one dict lookup (as for dict rows above)
            schema = self._schemas.get(table)
            if columns is None:
                resolved = schema.columns
            else:
                columns = columns if type(columns) is tuple else tuple(columns)
                found = schema.checked.get(columns)
                if found is None:
                    schema, found = self._schemas.resolve(table, columns)
                resolved = found
            if len(resolved) == len(data):
                return Receipt(schema, columns=resolved, row=data)
            # a row of the wrong width: the general path words the error
        schema, parts, nrows = to_parts(self._schemas, table, data, columns)
        if nrows == 0:
            return Receipt.empty(schema)
        return Receipt(schema, parts=parts, nrows=nrows)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every insert accepted so far is committed (or has failed)."""
        timeout = seconds(timeout, "timeout")
        writer = self._writer
        if writer is not None:
            writer.flush(timeout)
        elif self._closed:
            raise ClosedError(f"database {self._shown!r} is closed")

    def stats(self) -> IngestStats:
        """Rows and batches committed, rows queued, batch size and commit percentiles,
        and the write path's health: ``state`` ("ok", "recovering" or "failed"),
        ``storage_failures``, ``reopens`` and ``last_storage_error``."""
        writer = self._writer
        if writer is None:
            return IngestStats(0, 0, 0, 0, 0, self._max_queued_rows, {}, {})
        return writer.stats()

    def _wrote(self, why: str, *, replan: bool = True) -> None:
        """A statement that may have written ran outside db.insert (``why`` names it);
        ``replan``: it may have changed the catalog too."""
        scheduler = self._scheduler
        if scheduler is not None:
            scheduler.on_raw_write(why, replan=replan)

    def _on_commit(
        self, seq: int, tables: set[Identity], stored: list[tuple[Identity, Any]]
    ) -> None:
        scheduler = self._scheduler
        if scheduler is None:
            return
        try:
            scheduler.on_commit(seq, tables, stored)
        except Exception:
            scheduler.on_lost_notice()  # rebuild incremental states rather than miss rows
            raise

    def _on_lake_change(self) -> None:
        """The lake's snapshot moved (any process committed): every analysis may be
        stale, and incremental states miss rows this process did not write."""
        scheduler = self._scheduler
        if scheduler is not None:
            scheduler.on_raw_write("a process committed into the lake")

    # -- the lake ----------------------------------------------------------------------

    def maintain(self, steps: Sequence[str] | None = None) -> dict[str, Any]:
        """Maintain a lake now: flush inlined rows to Parquet, merge adjacent files,
        expire old snapshots, delete unreferenced files (or only ``steps``, a subset
        of ``"flush"``, ``"merge"``, ``"expire"``, ``"cleanup"``). Returns the data
        files before and after, the seconds taken and any step's error."""
        if self._lake is None:
            raise ValueError(f"maintain() is for a 'ducklake:' database, not {self._shown!r}")
        with self._running():
            return self._lake.maintain(None if steps is None else tuple(steps))

    def lake_state(self) -> dict[str, Any] | None:
        """A lake's latest snapshot id and maintenance state (None: not a lake)."""
        return None if self._lake is None else self._lake.state()

    # -- retention deletes -------------------------------------------------------------

    def _delete(self, cursor: duckdb.DuckDBPyConnection, sql: str, params: Any) -> bool:
        """Run ``sql`` capturing its deleted rows for incremental analyses, if it is a
        DELETE they can take (:mod:`duckflock.live.fold.capture`); False: run it plainly."""
        scheduler = self._scheduler
        # a lake's analyses rebuild on its snapshot poller (other processes delete too)
        parts = capture.target(sql) if scheduler is not None and self._lake is None else None
        if scheduler is None or parts is None:
            return False
        table = capture.resolve(cursor, parts)
        if table is None or not scheduler.retains(table):
            return False

        def committed(rows: Any) -> None:  # under the commit lock, after the COMMIT
            try:
                scheduler.on_delete(table, rows)
            except Exception:  # the DELETE did commit: the caller's call succeeded
                log.exception("handing a DELETE's rows to the analyses failed")
                scheduler.on_lost_notice()  # rebuild incremental states rather than drift

        deleted = capture.delete(
            cursor,
            sql,
            params,
            columns=capture.table_columns(cursor, table),
            commit_lock=self._commit_lock,
            committed=committed,
            lost=lambda: scheduler.on_delete(table, None),
            limit=scheduler.max_delta_rows,
            fault=self._fault,
        )
        return deleted is not None

    def _on_capture_change(self, tables: frozenset[Identity]) -> None:
        writer = self._writer
        if writer is not None:
            # DuckLake refuses INSERT … RETURNING, and other processes' rows are never
            # handed over anyway: on a lake, analyses refresh in full
            writer.capture = frozenset() if self.is_lake else tables

    # -- analyses ------------------------------------------------------------------------

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
            if self._closed:
                raise ClosedError(f"database {self._shown!r} is closed")
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
        self._enter()
        try:
            cursor = self._cursors.new()
            try:
                return fn(cursor, *args)
            except duckdb.Error as exc:
                raise self._fail(exc, None) from exc
            finally:
                self._cursors.forget(cursor)
        finally:
            self._leave()

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
        return self._analyses().result(name, min_version, timeout)

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
        return self._analyses().watch(name)

    def watch_async(self, name: str) -> AsyncIterator[Result]:
        """``watch`` for asyncio code: ``async for result in db.watch_async(name)``."""
        return self._analyses().watch_async(name)

    def subscribe(self, name: str, callback: Callable[[Result], Any]) -> Subscription:
        """Call ``callback(result)`` for each new version, on a thread of its own.

        A callback that raises is logged and stays subscribed; a slow one skips
        versions. ``.cancel()`` the returned subscription to stop.
        """
        return self._analyses().subscribe(name, callback)

    def _analyses(self) -> Scheduler:
        if self._closed:
            raise ClosedError(f"database {self._shown!r} is closed")
        scheduler = self._scheduler
        if scheduler is not None:
            return scheduler
        with self._state:
            if self._closed:
                raise ClosedError(f"database {self._shown!r} is closed")
            if self._scheduler is None:
                self._scheduler = Scheduler(
                    new_cursor=self._cursors.new,
                    close_cursor=self._cursors.forget,
                    commit_lock=lambda: self._commit_lock,
                    committed_seq=self._committed_seq,
                    on_capture_change=self._on_capture_change,
                    max_concurrent=self._max_concurrent_analyses,
                    default_timeout=self._analysis_timeout,
                    distinct_limit=self._distinct_limit,
                )
            return self._scheduler

    def _committed_seq(self) -> int:
        writer = self._writer
        return writer.committed_seq if writer is not None else 0

    def _ingest(self) -> Writer:
        writer = self._writer
        if writer is not None:
            return writer
        with self._state:
            if self._closed:
                raise ClosedError(f"database {self._shown!r} is closed")
            if self.read_only:
                raise IngestError(f"database {self._shown!r} is open read-only")
            if self._writer is None:
                self._writer = Writer(
                    self._cursors.new,
                    max_queued_rows=self._max_queued_rows,
                    max_batch_rows=self._max_batch_rows,
                    on_commit=self._on_commit,
                    # through self: _reopen replaces the cache
                    on_schema_change=lambda: self._schemas.invalidate(),
                    commit_lock=self._commit_lock,
                    reopen=self._reopen,
                    retry=Retry(self._lake_options.retry_seconds) if self.is_lake else None,
                )
                if self._scheduler is not None:
                    # under the scheduler's lock: a concurrent define or drop cannot
                    # publish in between and be overwritten by this older set
                    self._scheduler.publish_capture()
            return self._writer

    def tables(self) -> list[dict[str, Any]]:
        """Every table of the current database: its ``name`` as ``insert`` takes it, its
        ``catalog``, ``schema`` and ``table`` as the catalog spells them, its columns
        (name and type) and row count."""
        listing = self.execute(
            "SELECT database_name, schema_name, table_name, current_database() "
            "FROM duckdb_tables() "
            "WHERE NOT internal AND NOT temporary AND database_name = current_database() "
            "AND NOT (schema_name = ? AND table_name = 'analyses') "  # duckflock's own
            "ORDER BY schema_name, table_name",
            [project.SCHEMA],
        ).fetchall()
        tables = []
        for catalog, schema, table, current in listing:
            identity = Identity(catalog, schema, table)
            columns = self.execute(
                "SELECT column_name, data_type FROM duckdb_columns() "
                "WHERE database_name = ? AND schema_name = ? AND table_name = ? "
                "ORDER BY column_index",
                list(identity),
            ).fetchall()
            count = self.execute(f"SELECT count(*) FROM {identity.sql}").fetchone()
            tables.append(
                {
                    "name": identity.display(current),
                    "catalog": catalog,
                    "schema": schema,
                    "table": table,
                    "columns": [{"name": c, "type": t} for c, t in columns],
                    "rows": int(count[0]) if count else 0,
                }
            )
        return tables

    def lock_down(self) -> None:
        """Forbid file and network access and extension loading, then lock DuckDB's
        configuration, for the rest of this database's life.

        For databases exposed to others (``duckflock serve`` calls it after creating
        its tables): no statement can read or write files (``read_csv``, ``COPY … TO``,
        ``ATTACH``, the database file itself), install or load extensions, or change a
        setting. duckflock's own ingest and analyses keep working; on a lake, so do its
        Parquet writes (its data path stays allowed).
        """
        for statement in (
            *(lake_allowed(self._cursors.for_thread()) if self.is_lake else ()),
            "SET enable_external_access = false",
            "SET autoinstall_known_extensions = false",
            "SET autoload_known_extensions = false",
            "SET lock_configuration = true",
        ):
            self.execute(statement)
            self._replayed.append(statement)  # a reopened connection gets them again

    @property
    def open_cursors(self) -> int:
        """How many DuckDB cursors are open now: one per live thread that used this
        Database, plus explicit ones."""
        return self._cursors.open_count

    # -- transactions ------------------------------------------------------------------

    def transaction(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        retries: int = 5,
        **kwargs: Any,
    ) -> T:
        """Run ``fn(cursor, *args, **kwargs)`` inside BEGIN … COMMIT and return its result.

        ``cursor`` is a DuckDB cursor dedicated to this transaction. On DuckDB's
        write-write conflict the whole function runs again (up to ``retries`` times, with
        jittered exponential backoff), so ``fn`` should only touch the database; after
        the last retry :class:`ConflictError` is raised. If a statement failed inside the
        transaction, DuckDB rolls it back even though its COMMIT answers without error:
        duckflock raises :class:`TransactionAbortedError` instead of reporting success.
        """
        if not callable(fn):
            raise TypeError(
                "transaction takes a function of a cursor, e.g. "
                "db.transaction(lambda cur: cur.execute(...)); to run one statement, "
                f"use db.execute; not {type(fn).__name__}"
            )
        if isinstance(retries, bool) or not isinstance(retries, int):
            raise TypeError(f"retries must be a whole number, not {type(retries).__name__}")
        self._enter()
        try:
            cursor = self._cursors.new()
        finally:
            self._leave()
        scheduler = self._scheduler
        # a SET GLOBAL inside holds whether or not the transaction commits
        settings = self._effects.settings() if scheduler is not None else None
        try:
            return transactions.run(
                cursor,
                fn,
                args,
                kwargs,
                retries=retries,
                running=self._running,
                committed=self._committed,
                fail=self._fail,
            )
        finally:
            self._cursors.forget(cursor)
            if scheduler is not None and settings is not None:
                self._changed(scheduler, "a db.transaction", settings, None)

    def _committed(self) -> None:
        """A transaction committed: it may have changed tables or written rows."""
        self._schemas.invalidate()
        self._wrote("a db.transaction committed")


class _Watched:
    """What :meth:`Database._watching` learns from the statement it watches."""

    __slots__ = ("handed",)

    def __init__(self) -> None:
        self.handed = False  # a DELETE whose rows the analyses took: nothing to rebuild


def _no_fault(point: str) -> None:
    """The fault hook's default: nothing (tests raise at ``point``)."""


def _check_sql(sql: object, params: object = None) -> None:
    if not isinstance(sql, str):
        raise TypeError(f"sql must be a str, not {type(sql).__name__}")
    text(sql, "sql")
    texts(params, "params")


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
    data_path: str | Path | None = None,
    lake: LakeOptions | None = None,
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

    ``"ducklake:postgres:dbname=… host=…"`` opens a DuckLake with its catalog in
    PostgreSQL and its Parquet files under ``data_path`` (needed when the lake is new),
    which many processes on many machines may write at once; ``"ducklake:<file>"``
    keeps the catalog in a DuckDB file (one process). ``lake`` tunes inlining, the
    snapshot polling, maintenance and retries (:class:`LakeOptions`). Needs
    ``pip install 'duckflock[lake]'``.
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
        data_path=data_path,
        lake=lake,
    )
