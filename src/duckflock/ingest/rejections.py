"""The error of a call the writer refused: its first offending row, and the column to
blame when it can be told.

The row is found by a prefix search over the call inside rolled-back transactions
(``try_alone``, given by the committer); the column from DuckDB's message, from a value
DuckDB cannot even bind, or by casting each of the row's values to its column's type.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import duckdb
import pyarrow as pa

from duckflock.errors import ConversionError, QueryError, RowRejectedError, translate
from duckflock.ingest.receipts import Call
from duckflock.ingest.storage import StorageFailure, invalidated, storage_fault


def rejection(
    cursor: duckdb.DuckDBPyConnection,
    call: Call,
    failure: BaseException,
    on_schema_change: Callable[[], None] | None,
    try_alone: Callable[[Call], BaseException | None],
) -> RowRejectedError:
    """The error for a bad call, naming its first offending row."""
    if on_schema_change is not None and isinstance(
        failure, duckdb.CatalogException | duckdb.BinderException
    ):
        on_schema_change()  # the table changed under the writer: re-read it next time
    row_index = 0
    if call.nrows > 1:
        # the smallest prefix of the call that fails ends with the offending row
        low, high = 1, call.nrows
        while low < high:
            middle = (low + high) // 2
            head = [p for p in (part.head(middle) for part in call.all_parts()) if p]
            fault = try_alone(Call(call.target, parts=head, nrows=middle))
            if fault is not None:
                high, failure = middle, fault
            else:
                low = middle + 1
        row_index = low - 1
    row, column = _row_at(call, row_index)
    if column is None and not isinstance(failure, duckdb.Error) and row is not None:
        column = _unbindable(cursor, row)
        value = None if column is None else row.get(column)
        if isinstance(value, str):
            failure = _encoding_error(value) or failure
    if column is None:
        try:
            column = _culprit(cursor, call, failure, row)
        except Exception:  # only context for the message: never fail the rejection
            column = None
    return RowRejectedError(
        table=call.table,
        cause=cause(failure),
        row_index=row_index,
        row=row,
        column=column,
    )


def _unbindable(cursor: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> str | None:
    """The first column whose value DuckDB cannot even take as a parameter (a str with a
    lone surrogate, an object of no SQL type): the culprit of a non-DuckDB failure."""
    for column, value in row.items():
        try:
            cursor.execute("SELECT ?", [value]).fetchall()
        except duckdb.Error as exc:
            if storage_fault(exc):
                raise StorageFailure(str(exc), invalidated=invalidated(exc)) from exc
            return str(column)
        except Exception:
            return str(column)
    return None


# DuckDB's messages that name the column at fault (checked on 1.5.5)
_COLUMN_IN_MESSAGE = (
    re.compile(r"NOT NULL constraint failed: [^.\s]+\.(\w+)"),
    re.compile(r'Duplicate key "(\w+):'),
)


def column_in(message: str) -> str | None:
    """The column DuckDB's error ``message`` blames, when it names one."""
    for pattern in _COLUMN_IN_MESSAGE:
        found = pattern.search(message)
        if found:
            return found.group(1)
    return None


def _culprit(
    cursor: duckdb.DuckDBPyConnection,
    call: Call,
    failure: BaseException,
    row: dict[str, Any] | None,
) -> str | None:
    """The column to blame, when it can be told: from DuckDB's message, or by trying
    to cast each of the row's values to its column's type."""
    named = column_in(str(failure))
    if named is not None:
        return named
    if row is None or call.target is None:
        return None
    try:
        types = dict(
            cursor.execute(
                "SELECT lower(column_name), data_type FROM duckdb_columns() "
                "WHERE database_name = ? AND schema_name = ? AND table_name = ?",
                list(call.target.identity),
            ).fetchall()
        )
        for column, value in row.items():
            kind = types.get(str(column).lower())
            if value is None or kind is None:
                continue
            # read whole (fetchall): the writer's cursor must not idle inside a transaction
            ok = cursor.execute(f"SELECT TRY_CAST(? AS {kind}) IS NOT NULL", [value]).fetchall()
            if ok and not ok[0][0]:
                return str(column)
    except (duckdb.Error, TypeError, ValueError):
        return None  # only context for the message: never fail the rejection over it
    return None


def cause(exc: BaseException) -> QueryError:
    if isinstance(exc, duckdb.Error):
        return translate(exc)
    if isinstance(exc, UnicodeError):
        reason = "a string is not valid Unicode (a lone surrogate, or invalid UTF-8)"
    else:
        reason = "a value cannot be passed to DuckDB"
    return ConversionError(f"{reason}: {type(exc).__name__}: {exc}")


def _encoding_error(value: str) -> UnicodeEncodeError | None:
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        return exc
    return None


def _row_at(call: Call, row_index: int) -> tuple[dict[str, Any] | None, str | None]:
    """The call's row ``row_index`` as a dict, and the first column whose value cannot
    even be read back (an Arrow string holding invalid UTF-8), if any."""
    for part in call.all_parts():
        for position in range(len(part)):
            if part.index_of(position) == row_index:
                if part.arrow is None:
                    return part.row(position), None
                return _arrow_row(part.arrow, position)
    return None, None


def _arrow_row(table: pa.Table, position: int) -> tuple[dict[str, Any], str | None]:
    row: dict[str, Any] = {}
    bad: str | None = None
    for name, column in zip(table.column_names, table.columns, strict=True):
        try:
            row[name] = column.slice(position, 1).to_pylist()[0]
        except Exception as exc:
            row[name] = f"<unreadable: {type(exc).__name__}>"
            bad = bad or name
    return row, bad
