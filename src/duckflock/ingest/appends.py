"""Turning a batch of insert calls into DuckDB statements, and isolating bad calls.

:func:`commit_batch` appends a batch with one statement per table and column list and
commits it. When the rows are at fault it bisects the calls, commits every half that goes
in cleanly, and gives each call that fails on its own a :class:`RowRejectedError` naming
its first offending row (and column, when it can be told), found by a prefix search
inside rolled-back transactions.

*Any* exception raised while appending a call's rows is that call's fault, whatever its
type — a constraint or cast error from DuckDB, but also a ``RuntimeError`` from binding a
lone surrogate, a ``UnicodeDecodeError`` from an Arrow column holding invalid UTF-8, an
``OverflowError``: the writer thread must never die of a caller's data. Only a storage
fault (:func:`storage_fault`: I/O, disk full, an invalidated database) is not: it raises
:class:`StorageFailure` and the writer fails the rest of the batch with it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from duckflock.core.names import Identity
from duckflock.core.transactions import rollback_quietly
from duckflock.errors import (
    ConflictError,
    ConversionError,
    QueryError,
    RowRejectedError,
    translate,
)
from duckflock.ingest.receipts import Receipt
from duckflock.ingest.rows import Part
from duckflock.ingest.schema import TableSchema
from duckflock.sql import quote_ident

if TYPE_CHECKING:
    from duckflock.lake.connection import Retry

# Below this many values a batch is appended as one parameterised VALUES statement; above
# it, as an Arrow scan. Measured here: 50 one-column rows take 0.66 ms as VALUES and 1.6 ms
# through Arrow (register + scan + unregister); 1,000 rows take 5.9 ms and 2.8 ms.
VALUES_MAX_PARAMS = 256
BATCH_VIEW = "__duckflock_batch"

# Failures typically caused by the rows themselves (kept for reference and callers that
# classify DuckDB errors; attempt() treats every non-storage exception as the rows' fault).
ROW_FAULTS: tuple[type[BaseException], ...] = (
    duckdb.ConstraintException,
    duckdb.ConversionException,
    duckdb.InvalidInputException,
    duckdb.BinderException,
    duckdb.CatalogException,
    duckdb.TypeMismatchException,
    duckdb.OutOfRangeException,
    duckdb.TransactionException,
    duckdb.NotImplementedException,
    pa.ArrowException,
    TypeError,
    ValueError,
    OverflowError,
)


# DuckDB errors that are the storage's fault whatever the rows: the file system failed, or
# DuckDB gave up on the database instance. Checked by experiment on 1.5.5: a commit that
# cannot write (RLIMIT_FSIZE, disk full) raises TransactionException "Failed to commit:
# Could not write file …" and the connection stays usable; a failed checkpoint raises
# FatalException and invalidates the instance until it is reopened.
_STORAGE_ERRORS: tuple[type[BaseException], ...] = (
    duckdb.IOException,
    duckdb.FatalException,
    duckdb.ConnectionException,
    duckdb.PermissionException,
    duckdb.InterruptException,
)
_STORAGE_WORDS = (
    "could not write",
    "could not fsync",
    "could not read",
    "could not open",
    "could not truncate",
    "no space left",
    "file too large",
    "input/output error",
    "disk quota",
    "database has been invalidated",
    # a DuckLake catalog in PostgreSQL that went away (postgres_scanner's words)
    "unable to connect to postgres",
    "failed to query most recent snapshot",
    "failed to execute query",
)
# DuckDB's FatalException after a commit whose automatic checkpoint failed: the rows are
# in the WAL ("Transaction COMMIT succeeded and is durable, but the autocheckpoint failed.
# Reopen the database instance to recover.")
_DURABLE_WORDS = "commit succeeded and is durable"


def storage_fault(exc: BaseException, cursor: duckdb.DuckDBPyConnection | None = None) -> bool:
    """True when ``exc`` is the storage's fault rather than the rows'.

    DuckDB's InternalException is both: a value can raise one (``['', {}]`` bound to a
    DECIMAL column: "Operation requires a flat vector") and leave the connection fine,
    or the instance can be broken. ``cursor`` (outside any transaction) is then probed.
    """
    if isinstance(exc, _STORAGE_ERRORS):
        return True
    if not isinstance(exc, duckdb.Error):
        return False
    message = str(exc).lower()
    if any(word in message for word in _STORAGE_WORDS):
        return True
    if isinstance(exc, duckdb.InternalException) and cursor is not None:
        try:
            cursor.execute("SELECT 1").fetchall()
        except Exception:
            return True
    return False


def invalidated(exc: BaseException) -> bool:
    """True when DuckDB gave up on the database instance: it must be reopened."""
    if isinstance(exc, duckdb.FatalException):
        return True
    return "database has been invalidated" in str(exc).lower()


class StorageFailure(Exception):
    """A commit failed for a reason that is not the rows' fault.

    ``committed``: DuckDB reported the commit itself durable (the checkpoint after it
    failed). ``invalidated``: the database instance must be reopened before the next
    commit.
    """

    def __init__(self, message: str, *, committed: bool = False, invalidated: bool = False):
        super().__init__(message)
        self.committed = committed
        self.invalidated = invalidated


class Group:
    """Rows for one statement: one table, one column list, Python rows or Arrow."""

    __slots__ = ("arrows", "capture", "columns", "rows", "schema")

    def __init__(
        self,
        schema: TableSchema,
        columns: tuple[str, ...],
        rows: list[tuple[Any, ...]] | None = None,
        arrows: list[pa.Table] | None = None,
    ) -> None:
        self.schema = schema
        self.columns = columns
        self.rows = rows
        self.arrows = arrows
        self.capture = False  # hand the stored rows (RETURNING *) to incremental analyses

    def takes(self, part: Part) -> bool:
        if part.columns != self.columns:
            return False
        if part.rows is not None:
            return self.rows is not None
        assert part.arrow is not None
        return self.arrows is not None and bool(part.arrow.schema.equals(self.arrows[0].schema))

    def add(self, part: Part) -> None:
        if part.rows is not None:
            assert self.rows is not None
            self.rows.extend(part.rows)
        else:
            assert self.arrows is not None
            self.arrows.append(part.arrow)


def plan(receipts: Sequence[Receipt], capture: frozenset[Identity] = frozenset()) -> list[Group]:
    """Group the calls' rows into statements, keeping each table's rows in order.

    Rows join the latest group of their table when the column list and kind match;
    otherwise they open a new group, so rows of one table are never reordered. Single
    rows (the hot path) are appended without any object per row. Groups of tables in
    ``capture`` will return the rows as stored.
    """
    groups: list[Group] = []
    latest: dict[str, Group] = {}
    for receipt in receipts:
        schema = receipt._schema
        assert schema is not None
        key = schema.sql_name
        group = latest.get(key)
        row = receipt._row
        if row is not None:
            if group is not None and group.rows is not None and group.columns == receipt._columns:
                group.rows.append(row)
            else:
                group = latest[key] = Group(schema, receipt._columns, rows=[row])
                groups.append(group)
            continue
        for part in receipt._parts or ():
            if group is not None and group.takes(part):
                group.add(part)
            else:
                if part.rows is not None:
                    group = Group(schema, part.columns, rows=list(part.rows))
                else:
                    group = Group(schema, part.columns, arrows=[part.arrow])
                latest[key] = group
                groups.append(group)
    if capture:
        for group in groups:
            group.capture = group.schema.key in capture
    return groups


def append(
    cursor: duckdb.DuckDBPyConnection, group: Group, *, autocommit: bool = False
) -> pa.Table | None:
    """Run the statement that appends ``group``'s rows.

    Returns the rows as DuckDB stored them (defaults filled, values cast) when the group
    is captured, else None. With ``autocommit`` (no transaction open), the rare shapes
    that take several statements open one, so the call stays all-or-nothing; the common
    ones stay one autocommitted statement.
    """
    table = group.schema.sql_name
    returning = " RETURNING *" if group.capture else ""
    if not group.columns:  # rows given as {}: every column takes its DEFAULT
        if autocommit and len(group.rows or ()) > 1:
            return _in_transaction(cursor, group)
        stored = [
            _stored(cursor.execute(f"INSERT INTO {table} DEFAULT VALUES{returning}"), group)
            for _ in range(len(group.rows or ()))
        ]
        kept = [t for t in stored if t is not None]
        return pa.concat_tables(kept) if kept else None
    columns = ", ".join(quote_ident(c) for c in group.columns)
    if group.rows is not None:
        rows = group.rows
        width = len(group.columns)
        if len(rows) * width <= VALUES_MAX_PARAMS:
            return _values(cursor, table, columns, rows, group)
        try:
            # column lists by index: zip(*rows) is 30x slower at 100k rows
            arrays = [_column([row[i] for row in rows]) for i in range(width)]
        except Exception:
            # values Arrow cannot hold in one column (a list among strings, an object):
            # bind them as VALUES parameters, so a row is accepted or refused the same
            # whatever the size of its batch (the rejection's prefix search relies on it)
            if autocommit:
                return _in_transaction(cursor, group)
            step = max(1, VALUES_MAX_PARAMS // width)
            parts = [
                _values(cursor, table, columns, rows[k : k + step], group)
                for k in range(0, len(rows), step)
            ]
            kept = [t for t in parts if t is not None]
            return pa.concat_tables(kept) if kept else None
        data = pa.Table.from_arrays(arrays, names=[f"c{i}" for i in range(width)])
    else:
        assert group.arrows is not None
        data = group.arrows[0] if len(group.arrows) == 1 else pa.concat_tables(group.arrows)
    try:
        cursor.register(BATCH_VIEW, data)
    except duckdb.CatalogException:
        # left by a registration that failed half-way (on a lake, register starts a
        # transaction that asks the catalog, which may be away): replace it
        with contextlib.suppress(duckdb.Error):
            cursor.unregister(BATCH_VIEW)
        cursor.execute(f"DROP VIEW IF EXISTS temp.main.{BATCH_VIEW}")
        cursor.register(BATCH_VIEW, data)
    try:
        result = cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT * FROM {BATCH_VIEW}{returning}"
        )
        return _stored(result, group)
    finally:
        cursor.unregister(BATCH_VIEW)


def _in_transaction(cursor: duckdb.DuckDBPyConnection, group: Group) -> pa.Table | None:
    """Append ``group`` with several statements inside one transaction."""
    cursor.execute("BEGIN TRANSACTION")
    stored = append(cursor, group)
    cursor.execute("COMMIT")
    return stored


def _values(
    cursor: duckdb.DuckDBPyConnection,
    table: str,
    columns: str,
    rows: list[tuple[Any, ...]],
    group: Group,
) -> pa.Table | None:
    """Append ``rows`` as one parameterised VALUES statement."""
    one = "(" + ", ".join("?" * len(group.columns)) + ")"
    sql = f"INSERT INTO {table} ({columns}) VALUES " + ", ".join([one] * len(rows))
    returning = " RETURNING *" if group.capture else ""
    result = cursor.execute(sql + returning, [value for row in rows for value in row])
    return _stored(result, group)


_TEXTABLE = (int, float, str, decimal.Decimal, dt.date, dt.time, dt.timedelta)


def _column(values: list[Any]) -> pa.Array:
    """Python values as an Arrow column for DuckDB to cast to the table's types.

    Arrow infers one type per column and refuses what DuckDB's VALUES path takes (ints
    beyond 64 bits for HUGEINT, ints mixed with strings): such columns go as text, and
    DuckDB casts them exactly as it casts a VALUES parameter — the same rows are
    accepted whatever the batch size.
    """
    try:
        return pa.array(values)
    except (OverflowError, pa.ArrowInvalid, pa.ArrowTypeError):
        if all(v is None or isinstance(v, _TEXTABLE) for v in values):
            return pa.array([None if v is None else str(v) for v in values], pa.string())
        raise


def _stored(result: duckdb.DuckDBPyConnection, group: Group) -> pa.Table | None:
    return result.to_arrow_table() if group.capture else None


def attempt(
    cursor: duckdb.DuckDBPyConnection,
    groups: Sequence[Group],
    *,
    commit: bool,
    stored: list[tuple[Identity, pa.Table]] | None = None,
    begin: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
) -> BaseException | None:
    """Append ``groups`` atomically; commit or roll back. Returns the rows' fault, if any.

    One statement that is to be committed runs in autocommit mode: BEGIN and COMMIT are
    round trips that each give up the GIL, and winning it back from busy producer threads
    is what small batches wait for. Raises :class:`StorageFailure` for anything that is
    not the rows' fault. Never sends COMMIT after a failed statement (DuckDB would answer
    it quietly and roll back). Rows of captured groups are added to ``stored`` once
    committed. ``begin`` runs first inside the transaction (a lake tags the commit),
    and forces one.
    """
    kept: list[tuple[Identity, pa.Table]] = []
    try:
        if commit and len(groups) == 1 and begin is None:
            table = append(cursor, groups[0], autocommit=True)
            if table is not None:
                kept.append((groups[0].schema.key, table))
        else:
            cursor.execute("BEGIN TRANSACTION")
            if begin is not None and commit:
                begin(cursor)
            for group in groups:
                table = append(cursor, group)
                if table is not None:
                    kept.append((group.schema.key, table))
            cursor.execute("COMMIT" if commit else "ROLLBACK")
        if commit and stored is not None:
            stored.extend(kept)
        return None
    except Exception as exc:  # whatever the type: the rows' fault unless storage says so
        rollback_quietly(cursor)
        if not storage_fault(exc, cursor):
            return exc
        durable = commit and _DURABLE_WORDS in str(exc).lower()
        if durable and stored is not None:
            stored.extend(kept)
        raise StorageFailure(str(exc), committed=durable, invalidated=invalidated(exc)) from exc


class Committer:
    """Commits batches on one cursor; what it stores for captured tables it collects."""

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        on_schema_change: Callable[[], None] | None = None,
        retry: Retry | None = None,
    ) -> None:
        self.cursor = cursor
        self.on_schema_change = on_schema_change
        self.capture: frozenset[Identity] = frozenset()
        self.stored: list[tuple[Identity, pa.Table]] = []
        # when a failed commit is tried again (a lake: catalog away, conflict retries
        # spent); None: never
        self.retry = retry

    def commit_batch(self, receipts: list[Receipt]) -> bool:
        """Commit ``receipts``; mark each committed, or give it its own error.

        Returns True when the whole batch went in at once. Raises
        :class:`StorageFailure` when the storage fails; calls committed before that
        (or by the failing commit itself, when DuckDB says it is durable) stay marked
        committed.
        """
        failure = self._attempt(receipts)
        if failure is None:
            return True
        if self.retry is not None and self.retry.conflict(failure):
            # a real conflict (the retries are spent), not the rows' fault: no bisecting
            for receipt in receipts:
                receipt._error = ConflictError(
                    f"rows for {receipt.table!r} not committed: the lake kept conflicting "
                    f"after retries: {failure}"
                )
            return False
        if len(receipts) == 1:
            receipts[0]._error = self._rejection(receipts[0], failure)
        else:
            self._isolate(receipts)
        return False

    def _attempt(self, receipts: list[Receipt]) -> BaseException | None:
        """Commit ``receipts`` together; mark them committed, or return the rows' fault.

        With ``retry`` (a lake), each commit carries a tag: after a storage failure the
        catalog is asked whether the tag landed (a commit whose answer was lost), and
        if not the batch is tried again until ``retry`` gives up."""
        retry = self.retry
        tag = retry.new_tag() if retry is not None else None
        started = time.monotonic()
        tries = 0
        while True:
            try:
                failure = attempt(
                    self.cursor,
                    plan(receipts, self.capture),
                    commit=True,
                    stored=self.stored,
                    begin=None if retry is None else retry.tagger(tag),
                )
            except StorageFailure as exc:
                if exc.committed or retry is None or tag is None:
                    if exc.committed:
                        self._mark(receipts)
                    raise
                landed = retry.landed(self.cursor, tag, started)
                if landed:
                    self._mark(receipts)
                    return None
                pause = None if landed is None else retry.delay(exc, tries, started)
                if pause is None:
                    raise
            else:
                if failure is None:
                    self._mark(receipts)
                    return None
                pause = None if retry is None else retry.delay(failure, tries, started)
                if pause is None:
                    return failure
            tries += 1
            time.sleep(pause)

    @staticmethod
    def _mark(receipts: list[Receipt]) -> None:
        for receipt in receipts:
            receipt._committed = True

    def _isolate(self, receipts: list[Receipt]) -> None:
        """Bisect calls whose joint commit failed: commit the halves that go in cleanly,
        and give each call that fails alone its own error. At most 2n-1 attempts."""
        middle = len(receipts) // 2
        for half in (receipts[:middle], receipts[middle:]):
            fault = self._attempt(half)
            if fault is None:
                continue
            if len(half) == 1:
                half[0]._error = self._rejection(half[0], fault)
            else:
                self._isolate(half)

    def _rejection(self, receipt: Receipt, failure: BaseException) -> RowRejectedError:
        try:
            return _rejection(self.cursor, receipt, failure, self.on_schema_change)
        except StorageFailure:
            raise
        except Exception as exc:  # describing the row failed too: still the call's error
            logging.getLogger("duckflock").debug("could not narrow a rejection", exc_info=exc)
            return RowRejectedError(
                table=receipt.table, cause=_cause(failure), row_index=None, row=None
            )


def _rejection(
    cursor: duckdb.DuckDBPyConnection,
    receipt: Receipt,
    failure: BaseException,
    on_schema_change: Callable[[], None] | None,
) -> RowRejectedError:
    """The error for a bad call, naming its first offending row."""
    if on_schema_change is not None and isinstance(
        failure, duckdb.CatalogException | duckdb.BinderException
    ):
        on_schema_change()  # the table changed under the writer: re-read it next time
    row_index = 0
    if receipt._nrows > 1:
        # the smallest prefix of the call that fails ends with the offending row
        low, high = 1, receipt._nrows
        while low < high:
            middle = (low + high) // 2
            head = [p for p in (part.head(middle) for part in receipt.parts()) if p]
            trial = Receipt(receipt._schema, parts=head, nrows=middle)
            fault = attempt(cursor, plan([trial]), commit=False)
            if fault is not None:
                high, failure = middle, fault
            else:
                low = middle + 1
        row_index = low - 1
    row, column = _row_at(receipt, row_index)
    if column is None and not isinstance(failure, duckdb.Error) and row is not None:
        column = _unbindable(cursor, row)
        value = None if column is None else row.get(column)
        if isinstance(value, str):
            failure = _encoding_error(value) or failure
    if column is None:
        try:
            column = _culprit(cursor, receipt, failure, row)
        except Exception:  # only context for the message: never fail the rejection
            column = None
    return RowRejectedError(
        table=receipt.table,
        cause=_cause(failure),
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
    receipt: Receipt,
    failure: BaseException,
    row: dict[str, Any] | None,
) -> str | None:
    """The column to blame, when it can be told: from DuckDB's message, or by trying
    to cast each of the row's values to its column's type."""
    named = column_in(str(failure))
    if named is not None:
        return named
    if row is None or receipt._schema is None:
        return None
    try:
        types = dict(
            cursor.execute(
                "SELECT lower(column_name), data_type FROM duckdb_columns() "
                "WHERE database_name = ? AND schema_name = ? AND table_name = ?",
                list(receipt._schema.identity),
            ).fetchall()
        )
        for column, value in row.items():
            kind = types.get(str(column).lower())
            if value is None or kind is None:
                continue
            ok = cursor.execute(f"SELECT TRY_CAST(? AS {kind}) IS NOT NULL", [value]).fetchone()
            if ok is not None and not ok[0]:
                return str(column)
    except (duckdb.Error, TypeError, ValueError):
        return None  # only context for the message: never fail the rejection over it
    return None


def _cause(exc: BaseException) -> QueryError:
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


def _row_at(receipt: Receipt, row_index: int) -> tuple[dict[str, Any] | None, str | None]:
    """The call's row ``row_index`` as a dict, and the first column whose value cannot
    even be read back (an Arrow string holding invalid UTF-8), if any."""
    for part in receipt.parts():
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
