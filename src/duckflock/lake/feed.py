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

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from duckflock.core.cursors import first_row
from duckflock.core.names import Identity
from duckflock.sql import name_end, quote_ident, quote_literal, quote_qualified

# change kinds (``ducklake_snapshot_changes``) that only add or remove rows of the
# table they name (by id)
_INSERT_KINDS = frozenset({"inserted_into_table", "inlined_insert"})
_DELETE_KINDS = frozenset({"deleted_from_table", "inlined_delete"})
DATA_KINDS = _INSERT_KINDS | _DELETE_KINDS
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


# -- appends read straight from the catalog ----------------------------------------------
#
# A refresh through DuckLake's functions is a DuckLake transaction: its first read takes
# the latest snapshot, and ducklake_table_insertions re-reads the snapshot, the table's
# stats, column stats, data files and schema versions before it opens the new file; with
# the change listing, its commit and the connection pool's checks that is ~18 PostgreSQL
# statements on two connections per refresh (counted in the server's log), most of the
# refresh. DuckLake's catalog is a specification of plain tables, so the common refresh
# -- nothing new, or new Parquet files appended to the table -- is ONE query to
# PostgreSQL (one statement: one consistent snapshot of the catalog) and a read of the new
# files. The rows come out with the columns and Arrow types DuckLake's own read of the
# same table gave at the same schema version (learned from it: :meth:`Catalog.learn`);
# anything else (inlined rows, deletes, encrypted or registered files, a DuckDB-file
# catalog, remote storage, a schema version not yet seen) goes through DuckLake.

_METADATA = "__ducklake_metadata_{}"
_PARTS = ("changes", "latest", "schema", "table", "file")
_LISTING = """
WITH target AS (
  SELECT t.table_id, s.path AS schema_path, s.path_is_relative AS schema_relative,
         t.path AS table_path, t.path_is_relative AS table_relative
  FROM {m}.ducklake_table t JOIN {m}.ducklake_schema s ON s.schema_id = t.schema_id
  WHERE t.end_snapshot IS NULL AND s.end_snapshot IS NULL
    AND lower(s.schema_name) = lower({schema}) AND lower(t.table_name) = lower({name})
)
SELECT 0 AS part, snapshot_id AS id, changes_made AS text, NULL::boolean AS flag,
       NULL::bigint AS n FROM {m}.ducklake_snapshot_changes WHERE snapshot_id >= {start}
UNION ALL
SELECT 1, snapshot_id, NULL, NULL, schema_version FROM {m}.ducklake_snapshot
  WHERE snapshot_id = (SELECT max(snapshot_id) FROM {m}.ducklake_snapshot)
UNION ALL SELECT 2, table_id, schema_path, schema_relative, NULL FROM target
UNION ALL SELECT 3, table_id, table_path, table_relative, NULL FROM target
UNION ALL
SELECT 4, f.begin_snapshot, f.path, f.path_is_relative,
       CASE WHEN f.encryption_key IS NULL AND f.mapping_id IS NULL AND f.partial_max IS NULL
            AND f.file_format = 'parquet' THEN f.record_count ELSE -1 END
  FROM {m}.ducklake_data_file f JOIN target USING (table_id)
  WHERE f.begin_snapshot > {start}
"""


@dataclass(frozen=True)
class Listing:
    """One read of the catalog's tables: the snapshots since a state's, the latest one
    and its schema version, and the Parquet files the table gained since."""

    start: int
    end: int
    schema_version: int
    table_id: int | None  # None: no such table now
    changes: tuple[tuple[int, str], ...]  # (snapshot, changes_made) from ``start`` on
    files: tuple[tuple[str, int], ...]  # (full path, rows); rows -1: not a plain file

    def appends_only(self) -> bool:
        """Whether every snapshot after ``start`` only wrote Parquet files into the
        table: no other table, no inlined rows, no deletes, no catalog change."""
        wanted = ("inserted_into_table", str(self.table_id))
        if not self.changes or self.changes[0][0] != self.start:
            return False  # the state's snapshot was expired: DuckLake's read says so
        return all(
            pair == wanted for _, changes in self.changes[1:] for pair in entries(changes or "")
        )


class Catalog:
    """Reads a PostgreSQL-backed lake's catalog tables directly (see above). One per
    lake, shared by the analysis threads."""

    KEPT = 64  # schema versions remembered, then forgotten (a rebuild relearns them)

    def __init__(self, catalog: str) -> None:
        self.catalog = catalog
        self._lock = threading.Lock()  # guards the three below
        self._where: tuple[str, str] | None = None  # (the SQL's schema, the data path)
        self._usable = True  # False: not a PostgreSQL catalog, or remote storage
        self._columns: dict[tuple[int, int], pa.Schema] = {}  # (table id, version)
        self.queries = 0  # listings read (for tests: each is one PostgreSQL statement)

    def listing(
        self, cursor: duckdb.DuckDBPyConnection, table: Identity, start: int
    ) -> Listing | None:
        """The catalog since snapshot ``start`` for ``table``, in one statement; None
        where the catalog is not PostgreSQL's (or the lake's files are not local)."""
        where = self._locate(cursor)
        if where is None:
            return None
        schema, _ = where
        sql = _LISTING.format(
            m=quote_ident(schema),
            schema=quote_literal(table.schema),
            name=quote_literal(table.name),
            start=int(start),
        )
        rows = cursor.execute(
            "SELECT * FROM postgres_query(?, ?)", [_METADATA.format(self.catalog), sql]
        ).fetchall()
        with self._lock:
            self.queries += 1
        return self._parse(start, rows, where[1])

    def _parse(self, start: int, rows: list[tuple[Any, ...]], data_path: str) -> Listing | None:
        parts: dict[int, list[tuple[Any, ...]]] = {i: [] for i in range(len(_PARTS))}
        for part, *rest in rows:
            parts[int(part)].append(tuple(rest))
        if len(parts[1]) != 1:
            return None
        end, schema_version = int(parts[1][0][0]), int(parts[1][0][3])
        changes = tuple(sorted((int(s), str(c or "")) for s, c, _, _ in parts[0]))
        table_id: int | None = None
        files: tuple[tuple[str, int], ...] = ()
        if len(parts[2]) == 1 and len(parts[3]) == 1:
            table_id = int(parts[2][0][0])
            _, schema_path, schema_relative, _ = parts[2][0]
            _, table_path, table_relative, _ = parts[3][0]
            folder = (data_path + schema_path) if schema_relative else str(schema_path)
            folder = (folder + table_path) if table_relative else str(table_path)
            files = tuple(
                ((folder + path) if relative else str(path), int(n))
                for snapshot, path, relative, n in sorted(parts[4], key=lambda row: int(row[0]))
                if int(snapshot) <= end
            )
        return Listing(start, end, schema_version, table_id, changes, files)

    def _locate(self, cursor: duckdb.DuckDBPyConnection) -> tuple[str, str] | None:
        """(the PostgreSQL schema of the catalog's tables, the local data path), asked
        once; None for good when there is no such pair."""
        with self._lock:
            if self._where is not None or not self._usable:
                return self._where
        found: tuple[str, str] | None = None
        try:
            schemas = cursor.execute(
                "SELECT * FROM postgres_query(?, ?)",
                [
                    _METADATA.format(self.catalog),
                    "SELECT table_schema FROM information_schema.tables "
                    "WHERE table_name = 'ducklake_snapshot_changes'",
                ],
            ).fetchall()
            row = first_row(
                cursor.execute(
                    "SELECT value FROM ducklake_options(?) WHERE option_name = 'data_path'",
                    [self.catalog],
                )
            )
            data_path = str(row[0]) if row and row[0] else ""
            if len(schemas) == 1 and data_path and "://" not in data_path:
                found = (str(schemas[0][0]), data_path)
        except duckdb.BinderException:  # "does not refer to a Postgres database"
            pass
        with self._lock:
            self._where, self._usable = found, found is not None
        return found

    def learn(self, listing: Listing, rows: pa.Table) -> None:
        """DuckLake's own read of the table's rows at ``listing``'s schema version:
        the columns and types a direct read must give."""
        if listing.table_id is None or not rows.num_columns:
            return
        with self._lock:
            if len(self._columns) >= self.KEPT:
                self._columns.clear()
            self._columns[(listing.table_id, listing.schema_version)] = rows.schema

    def appended(self, listing: Listing, limit: int) -> Feed | Gap | None:
        """The rows of ``listing``'s new files, with DuckLake's columns and types; None
        when they are not plain Parquet files of a known schema version."""
        if listing.table_id is None or not listing.appends_only() or not listing.files:
            return None
        with self._lock:
            columns = self._columns.get((listing.table_id, listing.schema_version))
        if columns is None or any(rows < 0 for _, rows in listing.files):
            return None
        if sum(rows for _, rows in listing.files) > limit:
            return Gap(f"over {limit:,} rows changed in the lake between refreshes")
        try:
            parts = [pq.read_table(path, columns=columns.names) for path, _ in listing.files]
        except (OSError, pa.ArrowException, KeyError):
            return None  # a file or a column not where the catalog says: DuckLake decides
        for part in parts:
            if [f.type for f in part.schema] != [f.type for f in columns]:
                return None
        read = [pa.Table.from_arrays(part.columns, schema=columns) for part in parts]
        return Feed(
            listing.start,
            listing.end,
            pa.concat_tables(read),
            columns.empty_table(),
            f"{len(read)} new Parquet file(s), listed by one catalog query",
        )
