"""What changed between two versions of an analysis's result, and the kept history.

A :class:`Change` is a multiset difference: the result's columns plus :data:`DIFF`
(``int8``), ``+1`` for a row the new version has and the old one did not, ``-1`` for a
row it no longer has (an updated group is a ``-1`` of its old row and a ``+1`` of its
new one). Applying every change in order to the rows of a first version gives the rows
of every later one, as DuckDB compares rows (``EXCEPT ALL``: NULL equals NULL, NaN equals
NaN, ``-0.0`` equals ``0.0``). Order is not part of it: an ``ORDER BY`` result's rows
come as a set. A *snapshot* change (``snapshot=True``) holds the whole result, all
``+1``: replace what you hold by it (the first item, a replaced analysis, new columns,
or a history too short to resume from).

DuckDB computes each difference (:func:`difference`) on the analysis's own cursor when a
version is published. For the incremental shapes whose groups are the result's rows
(the pyarrow-planned ``GROUP BY`` without ``LIMIT``) the refresh hands over the keys its
new and deleted rows touched; pyarrow picks those groups' rows (``is_in``, where its key
equality is DuckDB's) and Python pairs them up, so the cost follows the changed groups
rather than the result's size (one vectorised pass over the result aside).

Each analysis keeps the changes of its last versions in a :class:`ChangeLog`, bounded by
versions (``connect(keep_changes=…)``) and by rows (:data:`KEEP_ROWS`); a reader further
behind gets a snapshot. A log's ``lineage`` names one run of one definition: a version
number is only meaningful within it (after a restart or a replacement the numbers mean
other rows), so event ids are ``lineage.version``.
"""

from __future__ import annotations

import secrets
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from duckflock.core.wide import python_rows, readable
from duckflock.live.fold.query import over_arrow

DIFF = "__diff"  # the column of +1 / -1
KEEP_CHANGES = 64  # versions of changes kept per analysis (connect(keep_changes=…))
KEEP_ROWS = 1_000_000  # changed rows kept per analysis in all, at most
MAX_VERSION = 2**63 - 1  # a version number, at most (as DuckDB's BIGINT)
MAX_ID = 64  # characters of a change id (``lineage.version``: 8 + 1 + 19), at most


@dataclass(frozen=True)
class Change:
    """The rows that changed from version ``since`` to ``version`` of analysis ``name``."""

    name: str
    since: int  # the version it is relative to (0: nothing)
    version: int
    table: pa.Table  # the result's columns and DIFF (int8: +1 added, -1 removed)
    snapshot: bool  # the whole result (all +1): replace what you hold by it
    lineage: str  # which history the versions belong to (see the module's docstring)

    @property
    def id(self) -> str:
        """``lineage.version``: resume after it with ``db.changes(name, since=id)``."""
        return f"{self.lineage}.{self.version}"

    def rows(self) -> list[tuple[Any, ...]]:
        """The rows as tuples (each ends with its +1 / -1), values as DuckDB gives them."""
        return python_rows(self.table)

    def __repr__(self) -> str:
        kind = "snapshot" if self.snapshot else "change"
        return (
            f"<Change {self.name!r} v{self.since}->v{self.version} "
            f"{self.table.num_rows} rows {kind}>"
        )


def signed(table: pa.Table, sign: int) -> pa.Table:
    """``table`` with a DIFF column of ``sign`` on every row."""
    return table.append_column(DIFF, pa.array([sign] * table.num_rows, pa.int8()))


class Touched:
    """The groups one refresh changed: ``keys`` (columns named ``k0…``) holds the values
    of the result's columns at ``positions`` for every new or deleted row; None where
    they cannot be had (then every row is compared). Given as a table, or as a function
    that makes it: a refresh nobody takes the changes of never builds it."""

    def __init__(
        self, positions: tuple[int, ...], keys: pa.Table | Callable[[], pa.Table | None]
    ) -> None:
        self.positions = positions
        self._make = keys if callable(keys) else None
        self._keys = None if callable(keys) else keys
        self._lock = threading.Lock()  # guards the one call of _make (readers' threads)

    @property
    def keys(self) -> pa.Table | None:
        make = self._make
        if make is not None:
            with self._lock:
                if self._make is not None:
                    self._keys, self._make = make(), None
        return self._keys


def _plain(table: pa.Table) -> pa.Table:
    # positional names: a result may repeat a name, or use one the SQL below does; a
    # repaired UHUGEINT (decimal256) as its text, which DuckDB can scan
    return readable(table).rename_columns([f"c{i}" for i in range(table.num_columns)])


def _same_columns(old: pa.Table, new: pa.Table) -> bool:
    return bool(old.schema.equals(new.schema, check_metadata=False))


def difference(
    cursor: duckdb.DuckDBPyConnection,
    old: pa.Table | None,
    new: pa.Table,
    touched: Touched | None = None,
) -> tuple[pa.Table, bool]:
    """(the rows with DIFF, whether it is a snapshot) from ``old`` to ``new``.

    A snapshot when there is no old version or the columns changed; only the rows of
    the ``touched`` groups are compared when given (the others must be equal).
    """
    if old is None or not _same_columns(old, new):
        return signed(new, 1), True
    keys = None if touched is None else touched.keys
    if keys is None:
        touched = None
    nothing = keys is not None and keys.num_rows == 0
    if old is new or new.num_columns == 0 or nothing:
        return signed(new.slice(0, 0), 1), False
    if touched is not None:
        narrowed = _narrowed(old, new, touched)
        if narrowed is not None:  # the rows of (at least) the touched groups
            old, new = narrowed
            paired = _unpaired(old, new, touched.positions)
            if paired is not None:
                return paired, False
            touched = keys = None  # DuckDB compares the narrowed rows
    width = new.num_columns
    columns = ", ".join(f"c{i}" for i in range(width))
    where = ""
    if touched is not None:
        match = " AND ".join(
            f"t.c{p} IS NOT DISTINCT FROM k.k{i}" for i, p in enumerate(touched.positions)
        )
        where = f" t SEMI JOIN (SELECT DISTINCT * FROM __duckflock_keys) k ON {match}"
    sql = (
        f"WITH n AS (FROM __duckflock_delta{where}), o AS (FROM __duckflock_state{where}) "
        f"SELECT {columns}, CAST(1 AS TINYINT) AS {DIFF} FROM (FROM n EXCEPT ALL FROM o) "
        f"UNION ALL SELECT {columns}, CAST(-1 AS TINYINT) FROM (FROM o EXCEPT ALL FROM n)"
    )
    if keys is not None:
        keys = keys.rename_columns([f"k{i}" for i in range(keys.num_columns)])
    found = over_arrow(cursor, sql, _plain(old), _plain(new), keys)
    target = new.schema.append(pa.field(DIFF, pa.int8()))
    try:
        return found.rename_columns(target.names).cast(target), False
    except (pa.ArrowException, ValueError, TypeError):
        # a type that does not come back from DuckDB as it went in: send the whole result
        return signed(new, 1), True


def _narrowed(old: pa.Table, new: pa.Table, touched: Touched) -> tuple[pa.Table, pa.Table] | None:
    """``old`` and ``new`` cut down to the rows whose key values each occur among the
    touched ones, with pyarrow's ``is_in`` (a superset of the touched groups' rows: an
    untouched group in it is equal in both and drops out of the difference). None where
    pyarrow's equality may not be DuckDB's (floats: NaN, -0.0; anything but integers,
    text, dates and times), or the types differ: DuckDB then picks the rows."""
    masks: list[tuple[pa.ChunkedArray, pa.ChunkedArray]] = []
    keys = touched.keys
    assert keys is not None
    for i, position in enumerate(touched.positions):
        kind = new.schema.field(position).type
        if not _exact_equality(kind) or keys.column(i).type != kind:
            return None
        values = pc.unique(keys.column(i))
        masks.append(
            (
                pc.is_in(old.column(position), value_set=values, skip_nulls=False),
                pc.is_in(new.column(position), value_set=values, skip_nulls=False),
            )
        )
    keep_old, keep_new = masks[0]
    for in_old, in_new in masks[1:]:
        keep_old, keep_new = pc.and_(keep_old, in_old), pc.and_(keep_new, in_new)
    return old.filter(keep_old), new.filter(keep_new)


def _unpaired(old: pa.Table, new: pa.Table, positions: tuple[int, ...]) -> pa.Table | None:
    """The narrowed ``old`` rows at -1 and ``new`` rows at +1, but for each group whose
    row is the same in both — a few rows, compared in Python, no query. Python's
    equality of two values of one column type implies DuckDB's, so nothing DuckDB tells
    apart is dropped; where Python tells apart what DuckDB does not (NaN is not NaN in
    Python) the group comes as a -1 and a +1 of equal rows: still exact once applied.
    None where a value has no Python form or a key repeats: DuckDB compares them."""
    try:
        before = list(zip(*(column.to_pylist() for column in old.columns), strict=True))
        after = list(zip(*(column.to_pylist() for column in new.columns), strict=True))
    except (ValueError, OverflowError, pa.ArrowException):
        return None
    at: dict[tuple[Any, ...], int] = {}
    for i, row in enumerate(before):
        key = tuple(row[p] for p in positions)
        if key in at:
            return None
        at[key] = i
    gone = set(range(len(before)))
    added = []
    for j, row in enumerate(after):
        found = at.pop(tuple(row[p] for p in positions), None)
        if found is not None and before[found] == row:
            gone.discard(found)
        else:
            added.append(j)
    removed = signed(old.take(pa.array(sorted(gone), pa.int64())), -1)
    return pa.concat_tables([removed, signed(new.take(pa.array(added, pa.int64())), 1)])


def _exact_equality(kind: pa.DataType) -> bool:
    """Whether pyarrow's equality of ``kind`` is DuckDB's (no collation travels in
    Arrow: a collated key never gets here, its plan folds in DuckDB)."""
    return bool(
        pa.types.is_integer(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_date(kind)
        or pa.types.is_timestamp(kind)
    )


class ChangeLog:
    """The changes of an analysis's last versions, oldest first. Guarded by the
    registry's lock (the publishing analysis thread adds, readers look)."""

    def __init__(self, versions: int = KEEP_CHANGES, rows: int = KEEP_ROWS) -> None:
        self.lineage = secrets.token_hex(4)
        self.versions = versions
        self.rows = rows
        self.version = 0  # the newest version added
        # changes are computed up to this version: a reader of changes pushes it on, so
        # one who reconnects within ``versions`` versions resumes without a snapshot
        self.follow_until = 0
        self._kept: deque[Change] = deque()
        self._held = 0

    def add(self, change: Change) -> None:
        self.version = change.version
        self._kept.append(change)
        self._held += change.table.num_rows
        while self._kept and (len(self._kept) > self.versions or self._held > self.rows):
            self._held -= self._kept.popleft().table.num_rows

    def followed(self, version: int, reader: bool) -> bool:
        """Whether the version after ``version`` gets its change computed at publish:
        while a reader of changes is attached, and for ``versions`` versions after the
        last one left (what a reconnecting reader could still resume from)."""
        if reader:
            self.follow_until = version + 1 + self.versions
        return version < self.follow_until

    def gap(self, version: int) -> None:
        """Version ``version`` was published without its change (nobody followed): the
        changes kept so far cannot lead past it, and a reader resumes with a snapshot."""
        self.version = version
        self._kept.clear()
        self._held = 0

    def since(self, version: int) -> list[Change] | None:
        """The changes after ``version`` up to the newest, or None when they are not all
        kept (or ``version`` is not one of this history's)."""
        if version == self.version:
            return []
        if version > self.version or not self._kept or self._kept[0].since > version:
            return None
        return [change for change in self._kept if change.version > version]

    def resume_point(self, since: int | str | None) -> int | None:
        """The version to continue after, from ``since`` (see :func:`checked_since`);
        None: start with a snapshot (a change id of another lineage too)."""
        since = checked_since(since)
        if since is None or isinstance(since, int):
            return since
        lineage, _, number = since.rpartition(".")
        return int(number) if lineage == self.lineage else None


def checked_since(since: int | str | None) -> int | str | None:
    """``since`` as a version (an int >= 0, or its digits) or a change's ``id``
    (``lineage.version``); ValueError/TypeError naming what is wrong."""
    if since is None:
        return None
    if isinstance(since, bool) or not isinstance(since, int | str):
        raise TypeError(f"since must be a version (int) or a change id (str), not {since!r}")
    if isinstance(since, str) and len(since) > MAX_ID:
        raise ValueError(
            f"since is {len(since):,} characters long; a change id has at most {MAX_ID}"
        )
    if isinstance(since, str) and since.isdigit() and since.isascii():
        since = int(since)
    if isinstance(since, int):
        if not 0 <= since <= MAX_VERSION:
            raise ValueError(f"since must be a version from 0 to {MAX_VERSION}, not {since}")
        return since
    lineage, dot, number = since.rpartition(".")
    if not dot or not lineage or not number.isdigit() or not number.isascii():
        shown = since if since.isprintable() and since.isascii() else ascii(since)
        raise ValueError(f"since must be a version or a change id like 'ab12cd34.7', not {shown!r}")
    if int(number) > MAX_VERSION:
        raise ValueError(f"since's version must be at most {MAX_VERSION}, not {number}")
    return since
