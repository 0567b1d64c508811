"""The query endpoint's guard: one read-only SELECT, a row cap and a time limit.

Two layers. The database itself is locked down (:meth:`Database.lock_down`): no file or
network access, no extensions, configuration locked — DuckDB enforces that for every
statement. On top, each query is checked with DuckDB's own parser: exactly one
statement, of type SELECT, that serialises as a SELECT (PRAGMA and EXPLAIN do not), and
that calls no table function that reads files or runs other SQL. Then it runs on a
cursor of its own, interrupted when its time is up, and at most ``row_cap`` rows are
fetched.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from ..database import Database
from ..errors import ParserError, QueryRefusedError, QueryTimeoutError, translate
from ..syntax import walk

# table functions that read files or the network, run SQL of their own, or write
_DENIED_FUNCTIONS = {
    "query",
    "query_table",
    "glob",
    "sniff_csv",
    "parquet_scan",
    "parquet_metadata",
    "parquet_schema",
    "parquet_file_metadata",
    "parquet_kv_metadata",
    "iceberg_scan",
    "delta_scan",
    "checkpoint",
    "force_checkpoint",
    "duckdb_secrets",
}
_DENIED_SCALARS = {"nextval", "setval", "getenv"}


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
        row = self.db.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
        tree = json.loads(row[0] if row else "{}")
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
                if "/" in name or "\\" in name or "." in name:
                    raise QueryRefusedError(f"reading files ({name!r}) is not allowed", sql=sql)
            elif node.get("class") == "FUNCTION":
                name = str(node.get("function_name", "")).lower()
                if name in _DENIED_SCALARS:
                    raise QueryRefusedError(f"{name}() is not allowed here", sql=sql)

    def run(self, sql: str, params: Any = None) -> QueryOutcome:
        """Check, then run with the time limit; at most ``row_cap`` rows come back."""
        self.check(sql)
        cursor = self.db.cursor()
        timer = threading.Timer(self.timeout, cursor.interrupt)
        timer.daemon = True
        timer.start()
        try:
            reader = cursor.execute(sql, params).to_arrow_reader(8192)
            batches: list[pa.RecordBatch] = []
            rows = 0
            truncated = False
            for batch in reader:
                if rows + batch.num_rows > self.row_cap:
                    batches.append(batch.slice(0, self.row_cap - rows))
                    truncated = True
                    break
                batches.append(batch)
                rows += batch.num_rows
            table = pa.Table.from_batches(batches, schema=reader.schema)
            return QueryOutcome(table, truncated)
        except duckdb.InterruptException as exc:
            raise QueryTimeoutError(
                f"the query ran past its {self.timeout} s limit and was stopped", sql=sql
            ) from exc
        except duckdb.PermissionException as exc:
            raise QueryRefusedError(str(exc), sql=sql) from exc
        except duckdb.Error as exc:
            raise translate(exc, sql=sql, params=params) from exc
        finally:
            timer.cancel()
            cursor.close()  # db.cursor() tracks it weakly: closed and dropped here
