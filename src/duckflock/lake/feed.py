"""The lake's change feed: the rows a DuckLake table gained and lost between two snapshots.

Every commit into a lake is a snapshot, and DuckLake records what each one did: the
``ducklake_snapshot_changes`` table of its catalog (DuckLake's specification) holds one
row per kept snapshot, ``changes_made`` listing ``kind:what`` (``inlined_insert:3``,
``inserted_into_table:3``, ``merge_adjacent:3``, ``created_table:"main"."t"`` …; a table
by id, a new object by name), and ``ducklake_table_insertions`` /
``ducklake_table_deletions(catalog, schema, table, first, last)`` give the rows a table
gained and lost in the snapshots ``first`` to ``last``. Checked by experiment on DuckDB
1.5.5 with the pinned ducklake wheel (PostgreSQL and DuckDB-file catalogs):

- over a range, a row inserted and deleted inside it is in both lists, an UPDATE is its
  old row deleted and its new row inserted, and inlined rows count like Parquet rows:
  the table at ``last`` is the table at ``first - 1`` plus the insertions less the
  deletions, as multisets;
- a transaction reads the snapshot that was the latest at its first read of the lake
  (``ducklake_current_snapshot`` then answers that one, not the catalog's latest), so
  the feed read up to it describes exactly the data the transaction's queries see;
- expiring a snapshot deletes its row of changes too, and the functions refuse a range
  starting there ("No snapshot found at version …");
- ``ducklake_snapshots()`` answers the same but reads every snapshot ever kept (120 ms
  with 3,000 of them), where the changes table is read with the range pushed down.

What the feed cannot describe is a :class:`Gap`, and whoever keeps state from the table
builds it again: an expired starting snapshot, a schema change anywhere in the lake
(``created_…``, ``altered_…``, ``dropped_…``: the query is planned again), maintenance
that rewrote the table's files (``inline_flush``, ``merge_adjacent``, compaction: the
rows the functions report across them are not promised to be the change), a write to a
table that is only joined, and more changed rows than the caller keeps.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from duckflock.core.cursors import first_row
from duckflock.core.names import Identity
from duckflock.sql import name_end, quote_literal, quote_qualified

# change kinds (``ducklake_snapshot_changes``) that only add or remove rows of the
# table they name (by id)
_INSERT_KINDS = frozenset({"inserted_into_table", "inlined_insert"})
DELETE_KINDS = frozenset({"deleted_from_table", "inlined_delete"})
DATA_KINDS = _INSERT_KINDS | DELETE_KINDS
FILE_INSERT = "inserted_into_table"  # may come with deletes of its own rows (between)
# change kinds that reshape the catalog: the query is planned again
_CATALOG_KINDS = ("created_", "dropped_", "altered_", "renamed_", "comment")


@dataclass(frozen=True)
class Feed:
    """The rows a table gained and lost between two snapshots (the table's columns)."""

    start: int  # the snapshot the state describes
    end: int  # the snapshot the rows bring it to
    inserted: pa.Table
    deleted: pa.Table
    source: str = "DuckLake's change feed"  # where the rows were read


@dataclass(frozen=True)
class Gap:
    """Why the change between two snapshots cannot be folded; ``replan``: the catalog
    changed, the query is planned again before the state is rebuilt."""

    reason: str
    replan: bool = False


def describes(catalog: str, tables: Iterable[Identity]) -> bool:
    """Whether the lake ``catalog``'s feed sees every write to ``tables``."""
    return all(table.catalog == catalog for table in tables)


def current(cursor: duckdb.DuckDBPyConnection, catalog: str) -> int:
    """The snapshot ``cursor`` reads: its transaction's, inside one."""
    row = first_row(cursor.execute("SELECT id FROM ducklake_current_snapshot(?)", [catalog]))
    if row is None or row[0] is None:
        raise duckdb.InvalidInputException(f"the lake {catalog!r} has no snapshot")
    return int(row[0])


def between(
    cursor: duckdb.DuckDBPyConnection,
    table: Identity,
    joined: frozenset[Identity],
    start: int,
    end: int | None,
    limit: int,
) -> Feed | Gap:
    """What ``table`` gained and lost after snapshot ``start`` up to ``end`` (None: the
    snapshot the cursor's transaction reads), or the :class:`Gap` that stops it;
    ``joined``: tables the state read too (a write to one is a gap); more than
    ``limit`` rows in all is a gap too. Run it in the transaction that reads the table,
    as its first read of the lake when ``end`` is None."""
    catalog = table.catalog
    if end is None:  # the first read of a transaction: it fixes the snapshot
        end = current(cursor, catalog)
    if end == start:
        return Feed(start, end, pa.table({}), pa.table({}))
    # DuckLake's own table of each snapshot's changes (its specification's
    # ducklake_snapshot_changes), read from the catalog with the range pushed down: the
    # listing of ducklake_snapshots() reads every snapshot ever kept (120 ms at 3,000)
    metadata = quote_qualified([f"__ducklake_metadata_{catalog}", "ducklake_snapshot_changes"])
    snapshots = cursor.execute(
        f"SELECT snapshot_id, changes_made FROM {metadata} "
        "WHERE snapshot_id BETWEEN ? AND ? ORDER BY snapshot_id",
        [start, end],
    ).fetchall()
    if not snapshots or snapshots[0][0] != start:  # expiring deletes its row too
        return Gap(f"the lake's snapshot {start} was expired")
    kinds: list[tuple[int, str, set[str]]] = []
    for snapshot, changes in snapshots[1:]:
        for kind, touched in entries(changes or ""):
            if kind.startswith(_CATALOG_KINDS):
                return Gap(f"snapshot {snapshot} changed the lake's catalog ({kind})", True)
            kinds.append((snapshot, kind, {touched}))
    if kinds and (joined or any(kind not in DATA_KINDS for _, kind, _ in kinds)):
        gap = _touched(cursor, table, joined, kinds)
        if gap is not None:
            return gap
    found = {kind for _, kind, _ in kinds}
    empty = pa.table({})
    inserted = deleted = empty
    if found & _INSERT_KINDS:
        read = _rows(cursor, _call("insertions", table, start + 1, end), limit)
        if read is None:
            return Gap(f"over {limit:,} rows changed in the lake between refreshes")
        inserted = read
    # a transaction that wrote a file and then deleted or updated some of its own rows
    # lists only its insert, the file's delete file at the same snapshot
    if found & DELETE_KINDS or FILE_INSERT in found:
        read = _rows(cursor, _call("deletions", table, start + 1, end), limit - inserted.num_rows)
        if read is None:
            return Gap(f"over {limit:,} rows changed in the lake between refreshes")
        deleted = read
    return Feed(start, end, inserted, deleted)


def inserted_columns(cursor: duckdb.DuckDBPyConnection, table: Identity, end: int) -> pa.Schema:
    """The columns and Arrow types the feed's inserted rows of ``table`` have at the
    snapshot the cursor reads (``end``, the latest: each is checked): no rows asked."""
    call = _call("insertions", table, end, end)
    return cursor.execute(f"SELECT * FROM {call} LIMIT 0").to_arrow_table().schema


def _call(kind: str, table: Identity, first: int, last: int) -> str:
    """DuckLake's ``ducklake_table_{kind}`` of ``table`` over snapshots first … last
    (literal arguments: the table function binds them at once)."""
    name = ", ".join(quote_literal(part) for part in (table.catalog, table.schema, table.name))
    return f"ducklake_table_{kind}({name}, {int(first)}, {int(last)})"


def entries(changes: str) -> list[tuple[str, str]]:
    """A snapshot's ``changes_made`` as (kind, what) pairs: ``inlined_insert:1,
    created_table:"main"."a,b"`` is ``[("inlined_insert", "1"), ("created_table",
    '"main"."a,b"')]`` (a quoted name may hold commas)."""
    out: list[tuple[str, str]] = []
    at = 0
    while at < len(changes):
        colon = changes.find(":", at)
        if colon < 0:
            raise ValueError(f"a snapshot's changes {changes!r} lack a ':' at {at}")
        value = colon + 1
        end = name_end(changes, value) if changes.startswith('"', value) else None
        if end is None:
            comma = changes.find(",", value)
            end = len(changes) if comma < 0 else comma
        out.append((changes[at:colon], changes[value:end]))
        at = end + 1
    return out


def _touched(
    cursor: duckdb.DuckDBPyConnection,
    table: Identity,
    joined: frozenset[Identity],
    kinds: list[tuple[int, str, set[str]]],
) -> Gap | None:
    """The gap in ``kinds`` (snapshot, change kind, table ids): rows written into a
    joined table, or files of the table or a joined one rewritten by maintenance."""
    ids = _table_ids(cursor, table.catalog, {table, *joined})
    others = {i for i, t in ids.items() if t != table}
    for snapshot, kind, touched in kinds:
        data = kind in DATA_KINDS
        hit = sorted({ids[i].display() for i in touched & (others if data else ids.keys())})
        if hit and data:
            return Gap(f"snapshot {snapshot} wrote the joined {', '.join(hit)}")
        if hit:
            return Gap(f"snapshot {snapshot} rewrote the files of {', '.join(hit)} ({kind})")
    return None


def _table_ids(
    cursor: duckdb.DuckDBPyConnection, catalog: str, tables: set[Identity]
) -> dict[str, Identity]:
    """The lake's table ids (as the snapshots' changes spell them) of ``tables``: every
    table of the same name in any schema (a write to a namesake is taken as a write to
    the table: a rebuild too many, never a row missed)."""
    names = {t.name.lower(): t for t in tables}
    rows = cursor.execute("SELECT table_id, table_name FROM ducklake_table_info(?)", [catalog])
    return {
        str(table_id): names[str(name).lower()]
        for table_id, name in rows.fetchall()
        if str(name).lower() in names
    }


def _rows(cursor: duckdb.DuckDBPyConnection, call: str, limit: int) -> pa.Table | None:
    """The rows of the feed function ``call`` (None: more than ``limit``), read in
    batches so that a bulk load between two refreshes is never held whole. (Its
    arguments are literals: the table function binds them at once.)"""
    reader = cursor.execute(f"SELECT * FROM {call}").to_arrow_reader()
    batches, rows = [], 0
    for batch in reader:
        rows += batch.num_rows
        if rows > limit:
            reader.close()
            return None
        batches.append(batch)
    return pa.Table.from_batches(batches, reader.schema)
