"""The serving service's policy applied to one statement from the Postgres port.

The same rules as the HTTP routes, asked of the same :class:`~duckflock.server.service.Service`,
by role: ``read`` runs one locked-down SELECT through the service's
:class:`~duckflock.server.guard.QueryGuard` (its check, its deadline, its interruptible
cursor); ``write`` may also ``INSERT … VALUES/SELECT``, which becomes an Arrow table
computed by a guarded SELECT and appended through the group-commit writer
(``db.insert``: answered once committed); ``admin`` may also run any other statement,
through the same statement path as ``POST /v1/sql``. Each takes one of the service's
query slots for its client (address and token), the pool HTTP queries take from too.
Analyses are tables of the schema ``analyses``: ``SELECT * FROM analyses.per_thread``
reads the latest result, registered on the query's own cursor.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import duckdb
import pyarrow as pa

from duckflock.core import project
from duckflock.core.cursors import first_row
from duckflock.core.names import Resolver
from duckflock.core.syntax import tree as syntax_tree
from duckflock.core.syntax import walk
from duckflock.core.wide import readable
from duckflock.errors import AnalysisError, ParserError, QueryRefusedError, translate
from duckflock.server.auth import Role, allows
from duckflock.server.limits import Release
from duckflock.server.pgwire import catalog
from duckflock.server.pgwire.catalog_relations import ANALYSES_SCHEMA
from duckflock.server.pgwire.compat import unquote
from duckflock.server.pgwire.encode import batch_rows
from duckflock.server.pgwire.types import array
from duckflock.server.service import Service
from duckflock.sql import IDENT


def _nothing() -> None:
    return None


@dataclass
class Outcome:
    """What a statement gives back: a tag, and rows when it has columns."""

    tag: str
    names: list[str] | None = None
    duck_types: list[str] | None = None
    next_batch: Callable[[], pa.RecordBatch | None] = field(default=lambda: None)
    close: Callable[[], None] = _nothing

    @classmethod
    def table(cls, tag: str, table: pa.Table, duck_types: list[str]) -> Outcome:
        batches = iter(table.to_batches())
        return cls(tag, table.column_names, duck_types, lambda: next(batches, None))


_INSERT = re.compile(
    rf"INSERT\s+INTO\s+((?:{IDENT})(?:\s*\.\s*(?:{IDENT})){{0,2}})\s*"
    rf"(?:\(\s*((?:{IDENT})(?:\s*,\s*(?:{IDENT}))*)\s*\))?\s*"
    r"((?:VALUES|SELECT|WITH|FROM|TABLE)\b.*)",
    re.S | re.I,
)
_NOT_APPEND = re.compile(r"\b(RETURNING|ON\s+CONFLICT|OR\s+REPLACE|OR\s+IGNORE)\b", re.I)
_COPY = re.compile(
    rf"COPY\s+(?:\((.*)\)|((?:{IDENT})(?:\s*\.\s*(?:{IDENT})){{0,2}})"
    rf"(?:\s*\(\s*((?:{IDENT})(?:\s*,\s*(?:{IDENT}))*)\s*\))?)\s+TO\s+STDOUT\b\s*(.*)",
    re.S | re.I,
)


class CopyFormat(StrEnum):
    """The formats of ``COPY … TO STDOUT`` this port writes."""

    TEXT = "text"
    CSV = "csv"
    BINARY = "binary"


@dataclass(frozen=True)
class CopyPlan:
    query: str
    format: CopyFormat
    header: bool


def copy_plan(sql: str) -> CopyPlan:
    """What ``COPY … TO STDOUT`` asks for (QueryRefusedError for any other COPY)."""
    match = _COPY.fullmatch(sql)
    if not match:
        raise QueryRefusedError("only COPY (query) TO STDOUT or COPY table TO STDOUT", sql=sql)
    query = match.group(1) or f"SELECT {match.group(3) or '*'} FROM {match.group(2)}"
    options = match.group(4).lower()
    found = re.search(r"format\s*'?(\w+)", options)
    legacy = re.search(r"\b(csv|binary)\b", options)  # COPY's old syntax: WITH CSV, BINARY
    kind = found.group(1) if found else (legacy.group(1) if legacy else "text")
    for option in ("format", "header"):
        if len(re.findall(rf"\b{option}\b", options)) > 1:
            raise QueryRefusedError(f"COPY option {option!r} is given more than once", sql=sql)
    if kind not in tuple(CopyFormat):
        raise QueryRefusedError(f"COPY format {kind!r} is not supported", sql=sql)
    ignored = _COPY_UNSUPPORTED.search(options)
    if ignored:  # written as asked or refused: never silently in another shape
        raise QueryRefusedError(f"COPY option {ignored.group(1)!r} is not supported", sql=sql)
    header = _COPY_HEADER.search(options)
    value = (header.group(1) or "true") if header else "false"
    if value not in _COPY_BOOLEANS:
        raise QueryRefusedError(f"COPY TO's HEADER takes a boolean, not {value!r}", sql=sql)
    return CopyPlan(query, CopyFormat(kind), _COPY_BOOLEANS[value])


# PostgreSQL's spellings of a COPY option's boolean (HEADER alone is true)
_COPY_BOOLEANS = {"true": True, "on": True, "1": True, "false": False, "off": False, "0": False}
_COPY_HEADER = re.compile(r"\bheader\b(?:\s+'?(\w+)'?)?")
# options that would change the bytes written (delimiter, NULL spelling, quoting, encoding)
_COPY_UNSUPPORTED = re.compile(r"\b(delimiter|null|quote|escape|force|encoding|default)\b")


_CREATE_MODIFIERS = {"OR", "REPLACE", "TEMP", "TEMPORARY", "UNIQUE", "PERSISTENT"}


def _created(sql: str) -> str:
    """PostgreSQL's tag for a CREATE: ``CREATE TABLE`` (was ``SELECT 0``), whatever
    modifiers (OR REPLACE, TEMP…) come between."""
    words = sql.split()[1:]
    kind = next((w.upper() for w in words if w.upper() not in _CREATE_MODIFIERS), "")
    return f"CREATE {kind}".strip()


def _tag(kind: str, sql: str) -> str:
    """The command tag of a statement DuckDB classed as ``kind``."""
    words = sql.upper().split()
    if kind in ("DROP", "ALTER"):
        return " ".join(words[:2])
    if words[:1] == ["CHECKPOINT"] or words[:2] == ["FORCE", "CHECKPOINT"]:
        return "CHECKPOINT"  # DuckDB calls it CALL
    if kind == "VACUUM" and words[:1] == ["ANALYZE"]:
        return "ANALYZE"
    return kind


class Executor:
    """Runs statements for one Postgres server over its serving service."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.db = service.db
        self.guard = service.guard
        self.timeout = service.settings.query_timeout
        self.ingest_timeout = service.settings.ingest_timeout

    def _slot(self, client: str) -> Release:
        """One of the service's query slots for ``client`` (53300 when none frees up)."""
        return self.service.take_slot(client)

    # -- reads ---------------------------------------------------------------------------------

    def _analyses(self, sql: str) -> tuple[str, dict[str, pa.Table]]:
        """``sql`` with each ``analyses.<name>`` replaced by a name registered for it."""
        if ANALYSES_SCHEMA not in sql.lower():
            return sql, {}
        tree = syntax_tree(self.db.execute, sql)  # (a nested ENUM parsed apart)
        if tree.get("error"):
            return sql, {}
        tables: dict[str, pa.Table] = {}
        for node in walk(tree):
            names = node.get("column_names")
            if node.get("class") == "COLUMN_REF" and isinstance(names, list) and len(names) > 2:
                if str(names[-3]).lower() == ANALYSES_SCHEMA:  # analyses.t.c, as SQLAlchemy
                    node["column_names"] = names[-2:]  # writes it: t.c (t is the alias)
                continue
            if node.get("type") != "BASE_TABLE":
                continue
            if str(node.get("schema_name", "")).lower() != ANALYSES_SCHEMA:
                continue
            if str(node.get("catalog_name", "")).lower() not in ("", "duckflock"):
                continue
            result = self.db.result(str(node["table_name"]))
            if result is None:
                raise AnalysisError(f"analysis {node['table_name']!r} has no result yet")
            alias = f"__duckflock_analysis_{len(tables)}"
            tables[alias] = readable(result.table)  # DuckDB scans no decimal256
            node.update(catalog_name="", schema_name="", table_name=alias)
            if not node.get("alias"):
                node["alias"] = str(result.name)
        if not tables:
            return sql, {}
        row = first_row(self.db.execute("SELECT json_deserialize_sql(?)", [json.dumps(tree)]))
        return str(row[0]) if row else sql, tables

    def select(
        self,
        sql: str,
        params: Any,
        *,
        client: str,
        on_cursor: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    ) -> Outcome:
        """A guarded SELECT for ``client``, open and ready to be read batch by batch (it
        holds a query slot until closed). ``on_cursor`` is told the query's cursor before
        it starts (a cancel request interrupts it)."""
        sql, tables = self._analyses(sql)

        def register(cursor: duckdb.DuckDBPyConnection) -> None:
            if on_cursor is not None:
                on_cursor(cursor)
            for alias, table in tables.items():
                cursor.register(alias, table)
            catalog.install(cursor, sql, self.db)  # the pg_catalog views the query reads

        release = self._slot(client)
        try:
            deadline = self.service.deadline()
            running = self.service.open_query(
                sql, params or None, deadline, register, batch_rows=batch_rows
            )
        except BaseException:
            release()
            raise
        description = running.cursor.description or []
        names = list(running.schema.names)
        duck_types = [str(d[1]) for d in description] or ["VARCHAR"] * len(names)

        def close() -> None:
            running.close()
            release()

        return Outcome("SELECT", names, duck_types, running.next_batch, close)

    def describe(
        self, sql: str, count: int, role: str, *, client: str
    ) -> tuple[list[str], list[str]] | None:
        """The columns ``sql`` will return, found without running it (None: no rows)."""
        if not self.is_select(sql):
            return None
        bare = sql.strip().rstrip(";")
        try:
            limited = f"SELECT * FROM ({bare}\n) AS q LIMIT 0"
            outcome = self.select(limited, [None] * count, client=client)
        except (ParserError, QueryRefusedError):
            outcome = self.select(bare, [None] * count, client=client)
        try:
            assert outcome.names is not None and outcome.duck_types is not None
            return outcome.names, outcome.duck_types
        finally:
            outcome.close()

    @staticmethod
    def is_select(sql: str) -> bool:
        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error as exc:
            raise translate(exc, sql=sql) from exc
        return len(statements) == 1 and statements[0].type == duckdb.StatementType.SELECT

    # -- writes ---------------------------------------------------------------------------------

    def run(
        self,
        sql: str,
        params: Any,
        role: str,
        on_cursor: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
        *,
        client: str,
    ) -> Outcome:
        """A statement of the ``sql`` kind: SELECT for everyone, the rest for admin."""
        if self.is_select(sql):
            return self.select(sql, params, client=client, on_cursor=on_cursor)
        if not allows(role, Role.ADMIN):
            raise QueryRefusedError(
                "this port runs SELECT for the read role, and INSERT for the write role; "
                "other statements need the admin role",
                sql=sql,
            )
        return self.statement(sql, params, client=client)

    def statement(self, sql: str, params: Any, *, client: str) -> Outcome:
        """DDL or DML (admin), in a transaction of its own, like ``POST /v1/sql``."""
        batches: list[pa.RecordBatch] = []
        release = self._slot(client)
        try:
            deadline = self.service.deadline()
            schema = self.service.run_statement(sql, params or None, deadline, batches)
        finally:
            release()
        kind = duckdb.extract_statements(sql)[0].type.name
        if kind in ("INSERT", "UPDATE", "DELETE") and schema.names == ["Count"]:
            count = sum(int(b.column(0)[0].as_py() or 0) for b in batches if b.num_rows)
            tag = f"INSERT 0 {count}" if kind == "INSERT" else f"{kind} {count}"
            return Outcome(tag)
        if kind == "CREATE" and schema.names == ["Count"]:
            rows = [b.column(0)[0].as_py() for b in batches if b.num_rows]
            if rows:  # CREATE TABLE … AS: PostgreSQL's tag is SELECT n
                return Outcome(f"SELECT {int(rows[0] or 0)}")
            return Outcome(_created(sql))
        tag = _tag(kind, sql)
        if not schema.names or schema.names == ["Success"]:
            return Outcome(tag)
        table = pa.Table.from_batches(batches, schema=schema)
        return Outcome.table("SELECT", table, ["VARCHAR"] * table.num_columns)

    def insert(self, sql: str, params: Any, role: str, *, client: str) -> Outcome:
        """``INSERT INTO t [(cols)] VALUES … | SELECT …`` through the group-commit writer.

        The whole statement passes the rule ``POST /v1/sql`` asks first: its SELECT
        alone is a read, and ``db.insert`` sees only the target."""
        project.check_statement(sql)  # duckflock's own schema: through the analyses API only
        match = _INSERT.fullmatch(sql)
        if match is None or _NOT_APPEND.search(match.group(3)):
            if allows(role, Role.ADMIN):
                return self.statement(sql, params, client=client)
            raise QueryRefusedError(
                "the write role may INSERT INTO table [(columns)] VALUES … or SELECT …; "
                "RETURNING, ON CONFLICT and other statements need the admin role",
                sql=sql,
            )
        if not allows(role, Role.WRITE):
            raise QueryRefusedError("INSERT needs a token with the write role", sql=sql)
        target, columns, source = match.group(1), match.group(2), match.group(3)
        release = self._slot(client)  # its SELECT runs like any other query
        try:
            outcome = self.service.run_query(source, params or None, self.service.deadline())
        finally:
            release()
        if outcome.truncated:
            raise QueryRefusedError(
                f"one INSERT may add at most {self.guard.row_cap:,} rows", sql=sql
            )
        table = outcome.table
        names = [unquote(c) for c in re.findall(IDENT, columns)] if columns else None
        if names is None:
            names = [name for name, _ in self._columns(target)][: table.num_columns]
        if len(names) != table.num_columns:
            raise QueryRefusedError(
                f"INSERT names {len(names)} columns but gives {table.num_columns} values",
                sql=sql,
            )
        table = self._arrays(target, table.rename_columns(names))
        receipt = self.db.insert(target, table, timeout=self.ingest_timeout)
        return Outcome(f"INSERT 0 {receipt.rows}")

    def _arrays(self, target: str, table: pa.Table) -> pa.Table:
        """Array literals in text bound for array columns, as lists (types/array.py)."""
        texts = [
            i
            for i, column in enumerate(table.columns)
            if pa.types.is_string(column.type) and array.braced(column)
        ]
        if texts:
            kinds = {name.lower(): kind for name, kind in self._columns(target)}
            for i in texts:
                name = table.column_names[i]
                if not kinds.get(name.lower(), "").endswith("]"):
                    continue
                lists = array.literals(table.column(i))
                if lists is not None:
                    table = table.set_column(i, name, lists)
        return table

    def _columns(self, target: str) -> list[tuple[str, str]]:
        """Each column of ``target``: its name and type, in order."""
        cursor = self.db.own_cursor()
        try:
            identity = Resolver(cursor).table(target)
            rows = cursor.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = ? "
                "AND schema_name = ? AND table_name = ? ORDER BY column_index",
                list(identity),
            ).fetchall()
        finally:
            cursor.close()
        return [(str(name), str(kind)) for name, kind in rows]
