"""Turning a batch of insert calls into DuckDB statements, and isolating bad calls.

:func:`plan` groups a batch's rows into one statement per table and column list,
:func:`append` runs one, :func:`attempt` runs them all and commits or rolls back. The
committer (:mod:`duckflock.ingest.committer`) decides what to do when they fail.

*Any* exception raised while appending a call's rows is that call's fault, whatever its
type — a constraint or cast error from DuckDB, but also a ``RuntimeError`` from binding a
lone surrogate, a ``UnicodeDecodeError`` from an Arrow column holding invalid UTF-8, an
``OverflowError``: the writer thread must never die of a caller's data. Only a storage
fault (:mod:`duckflock.ingest.storage`) is not: it raises :class:`StorageFailure` and the
writer fails the rest of the batch with it. The rejection's wording is
:mod:`duckflock.ingest.rejections`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from duckflock.core.decimals import bindable_params
from duckflock.core.faults import FaultHook
from duckflock.core.names import Identity
from duckflock.core.transactions import rollback_quietly
from duckflock.ingest.receipts import Call
from duckflock.ingest.rows import Part
from duckflock.ingest.schema import TableSchema
from duckflock.ingest.storage import DURABLE_WORDS, StorageFailure, invalidated, storage_fault
from duckflock.sql import quote_ident

if TYPE_CHECKING:
    pass

# Below this many values a batch is appended as one parameterised VALUES statement; above
# it, as an Arrow scan. Measured here: 50 one-column rows take 0.66 ms as VALUES and 1.6 ms
# through Arrow (register + scan + unregister); 1,000 rows take 5.9 ms and 2.8 ms.
VALUES_MAX_PARAMS = 256
# Rows of single-row calls (acknowledged inserts from many threads: the hot path) whose
# every column holds one plain Python type go in as one list parameter per column that
# DuckDB unnests: parsing and planning a 50-tuple VALUES statement was most of the
# writer's CPU per batch (measured here, 50 one-column rows: 1.3 ms for VALUES, 0.57 ms
# unnested); past about 2,000 rows an Arrow scan is cheaper again.
UNNEST_MAX_ROWS = 1_000
# the types whose Python list DuckDB converts value by value as it binds a parameter
# (so a column of them is stored as the VALUES path stores it); ints within BIGINT,
# floats but NaN (tests/test_ingest_fastpath.py compares the two for every column type)
_LISTED_TYPES = frozenset({str, int, float, bool})
_BIGINT = (-(2**63), 2**63 - 1)
# a lone int parameter is an INTEGER when it fits one, else a BIGINT, and a list of them
# is all BIGINT once one does not fit: the width shows where a cast keeps it (BIT)
_INTEGER = (-(2**31), 2**31 - 1)
BATCH_VIEW = "__duckflock_batch"


class Group:
    """Rows for one statement: one table, one column list, Python rows or Arrow."""

    __slots__ = ("arrows", "capture", "columns", "rows", "schema", "singles")

    def __init__(
        self,
        schema: TableSchema,
        columns: tuple[str, ...],
        rows: list[tuple[Any, ...]] | None = None,
        arrows: list[pa.Table] | None = None,
        *,
        singles: bool = False,
    ) -> None:
        self.schema = schema
        self.columns = columns
        self.rows = rows
        self.arrows = arrows
        self.capture = False  # hand the stored rows (RETURNING *) to incremental analyses
        # every row is a call of its own, so a failed statement is bisected down to one
        # row, whose error comes from VALUES: rows may be unnested (see UNNEST_MAX_ROWS)
        self.singles = singles

    def takes(self, part: Part) -> bool:
        if part.columns != self.columns:
            return False
        if part.rows is not None:
            return self.rows is not None
        assert part.arrow is not None
        return self.arrows is not None and bool(part.arrow.schema.equals(self.arrows[0].schema))

    def add(self, part: Part) -> None:
        self.singles = False
        if part.rows is not None:
            assert self.rows is not None
            self.rows.extend(part.rows)
        else:
            assert self.arrows is not None
            self.arrows.append(part.arrow)


def plan(calls: Sequence[Call], capture: frozenset[Identity] = frozenset()) -> list[Group]:
    """Group the calls' rows into statements, keeping each table's rows in order.

    Rows join the latest group of their table when the column list and kind match;
    otherwise they open a new group, so rows of one table are never reordered. Single
    rows (the hot path) are appended without any object per row. Groups of tables in
    ``capture`` will return the rows as stored.
    """
    groups: list[Group] = []
    latest: dict[str, Group] = {}
    for call in calls:
        schema = call.target
        assert schema is not None
        key = schema.sql_name
        group = latest.get(key)
        row = call.row
        if row is not None:
            if group is not None and group.rows is not None and group.columns == call.columns:
                group.rows.append(row)
            else:
                group = latest[key] = Group(schema, call.columns, rows=[row], singles=True)
                groups.append(group)
            continue
        for part in call.parts or ():
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
        if group.singles and 1 < len(rows) <= UNNEST_MAX_ROWS:
            lists = _lists(rows, width)
            if lists is not None:
                unnested = ", ".join(["unnest(?)"] * width)
                sql = f"INSERT INTO {table} ({columns}) SELECT {unnested}{returning}"
                return _stored(cursor.execute(sql, lists), group)
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
    params = [value for row in rows for value in row]
    params = bindable_params(params)  # a Decimal("1E+2") bound as 1 otherwise
    result = cursor.execute(sql + returning, params)
    return _stored(result, group)


def _lists(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]] | None:
    """The rows' columns as lists, when each holds one of :data:`_LISTED_TYPES` (and
    None); else None."""
    lists = []
    for i in range(width):
        values = [row[i] for row in rows]
        kinds = set(map(type, values))
        kinds.discard(type(None))
        if len(kinds) != 1:
            return None  # mixed types, or only NULLs: VALUES types them value by value
        kind = kinds.pop()
        if kind not in _LISTED_TYPES:
            return None
        if kind is int:
            ints = [v for v in values if v is not None]
            low, high = min(ints), max(ints)
            if low < _BIGINT[0] or high > _BIGINT[1]:
                return None
            wide = low < _INTEGER[0] or high > _INTEGER[1]
            if wide and any(_INTEGER[0] <= v <= _INTEGER[1] for v in ints):
                return None  # INTEGERs and BIGINTs: bound value by value, each its width
        elif kind is float and any(v != v for v in values):
            return None  # a NaN in a list parameter becomes NULL (a VALUES one stays NaN)
        lists.append(values)
    return lists


# what goes as text when Arrow cannot type a column: only values whose ``str`` DuckDB
# casts as it casts the same value bound as a VALUES parameter (ints past 64 bits, ints
# among strings); a bool ('False': no number column takes it), a timedelta ('1 day,
# 0:00:00': no INTERVAL parse), a float, a Decimal or a date among other types go as
# VALUES parameters instead (tests/test_ingest.py's mixed-column tests)
_TEXTABLE = (int, str)


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
        if all(v is None or (isinstance(v, _TEXTABLE) and type(v) is not bool) for v in values):
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
    record: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    fault: FaultHook | None = None,
    lone: duckdb.DuckDBPyConnection | None = None,
) -> BaseException | None:
    """Append ``groups`` atomically; commit or roll back. Returns the rows' fault, if any.

    One statement that is to be committed runs in autocommit mode: BEGIN and COMMIT are
    round trips that each give up the GIL, and winning it back from busy producer threads
    is what small batches wait for. Raises :class:`StorageFailure` for anything that is
    not the rows' fault. Never sends COMMIT after a failed statement (DuckDB would answer
    it quietly and roll back). Rows of captured groups are added to ``stored`` once
    committed. ``begin`` runs first inside the transaction (a lake tags the commit),
    and forces one; ``record`` runs last inside it when committing (the batch's
    idempotency keys: :mod:`duckflock.ingest.keys`), and forces one too.
    ``fault("commit")`` (the committer's test seam) runs first when committing: what it
    raises is classified as a statement's error would be. ``lone``, when given, is the
    cursor that runs the one autocommitted statement (the committer's, without the
    optimizer).
    """
    kept: list[tuple[Identity, pa.Table]] = []
    try:
        if commit and fault is not None:
            fault("commit")
        if commit and len(groups) == 1 and begin is None and record is None:
            cursor = lone or cursor  # the except below probes the cursor that ran
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
            if record is not None and commit:
                record(cursor)
            cursor.execute("COMMIT" if commit else "ROLLBACK")
        if commit and stored is not None:
            stored.extend(kept)
        return None
    except Exception as exc:  # whatever the type: the rows' fault unless storage says so
        rollback_quietly(cursor)
        if not storage_fault(exc, cursor):
            return exc
        durable = commit and DURABLE_WORDS in str(exc).lower()
        if durable and stored is not None:
            stored.extend(kept)
        raise StorageFailure(str(exc), committed=durable, invalidated=invalidated(exc)) from exc
