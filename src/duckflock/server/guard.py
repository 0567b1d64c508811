"""The server's SQL policy: one read-only SELECT, a deadline, interruptible.

Two layers. The database itself is locked down (:meth:`Database.lock_down`): no file or
network access, no extensions, configuration locked — DuckDB enforces that for every
statement. On top, each query (and each analysis defined over HTTP) is checked with
DuckDB's own parser: exactly one statement, of type SELECT, that serialises as a SELECT
(PRAGMA and EXPLAIN do not), and that calls no function that reads files, runs other
SQL (``query``, ``json_execute_serialized_sql``), writes (``checkpoint``) or reveals
where the database lives (``duckdb_databases``, ``duckdb_settings``,
``current_setting``). Then it runs on a cursor of its own, interrupted at its deadline
(counted from the request's arrival), and is read one record batch at a time.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from duckflock.core import project
from duckflock.core.cursors import first_row
from duckflock.core.names import Resolver
from duckflock.core.syntax import table_parts, walk
from duckflock.core.syntax import tree as syntax_tree
from duckflock.core.wide import description_types, repair, repair_schema
from duckflock.database import Database
from duckflock.errors import (
    DuckflockError,
    ParserError,
    QueryError,
    QueryRefusedError,
    QueryTimeoutError,
    translate,
)

# table functions (and views) that read files or the network, run SQL of their own,
# write, or reveal the database's path, temp directory, settings or logs
_DENIED_FUNCTIONS = {
    "query",
    "query_table",
    "json_execute_serialized_sql",
    "glob",
    "sniff_csv",
    "parquet_scan",
    "parquet_metadata",
    "parquet_schema",
    "parquet_file_metadata",
    "parquet_kv_metadata",
    "parquet_bloom_probe",
    "iceberg_scan",
    "delta_scan",
    "checkpoint",
    "force_checkpoint",
    "duckdb_secrets",
    "duckdb_secret_types",
    "which_secret",
    "duckdb_databases",
    "pragma_database_list",
    "duckdb_settings",
    "pg_settings",
    "duckdb_temporary_files",
    "duckdb_extensions",
    "duckdb_external_file_cache",
    "duckdb_logs",
    "duckdb_logs_parsed",
    "duckdb_log_contexts",
    "enable_logging",
    "disable_logging",
    "truncate_duckdb_logs",
}
_DENIED_SCALARS = {"nextval", "setval", "getenv", "current_setting", "write_log"}


# the rows of each batch DuckDB hands over: a number, or a function of the result's
# column types (DuckDB's names) giving one
BatchRows = int | Callable[[list[str]], int]


class RunningQuery:
    """One checked query on a cursor of its own, read batch by batch until ``close()``."""

    def __init__(
        self,
        guard: QueryGuard,
        sql: str,
        params: Any,
        deadline: float,
        batch_rows: BatchRows,
        prepare: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    ) -> None:
        self.guard = guard
        self.sql = sql
        self.params = params
        self.cursor = guard.db.own_cursor()
        self._closed = False
        self.timer = threading.Timer(max(deadline - time.monotonic(), 0.0), self.cursor.interrupt)
        self.timer.daemon = True
        self.timer.start()
        guard._running.add(self)
        try:
            if guard.stopping:  # after stop() looked for queries to interrupt: none starts
                raise duckdb.InterruptException("the server is shutting down")
            if deadline <= time.monotonic():
                raise duckdb.InterruptException("deadline passed before the query started")
            if prepare is not None:  # e.g. the Postgres port registers analysis results
                prepare(self.cursor)
            result = self.cursor.execute(sql, params)
            self._types = description_types(self.cursor)  # UHUGEINT, BIGNUM: see wide.py
            if not isinstance(batch_rows, int):  # chosen from the result's column types
                batch_rows = batch_rows([str(kind) for kind in self._types])
            self.reader = result.to_arrow_reader(batch_rows)
            self.schema: pa.Schema = repair_schema(self.reader.schema, self._types)
        except BaseException as exc:
            self.close()
            raise self._translate(exc) from exc

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, duckdb.InterruptException):
            if self.guard.stopping:
                return QueryTimeoutError("the server is shutting down", sql=self.sql)
            return QueryTimeoutError(
                f"the query ran past its {self.guard.timeout:g} s limit (counted from the "
                "request's arrival) and was stopped",
                sql=self.sql,
            )
        if isinstance(exc, duckdb.PermissionException):
            return QueryRefusedError(str(exc), sql=self.sql)
        if isinstance(exc, duckdb.Error):
            return translate(exc, sql=self.sql, params=self.params)
        return exc

    def next_batch(self) -> pa.RecordBatch | None:
        """The next record batch, or None at the end (QueryError on failure)."""
        try:
            return repair(self.reader.read_next_batch(), self._types)
        except StopIteration:
            return None
        except duckdb.Error as exc:
            raise self._translate(exc) from exc
        except pa.ArrowException as exc:  # DuckDB's errors can surface through Arrow
            if "interrupt" in str(exc).lower():
                raise self._translate(duckdb.InterruptException(str(exc))) from exc
            raise QueryError(str(exc), sql=self.sql) from exc

    def interrupt(self) -> None:
        self.cursor.interrupt()

    def close(self) -> None:
        """Stop the query and free its cursor (idempotent; any thread)."""
        if self._closed:
            return
        self._closed = True
        self.timer.cancel()
        self.guard._running.discard(self)
        try:
            self.cursor.interrupt()
            reader = getattr(self, "reader", None)
            if reader is not None:
                # the reader holds DuckDB's streaming result, and with it a transaction
                # that would keep CHECKPOINT from running: release it before the cursor
                reader.close()
                del self.reader
            self.cursor.close()  # db.own_cursor() tracks it weakly: closed and dropped here
        except duckdb.Error:
            pass  # the database closed first: nothing left to free


@dataclass(frozen=True)
class QueryOutcome:
    table: pa.Table
    truncated: bool


class QueryGuard:
    """Checks and runs the query endpoint's SQL on ``db``."""

    def __init__(self, db: Database, *, row_cap: int = 100_000, timeout: float = 30.0) -> None:
        if row_cap < 1 or timeout <= 0:
            raise ValueError("row_cap must be >= 1 and timeout > 0")
        self.db = db
        self.row_cap = row_cap
        self.timeout = timeout
        self.stopping = False
        self._running: weakref.WeakSet[RunningQuery] = weakref.WeakSet()
        self._secrets = _secrets_of(db)

    @property
    def running(self) -> int:
        """How many queries run now, on either port (each until its outcome is closed)."""
        return len(self._running)

    def check(self, sql: str) -> None:
        """Raise QueryRefusedError unless ``sql`` is exactly one read-only SELECT."""
        if not isinstance(sql, str) or not sql.strip():
            raise QueryRefusedError("the query endpoint needs one SELECT statement", sql=sql)
        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.ParserException as exc:
            raise ParserError(str(exc), sql=sql) from exc
        except duckdb.Error as exc:
            raise translate(exc, sql=sql) from exc
        if len(statements) != 1:
            raise QueryRefusedError(f"one statement per query, not {len(statements)}", sql=sql)
        kind = statements[0].type
        if kind != duckdb.StatementType.SELECT:
            raise QueryRefusedError(
                f"{kind.name} statements are not allowed: the query endpoint is read-only",
                sql=sql,
            )
        tree = syntax_tree(self.db.execute, sql)  # (a nested ENUM parsed apart)
        if tree.get("error"):
            raise QueryRefusedError(
                "only plain SELECT queries are allowed (not PRAGMA, EXPLAIN or SET)", sql=sql
            )
        for node in walk(tree):
            if node.get("type") == "TABLE_FUNCTION":
                function = node.get("function") or {}
                name = str(function.get("function_name", "")).lower()
                if name in _DENIED_FUNCTIONS or name.startswith("read_"):
                    raise QueryRefusedError(f"{name}() is not allowed here", sql=sql)
            elif node.get("type") == "BASE_TABLE":
                name = str(node.get("table_name", ""))
                if ("/" in name or "\\" in name or "." in name) and not self._is_table(node):
                    raise QueryRefusedError(f"reading files ({name!r}) is not allowed", sql=sql)
                if name.lower() in _DENIED_FUNCTIONS:
                    raise QueryRefusedError(f"{name} is not allowed here", sql=sql)
                if name.lower() == project.BATCHES and self._is_keys_table(node):
                    raise QueryRefusedError(
                        f"{project.SCHEMA}.{project.BATCHES} holds every client's idempotency "
                        "keys and their rows' digests: it is not readable through queries",
                        sql=sql,
                    )
            elif node.get("class") == "FUNCTION":
                name = str(node.get("function_name", "")).lower()
                if name in _DENIED_SCALARS:
                    raise QueryRefusedError(f"{name}() is not allowed here", sql=sql)

    def _is_keys_table(self, node: dict[str, Any]) -> bool:
        """Whether a table reference named like it is duckflock's table of idempotency
        keys (asked of the catalog only for that name)."""
        cursor = self.db.own_cursor()
        try:
            found = Resolver(cursor).lookup(table_parts(node))
        finally:
            cursor.close()
        return found is not None and project.is_schema(found.identity.schema)

    def _is_table(self, node: dict[str, Any]) -> bool:
        """True when a name that looks like a file is a table or view of the catalog
        (``main."a.b"``): only then may it be read."""
        cursor = self.db.own_cursor()
        try:
            return Resolver(cursor).lookup(table_parts(node)) is not None
        finally:
            cursor.close()

    def open(
        self,
        sql: str,
        params: Any = None,
        *,
        deadline: float | None = None,
        batch_rows: BatchRows = 2048,
        prepare: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    ) -> RunningQuery:
        """Check ``sql``, then start it; the caller reads batches and closes it.
        ``prepare`` runs on the query's own cursor first (to register Arrow tables);
        ``batch_rows``: the rows of each batch, or a function of the result's DuckDB
        type names giving them."""
        self.check(sql)
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        return RunningQuery(self, sql, params, deadline, batch_rows, prepare)

    def run(self, sql: str, params: Any = None, *, deadline: float | None = None) -> QueryOutcome:
        """Check, then run to the end (at most ``row_cap`` rows) within the time limit."""
        running = self.open(sql, params, deadline=deadline)
        try:
            batches: list[pa.RecordBatch] = []
            rows = 0
            truncated = False
            while (batch := running.next_batch()) is not None:
                if rows + batch.num_rows > self.row_cap:
                    batches.append(batch.slice(0, self.row_cap - rows))
                    truncated = True
                    break
                batches.append(batch)
                rows += batch.num_rows
            return QueryOutcome(pa.Table.from_batches(batches, schema=running.schema), truncated)
        finally:
            running.close()

    def stop(self) -> None:
        """Interrupt every running query (server shutdown); none starts afterwards."""
        self.stopping = True
        for running in list(self._running):
            running.interrupt()

    def scrub(self, text: str) -> str:
        """``text`` without the database's path, its directory or the temp directory."""
        for secret in self._secrets:
            text = text.replace(secret, "<hidden>")
        return text


def _secrets_of(db: Database) -> list[str]:
    """Paths an error message must not show: longest first, so the most specific wins."""
    found = {str(db.path)} if db.path != ":memory:" else set()
    if db.path != ":memory:":
        absolute = os.path.abspath(db.path)
        found |= {absolute, os.path.dirname(absolute)}
    try:
        row = first_row(db.execute("SELECT current_setting('temp_directory')"))
        if row and row[0]:
            found |= {str(row[0]), os.path.abspath(str(row[0]))}
    except DuckflockError:
        pass
    found.add(os.path.expanduser("~"))
    return sorted((s for s in found if len(s) > 1), key=len, reverse=True)


def run_statement(
    db: Database, sql: str, params: Any, deadline: float, row_cap: int, out: list[pa.RecordBatch]
) -> pa.Schema:
    """Run DDL or DML (``POST /v1/sql``, admin role) in a transaction of its own.

    The transaction tells the library that something was written (cached schemas and
    incremental states are renewed); the deadline interrupts it. At most ``row_cap``
    rows of what it returns are put into ``out``; the schema is returned.
    """

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise translate(exc, sql=sql) from exc
    project.check_statement(sql)  # duckflock's own schema: through the analyses API only
    if len(statements) != 1:
        raise QueryRefusedError(f"POST /v1/sql runs one statement, not {len(statements)}", sql=sql)

    def work(cursor: duckdb.DuckDBPyConnection) -> pa.Schema:
        timer = threading.Timer(max(deadline - time.monotonic(), 0.0), cursor.interrupt)
        timer.daemon = True
        timer.start()
        try:
            reader = cursor.execute(sql, params).to_arrow_reader(8192)
            types = description_types(cursor)
            rows = 0
            for batch in reader:
                out.append(repair(batch.slice(0, max(row_cap - rows, 0)), types))
                rows += batch.num_rows
                if rows >= row_cap:
                    break
            return repair_schema(reader.schema, types)
        finally:
            timer.cancel()

    try:
        return db.transaction(work, retries=0)
    except QueryError as exc:
        if isinstance(exc.__cause__, duckdb.InterruptException):
            raise QueryTimeoutError(
                "the statement ran past its time limit (counted from the request's arrival) "
                "and was stopped; nothing was committed",
                sql=sql,
            ) from exc
        raise
