"""The SQL verbs of a Database: ``execute``, ``executemany``, ``sql``, ``cursor``,
``transaction``, ``tables`` and ``lock_down`` — and what a statement's run tells the
analyses (what it changed decides which of them rebuild)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import duckdb

from duckflock.core import effects, project, transactions
from duckflock.core.checks import text, texts
from duckflock.core.cursors import Slot, first_row
from duckflock.core.decimals import bindable_params
from duckflock.core.names import Identity
from duckflock.core.statements import Results
from duckflock.core.syntax import (
    READ,
    SESSION,
    WRITE,
    StatementKind,
    catalog_only,
    classify,
    data_only,
    may_set,
    said,
)
from duckflock.database.base import Base
from duckflock.lake.connection import allowed_directories as lake_allowed
from duckflock.live.fold import capture, retention
from duckflock.live.scheduler import Scheduler

T = TypeVar("T")
log = logging.getLogger("duckflock")


class Watched:
    """What :meth:`Statements._watching` learns from the statement it watches."""

    __slots__ = ("handed",)

    def __init__(self) -> None:
        self.handed = False  # a DELETE whose rows the analyses took: nothing to rebuild


def check_sql(sql: object, params: object = None) -> None:
    """Refuse SQL that is not a str, and text DuckDB would mangle (NUL characters)."""
    if not isinstance(sql, str):
        raise TypeError(f"sql must be a str, not {type(sql).__name__}")
    text(sql, "sql")
    texts(params, "params")


class Statements(Base):
    """Running SQL on the calling thread's cursor."""

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Results:
        """Run one statement on this thread's cursor and return it for fetching.

        ``params`` fill ``?`` or ``$name`` placeholders. The result is DuckDB's: call
        ``fetchall()``, ``fetchone()``, ``df()``, ``arrow()`` or ``pl()`` on it. A result
        kept while the thread runs more statements still reads its own rows.
        """
        check_sql(sql, params)
        return self._run(sql, params, many=False)

    def executemany(self, sql: str, params: Iterable[Sequence[Any] | dict[str, Any]]) -> Results:
        """Run one statement once per parameter set, on this thread's cursor."""
        rows = list(params)
        check_sql(sql, rows)
        return self._run(sql, rows, many=True)

    def _run(self, sql: str, params: Any, *, many: bool) -> Results:
        life = self._life
        life.enter()
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
                    # a Decimal("1E+2") is bound as 1 otherwise (core/decimals.py)
                    params = (
                        [bindable_params(row) for row in params]
                        if many
                        else bindable_params(params)
                    )
                    if many:
                        cursor.executemany(sql, params)
                    elif kind == WRITE and self._delete(cursor, sql, params):
                        watched.handed = True  # its rows went to the analyses: no rebuild
                    else:
                        cursor.execute(sql, params)
                    self.fault_hook("ran")
            except BaseException:
                if spare:
                    slot.retire(slot, cursor)
                raise
            return Results(life, slot, cursor, sql, spare=spare)
        except duckdb.Error as exc:
            raise life.fail(exc, sql, params) from exc
        finally:
            life.leave()

    def _before(self, sql: str) -> StatementKind:
        """Classify ``sql`` (DuckDB's parser); drop cached schemas if it may change them.
        A statement that would write duckflock's own schema is refused here."""
        project.check_statement(sql)
        kind = classify(sql)
        if kind != READ:
            self._intake.invalidate()
        return kind

    @staticmethod
    def _resolving(
        slot: Slot, cursor: duckdb.DuckDBPyConnection, kind: StatementKind, sql: str
    ) -> None:
        """Before a write on a cursor whose search path a SET or USE changed: refused
        while duckflock's own schema is on it (:func:`project.check_search_path`)."""
        if kind == SESSION:
            slot.resolving |= project.resolves(sql)
        elif kind == WRITE and slot.resolving:
            project.check_search_path(cursor, sql)
            if cursor is slot.cursor:  # (a spare cursor has a search path of its own)
                slot.resolving = False  # clean now; the next SET or USE asks again

    @contextlib.contextmanager
    def _watching(self, sql: str, kind: StatementKind, via: str) -> Iterator[Watched]:
        """Around a statement: what it changed decides which analyses rebuild. A SET
        that changes a global setting of :mod:`duckflock.core.effects` rebuilds all; DDL
        rebuilds those reading what it changed in the catalog; any other write taints
        every incremental state unless its rows were handed over (``handed``).

        The check runs in ``finally``, even when the statement failed or was
        interrupted (Ctrl-C) after its commit: part of it may have run, and no analysis
        may be left believing nothing changed. The settings epoch moves before and
        after a statement that may change a setting (:class:`effects.Epoch`)."""
        with self._settings.changing(may_set(sql)), self._watched(sql, kind, via) as watched:
            yield watched

    @contextlib.contextmanager
    def _watched(self, sql: str, kind: StatementKind, via: str) -> Iterator[Watched]:
        watched = Watched()
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
        objects = self._effects.catalog(kept=True) if catalog else None
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
            scheduler.notices.raw_write(f"{said(sql)} changed {', '.join(changed)}", replan=True)
        if objects is not None:
            gone = effects.changed_objects(objects, self._effects.catalog())
            if gone:
                scheduler.notices.catalog_change(gone, f"{said(sql)} changed the catalog")

    def sql(self, query: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Any:
        """A lazy DuckDB relation for ``query`` on this thread's cursor.

        A statement that is not a query (INSERT, UPDATE, DDL…) runs at once, as in DuckDB.
        Writes made with the relation's own methods (``insert_into``, ``create``,
        ``to_table``…) bypass duckflock like an explicit :meth:`cursor` does: analyses do
        not see them; run such writes with :meth:`execute`.
        """
        check_sql(query, params)
        life = self._life
        life.enter()
        try:
            kind = self._before(query)
            slot = self._cursors.slot()
            holder = slot.current() if slot.current is not None else None
            if holder is not None and holder.pending and not slot.streaming():
                holder.settle()  # a statement that is not a query runs on the cursor now
            self._resolving(slot, slot.cursor, kind, query)
            with self._watching(query, kind, "db.sql"):
                relation = slot.cursor.sql(query, params=bindable_params(params))
                self.fault_hook("ran")
            return relation
        except duckdb.Error as exc:
            raise life.fail(exc, query, params) from exc
        finally:
            life.leave()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A dedicated DuckDB cursor, for code that wants one explicitly.

        It has its own transaction state and temp objects; ``close()`` it when done (the
        Database closes any left open).
        """
        with self._life.running():
            return self._cursors.raw()  # its DDL reaches no notice: CursorPool.raw

    def own_cursor(self) -> duckdb.DuckDBPyConnection:
        """A dedicated cursor for duckflock's own statements that change nothing (the
        server's checked SELECTs and catalog look-ups): unlike :meth:`cursor`, it leaves
        ``CursorPool.raw_handed_out`` unset, so the kept catalogue and settings stay
        trusted. A documented internal interface; ``close()`` it when done."""
        with self._life.running():
            return self._cursors.new()

    def tables(self) -> list[dict[str, Any]]:
        """Every table of the current database: its ``name`` as ``insert`` takes it, its
        ``catalog``, ``schema`` and ``table`` as the catalog spells them, its columns
        (name and type) and row count."""
        listing = self.execute(
            "SELECT database_name, schema_name, table_name, current_database() "
            "FROM duckdb_tables() "
            "WHERE NOT internal AND NOT temporary AND database_name = current_database() "
            "AND NOT (schema_name = ? AND table_name IN (?, ?)) "  # duckflock's own
            "ORDER BY schema_name, table_name",
            [project.SCHEMA, project.ANALYSES, project.BATCHES],
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
            count = first_row(self.execute(f"SELECT count(*) FROM {identity.sql}"))
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
        self._settings.lock()  # no setting changes from here on, whatever the cursor

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
        with self._life.running():
            cursor = self._cursors.new()
        scheduler = self._scheduler
        # a SET GLOBAL inside holds whether or not the transaction commits
        settings = self._effects.settings() if scheduler is not None else None
        try:
            with self._settings.changing():  # fn may run a SET GLOBAL on its cursor
                return transactions.run(
                    cursor,
                    fn,
                    args,
                    kwargs,
                    retries=retries,
                    running=self._life.running,
                    committed=self._committed,
                    fail=self._life.fail,
                )
        finally:
            self._cursors.forget(cursor)
            if scheduler is not None and settings is not None:
                self._changed(scheduler, "a db.transaction", settings, None)

    def _committed(self) -> None:
        """A transaction committed: it may have changed tables or written rows."""
        self._intake.invalidate()
        self._wrote("a db.transaction committed")

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
        if table is None or not scheduler.notices.retains(table):
            return False
        retractions = scheduler.notices.retractions(table)

        def committed(rows: Any) -> None:  # under the commit lock, after the COMMIT
            try:
                scheduler.notices.delete(table, rows)
            except Exception:  # the DELETE did commit: the caller's call succeeded
                log.exception("handing a DELETE's rows to the analyses failed")
                scheduler.notices.lost()  # rebuild incremental states rather than drift

        deleted = capture.delete(
            cursor,
            sql,
            params,
            columns=capture.table_columns(cursor, table),
            commit_lock=self._commit_lock,
            committed=committed,
            lost=lambda: scheduler.notices.delete(table, None),
            limit=scheduler.notices.max_delta_rows,
            prepare=lambda rows: retention.prepare(rows, retractions),
            fault=self.fault_hook,
        )
        return deleted is not None
