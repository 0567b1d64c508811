"""A lake's catalog read directly: most refreshes of a lake analysis in one query.

A refresh through DuckLake's functions (:mod:`duckflock.lake.feed`) is a DuckLake
transaction: its first read takes the latest snapshot, and ``ducklake_table_insertions``
re-reads the snapshot, the table's stats and column stats, its data files and schema
versions before it opens the new file; with the change listing, the commit and the
connection pool's checks that is ~18 PostgreSQL statements on two connections (counted
in the server's log), most of the refresh's time. DuckLake's catalog is a specification
of plain tables ("all metadata is stored as SQL tables ... they can be queried in
whichever way is best for a client"), so the common refreshes -- nothing new, or new
Parquet files appended to the table -- are ONE PostgreSQL statement (one consistent
snapshot of the catalog, through ``postgres_query`` on the metadata catalog DuckLake
attached) and a read of the new files. The rows come out with the columns and Arrow
types DuckLake's own read of the table gave at the same schema version (learned from
it: :meth:`Catalog.learn`), or not at all: inlined rows, deletes, encrypted or
registered files, a schema version not yet read, a DuckDB-file catalog and remote
storage go through DuckLake's functions.

The statement reaches PostgreSQL alone, on a connection kept out of the extension's
pool (:mod:`duckflock.lake.session`), and names the table by the id it had at the
lake's schema version (looked up by name once per version: PostgreSQL plans the
statement in about half the time of one that joins the table's name in). Where rows
were deleted, a second statement asks the sizes that decide whether they are worth
reading one by one (:meth:`Catalog.costly`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from duckflock.core.cursors import first_row
from duckflock.core.names import Identity
from duckflock.lake.feed import DATA_KINDS, DELETE_KINDS, FILE_INSERT, Feed, Gap, entries
from duckflock.lake.session import Session
from duckflock.sql import quote_ident, quote_literal

# rows of a table below which its deletes are read one by one whatever files they are
# in (either way takes a few ms); above, files that gained deletes holding over a third
# of its bytes rebuild: DuckLake read 10,000 deleted rows out of 1M in one file in 316
# ms where the full run took 195 (benchmarks/lake_analyses.py, load 13)
SMALL = 10_000
_THREADED = 200_000  # rows in a file from which pyarrow's threads help reading it
_PARTS = ("changes", "latest", "schema", "table", "file")
_TOUCHED = """
SELECT coalesce(sum(file_size_bytes), 0)::bigint AS size,
       coalesce(sum(record_count), 0)::bigint AS n
  FROM {m}.ducklake_data_file WHERE table_id = {table} AND data_file_id IN (
    SELECT data_file_id FROM {m}.ducklake_delete_file
      WHERE table_id = {table} AND begin_snapshot > {start}
    UNION SELECT file_id FROM {m}.{inlined} WHERE begin_snapshot > {start})
"""
# (rows, bytes) of the table, and of its data files that gained deletes since {start}
_SIZES = """
SELECT s.record_count, s.file_size_bytes, d.n, d.size FROM {m}.ducklake_table_stats s,
  (SELECT coalesce(sum(record_count), 0)::bigint AS n,
          coalesce(sum(file_size_bytes), 0)::bigint AS size FROM {m}.ducklake_data_file
    WHERE data_file_id IN (SELECT data_file_id FROM {m}.ducklake_delete_file
                           WHERE table_id = {table} AND begin_snapshot > {start})) d
  WHERE s.table_id = {table}
"""
# the snapshots since {start}, the latest one, and the table's files added since; a
# file is plain (its rows, else -1) when nothing of DuckLake's marks it otherwise, and
# has no delete file: one that its own transaction deleted rows from is not read whole
_LISTING = """
SELECT 0 AS part, snapshot_id AS id, changes_made AS text, NULL::boolean AS flag,
       NULL::bigint AS n FROM {m}.ducklake_snapshot_changes WHERE snapshot_id >= {start}
UNION ALL
SELECT 1, snapshot_id, NULL, NULL, schema_version FROM {m}.ducklake_snapshot
  WHERE snapshot_id = (SELECT max(snapshot_id) FROM {m}.ducklake_snapshot)
UNION ALL
SELECT 4, f.begin_snapshot, f.path, f.path_is_relative,
       CASE WHEN f.encryption_key IS NULL AND f.mapping_id IS NULL AND f.partial_max IS NULL
            AND f.file_format = 'parquet' AND f.end_snapshot IS NULL AND NOT EXISTS (
              SELECT 1 FROM {m}.ducklake_delete_file d WHERE d.data_file_id = f.data_file_id)
            THEN f.record_count ELSE -1 END
  FROM {m}.ducklake_data_file f
  WHERE f.table_id IN ({table}) AND f.begin_snapshot > {start}
"""
# what stands for ``start`` in the statement a refresh repeats (its text the same every
# time: prepared once, lake/session.py) while the state is at most ``Catalog.WINDOW``
# snapshots behind the latest; rows before the state's own are dropped on reading
_RECENT = "((SELECT max(snapshot_id) FROM {m}.ducklake_snapshot) - {window})"
# the same, finding the table by name first (its id and folders: parts 2 and 3)
_FIND = """
WITH target AS (
  SELECT t.table_id, s.path AS schema_path, s.path_is_relative AS schema_relative,
         t.path AS table_path, t.path_is_relative AS table_relative
  FROM {m}.ducklake_table t JOIN {m}.ducklake_schema s ON s.schema_id = t.schema_id
  WHERE t.end_snapshot IS NULL AND s.end_snapshot IS NULL
    AND lower(s.schema_name) = lower({schema}) AND lower(t.table_name) = lower({name})
)
{listing}
UNION ALL SELECT 2, table_id, schema_path, schema_relative, NULL FROM target
UNION ALL SELECT 3, table_id, table_path, table_relative, NULL FROM target
"""


@dataclass(frozen=True)
class _Target:
    """Where a table's files are, at one schema version of the lake (a table's id and
    folders change only with the catalog: DDL makes a new schema version)."""

    schema_version: int
    table_id: int
    folder: str


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

    def kinds(self) -> set[str]:
        """The change kinds of the snapshots after ``start``."""
        return {kind for _, changes in self.changes[1:] for kind, _ in entries(changes or "")}

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
    # snapshots the repeated listing reads back from the latest: a state further behind
    # is listed by a statement naming its snapshot (bound anew: three round trips)
    WINDOW = 32

    def __init__(self, catalog: str) -> None:
        self.catalog = catalog
        self._lock = threading.Lock()  # guards the five below
        self._where: tuple[str, str] | None = None  # (the SQL's schema, the data path)
        self._usable = True  # False: not a PostgreSQL catalog, or remote storage
        self._columns: dict[tuple[int, int], pa.Schema] = {}  # (table id, version)
        self._targets: dict[Identity, _Target] = {}  # where each table read is
        self.queries = 0  # listings read (for tests: each is one PostgreSQL statement)
        # the reads, on one connection kept out of the extension's pool
        self.session = Session(catalog)

    def listing(
        self, cursor: duckdb.DuckDBPyConnection, table: Identity, start: int
    ) -> Listing | None:
        """The catalog since snapshot ``start`` for ``table``, in one statement; None
        where the catalog is not PostgreSQL's (or the lake's files are not local).

        The table's id and folders are looked up by name once per schema version and
        then kept: a statement that finds the lake at another schema version is
        followed by one that looks the table up again (after DDL: rare)."""
        where = self._locate(cursor)
        if where is None:
            return None
        schema, data_path = where
        with self._lock:
            known = self._targets.get(table)
        if known is not None:
            m = quote_ident(schema)
            recent = _RECENT.format(m=m, window=int(self.WINDOW))
            sql = _LISTING.format(m=m, start=recent, table=known.table_id)
            found = self._parse(start, self.session.query(cursor, sql, prepared=True), known)
            if found is not None and found.end - self.WINDOW > start:  # out of the window
                sql = _LISTING.format(m=m, start=int(start), table=known.table_id)
                found = self._parse(start, self.session.query(cursor, sql), known)
            if found is not None and found.schema_version == known.schema_version:
                return self._counted(found)
        listing = _LISTING.format(
            m=quote_ident(schema), start=int(start), table="SELECT table_id FROM target"
        )
        sql = _FIND.format(
            m=quote_ident(schema),
            schema=quote_literal(table.schema),
            name=quote_literal(table.name),
            listing=listing,
        )
        rows = self.session.query(cursor, sql)
        target = _target(rows, data_path)
        found = self._parse(start, rows, target)
        with self._lock:
            if found is None or target is None:
                self._targets.pop(table, None)
            else:
                if len(self._targets) >= self.KEPT:
                    self._targets.clear()
                self._targets[table] = replace(target, schema_version=found.schema_version)
        return self._counted(found)

    def latest(self, cursor: duckdb.DuckDBPyConnection) -> int | None:
        """The catalog's latest snapshot id, read now in one prepared statement (what
        ``ducklake_current_snapshot`` answers through a DuckLake transaction: six
        statements on a pooled connection); None where the catalog is not PostgreSQL's."""
        where = self._locate(cursor)
        if where is None:
            return None
        sql = f"SELECT max(snapshot_id) FROM {quote_ident(where[0])}.ducklake_snapshot"
        rows = self.session.query(cursor, sql, prepared=True)
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    def _counted(self, listing: Listing | None) -> Listing | None:
        with self._lock:
            self.queries += 1
        return listing

    def costly(self, cursor: duckdb.DuckDBPyConnection, listing: Listing, limit: int) -> str | None:
        """Why a rebuild reads less than the feed's deleted rows would, or None.

        DuckLake finds a deleted row's values by reading its whole data file (every
        column: a 10,000-row DELETE from 20M rows in one file took 3x a full run), where
        a full run reads only the columns the query needs. Rebuild when the files that
        gained deletes hold more rows than one refresh folds (``limit``, at most
        :data:`SMALL`) and over a third of the table's bytes, by the sizes the catalog
        keeps (asked in a statement of
        their own: only where rows were deleted, on the way to DuckLake's read). Small
        deletes are kept in the catalog (``inlined_delete``): their files are asked for
        in another statement, only for a table big enough to matter."""
        kinds = listing.kinds()
        if listing.table_id is None or self._where is None or not kinds <= DATA_KINDS:
            return None
        if not kinds & DELETE_KINDS and FILE_INSERT not in kinds:
            return None  # (a file insert may come with deletes of its own rows)
        m, table, start = quote_ident(self._where[0]), int(listing.table_id), int(listing.start)
        try:
            found = self.session.query(cursor, _SIZES.format(m=m, table=table, start=start))
        except duckdb.Error:  # the catalog away: the transaction's read decides
            return None
        if len(found) != 1:
            return None
        total, total_size, rows, size = (int(value or 0) for value in found[0])
        limit = min(limit, SMALL)
        if total <= limit:
            return None
        if "inlined_delete" in kinds:
            sql = _TOUCHED.format(
                m=m,
                table=table,
                start=start,
                inlined=quote_ident(f"ducklake_inlined_delete_{table}"),
            )
            try:
                touched = self.session.query(cursor, sql)
            except duckdb.Error:  # no such table: the transaction's read decides
                return None
            size, rows = (int(touched[0][0]), int(touched[0][1])) if touched else (size, rows)
        if rows <= limit or size * 3 <= total_size:
            return None
        return (
            f"rows were deleted from files holding {rows:,} of the table's "
            f"{total:,} rows ({size:,} of {total_size:,} bytes): rebuilding reads less"
        )

    def _parse(
        self, start: int, rows: list[tuple[Any, ...]], target: _Target | None
    ) -> Listing | None:
        parts: dict[int, list[tuple[Any, ...]]] = {i: [] for i in range(len(_PARTS))}
        for part, *rest in rows:
            parts[int(part)].append(tuple(rest))
        if len(parts[1]) != 1:
            return None
        end, schema_version = int(parts[1][0][0]), int(parts[1][0][3])
        kept = [(int(s), str(c or "")) for s, c, _, _ in parts[0] if int(s) >= start]
        changes = tuple(sorted(kept))
        if target is None:
            return Listing(start, end, schema_version, None, changes, ())
        files = tuple(
            ((target.folder + path) if relative else str(path), int(n))
            for snapshot, path, relative, n in sorted(parts[4], key=lambda row: int(row[0]))
            if start < int(snapshot) <= end
        )
        return Listing(start, end, schema_version, target.table_id, changes, files)

    def _locate(self, cursor: duckdb.DuckDBPyConnection) -> tuple[str, str] | None:
        """(the PostgreSQL schema of the catalog's tables, the local data path), asked
        once; None for good when there is no such pair."""
        with self._lock:
            if self._where is not None or not self._usable:
                return self._where
        found: tuple[str, str] | None = None
        try:
            schemas = self.session.query(
                cursor,
                "SELECT table_schema FROM information_schema.tables "
                "WHERE table_name = 'ducklake_snapshot_changes'",
            )
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

    def knows(self, table: Identity) -> bool:
        """Whether ``table``'s columns are known at the schema version last listed."""
        with self._lock:
            known = self._targets.get(table)
            return known is not None and (known.table_id, known.schema_version) in self._columns

    def appended(
        self, listing: Listing, limit: int, named: frozenset[str] | None = None
    ) -> Feed | Gap | None:
        """The rows of ``listing``'s new files, with DuckLake's columns and types; None
        when they are not plain Parquet files of a known schema version. ``named``:
        only the columns of these (lower-case) names (a 10,000-row file's VARCHAR
        column of 3 was 0.18 of 0.43 ms); None: all."""
        if listing.table_id is None or not listing.appends_only() or not listing.files:
            return None
        with self._lock:
            columns = self._columns.get((listing.table_id, listing.schema_version))
        if columns is None or any(rows < 0 for _, rows in listing.files):
            return None
        if sum(rows for _, rows in listing.files) > limit:
            return Gap(f"over {limit:,} rows changed in the lake between refreshes")
        if named is not None:
            chosen = [i for i, name in enumerate(columns.names) if name.lower() in named]
            # (count(*) alone names none: one column keeps the rows counted)
            columns = pa.schema([columns.field(i) for i in chosen or [0]])
        try:
            parts = [_read(path, columns.names, rows) for path, rows in listing.files]
        except (OSError, pa.ArrowException, KeyError):
            return None  # a file or a column not where the catalog says: DuckLake decides
        for part in parts:  # (a column missing from a file is left out, not an error)
            if part.schema.names != columns.names or not all(
                _same(got.type, want.type) for got, want in zip(part.schema, columns, strict=True)
            ):
                return None
        read = [part.cast(columns) for part in parts]
        return Feed(
            listing.start,
            listing.end,
            pa.concat_tables(read),
            columns.empty_table(),
            f"{len(read)} new Parquet file(s), listed by one catalog query",
        )


def _target(rows: list[tuple[Any, ...]], data_path: str) -> _Target | None:
    """The table's id and folder from a :data:`_FIND` statement's parts 2 and 3
    (its schema version is the listing's); None: no such table (or two)."""
    schemas = [row[1:] for row in rows if int(row[0]) == 2]
    tables = [row[1:] for row in rows if int(row[0]) == 3]
    if len(schemas) != 1 or len(tables) != 1:
        return None
    table_id, schema_path, schema_relative, _ = schemas[0]
    _, table_path, table_relative, _ = tables[0]
    folder = (data_path + schema_path) if schema_relative else str(schema_path)
    folder = (folder + table_path) if table_relative else str(table_path)
    return _Target(-1, int(table_id), folder)


def _read(path: str, columns: list[str], rows: int) -> pa.Table:
    """A Parquet file's ``columns``: ParquetFile.read, not read_table (the datasets
    layer doubled a 10,000-row file's 0.5 ms), on this thread below ``_THREADED`` rows,
    without pre-buffering (its reads go through pyarrow's I/O threads: a 10,000-row
    file's median 0.36 -> 0.26 ms, p90 2.8 -> 0.36 ms at load 19)."""
    threaded = rows > _THREADED
    with pq.ParquetFile(path, pre_buffer=threaded) as file:
        return file.read(columns=columns, use_threads=threaded)


def _same(got: pa.DataType, want: pa.DataType) -> bool:
    """Whether a file's column type is DuckLake's: equal, or a time stamp with a time
    zone either way (Parquet keeps UTC instants; DuckDB labels them with the session's
    zone, the file reader with "UTC": the same values)."""
    if got == want:
        return True
    return (
        pa.types.is_timestamp(got)
        and pa.types.is_timestamp(want)
        and got.unit == want.unit
        and got.tz is not None
        and want.tz is not None
    )
