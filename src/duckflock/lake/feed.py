"""The lake's change feed: the rows a DuckLake table gained and lost between two snapshots.

Every commit into a lake is a snapshot, and DuckLake describes what each one did:
``ducklake_snapshots(catalog)`` lists every snapshot with its ``changes`` (a map of
change kind to the tables, by id, or objects, by name, it touched), and
``ducklake_table_insertions`` / ``ducklake_table_deletions(catalog, schema, table,
first, last)`` give the rows a table gained and lost in the snapshots ``first`` to
``last``. Checked by experiment on DuckDB 1.5.5 with the pinned ducklake wheel (both
catalogs):

- over a range, a row inserted and deleted inside it is in both lists, an UPDATE is its
  old row deleted and its new row inserted, and inlined rows count like Parquet rows:
  the table at ``last`` is the table at ``first - 1`` plus the insertions less the
  deletions, as multisets;
- inside a transaction, ``ducklake_current_snapshot`` and ``ducklake_snapshots`` answer
  for the snapshot the transaction reads, not the catalog's latest: read in the same
  transaction as the table, the feed describes exactly the data the reads see;
- an expired snapshot is gone from ``ducklake_snapshots`` and the functions refuse a
  range starting there ("No snapshot found at version …").

What the feed cannot describe is a :class:`Gap`, and whoever keeps state from the table
builds it again: an expired starting snapshot, a schema change anywhere in the lake
(``tables_created``, ``tables_altered``, …: the query is planned again), maintenance
that rewrote the table's files (``flushed_inlined``, ``merge_adjacent``, compaction: the
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
from duckflock.sql import quote_literal

# change kinds that only add or remove rows of the tables they name (by id)
DATA_KINDS = frozenset(
    {"tables_inserted_into", "tables_deleted_from", "inlined_insert", "inlined_delete"}
)
_INSERT_KINDS = frozenset({"tables_inserted_into", "inlined_insert"})
_DELETE_KINDS = frozenset({"tables_deleted_from", "inlined_delete"})
_LAST = 2**63 - 1  # no end: up to the latest snapshot
# words of a change kind that reshapes the catalog: the query is planned again
_CATALOG_WORDS = ("created", "dropped", "altered", "renamed", "comment")


@dataclass(frozen=True)
class Feed:
    """The rows a table gained and lost between two snapshots (the table's columns)."""

    start: int  # the snapshot the state describes
    end: int  # the snapshot the rows bring it to
    inserted: pa.Table
    deleted: pa.Table


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
    latest), or the :class:`Gap` that stops it; ``joined``: tables the state read too
    (a write to one is a gap); more than ``limit`` rows in all is a gap too. Inside a
    transaction, ``end`` is the snapshot it reads; outside, each statement is its own
    transaction and the snapshot ids pin what they read."""
    catalog = table.catalog
    snapshots = cursor.execute(
        "SELECT snapshot_id, changes FROM ducklake_snapshots(?) "
        "WHERE snapshot_id BETWEEN ? AND ? ORDER BY snapshot_id",
        [catalog, start, _LAST if end is None else end],
    ).fetchall()
    if not snapshots or snapshots[0][0] != start:
        return Gap(f"the lake's snapshot {start} was expired")
    end = int(snapshots[-1][0])
    kinds: list[tuple[int, str, set[str]]] = []
    for snapshot, changes in snapshots[1:]:
        for kind, touched in (changes or {}).items():
            if any(word in kind for word in _CATALOG_WORDS):
                return Gap(f"snapshot {snapshot} changed the lake's catalog ({kind})", True)
            kinds.append((snapshot, kind, {str(i) for i in touched or ()}))
    if kinds and (joined or any(kind not in DATA_KINDS for _, kind, _ in kinds)):
        gap = _touched(cursor, table, joined, kinds)
        if gap is not None:
            return gap
    found = {kind for _, kind, _ in kinds}
    empty = pa.table({})
    inserted = deleted = empty
    name = ", ".join(quote_literal(part) for part in (catalog, table.schema, table.name))
    args = f"{name}, {start + 1}, {end}"
    if found & _INSERT_KINDS:
        read = _rows(cursor, f"ducklake_table_insertions({args})", limit)
        if read is None:
            return Gap(f"over {limit:,} rows changed in the lake between refreshes")
        inserted = read
    if found & _DELETE_KINDS:
        read = _rows(cursor, f"ducklake_table_deletions({args})", limit - inserted.num_rows)
        if read is None:
            return Gap(f"over {limit:,} rows changed in the lake between refreshes")
        deleted = read
    return Feed(start, end, inserted, deleted)


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
