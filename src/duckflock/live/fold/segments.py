"""Floating sums under retention deletes: each group's sum kept per *segment* of rows.

Subtracting a deleted DOUBLE from a sum is not exact (:mod:`.retention`), so a group
deleted rows touch has to be summed again from the table. Here the table's rows are
cut into segments by ranges of one ordered column (the first TIMESTAMP or integer
column of the deleted rows; a retention DELETE removes the oldest rows, whose segments
are then gone whole), and each group keeps, per segment, its row count and each
floating sum with its count. A DELETE then reads back from the table only the segments
it cut (DuckDB skips the rest of the table by its zonemaps), and a group's sum is its
segments' sums added in order: a sum of DuckDB partials, as a parallel full run adds
its threads' (duckdb/duckdb#4270); floats are never subtracted.

Soundness does not rest on the segments being up to date: they describe one state
object (appended rows are added by :func:`appended`, on the fold of that state; any
other fold leaves them describing a state that is gone, and they are built again), and
before a sum is taken from them every settled group's row and value counts must equal
the state's exact ones, and the segments read back must hold exactly the rows left.
Anything else — an infinite or NaN sum, a zero (``-0.0``), more than ``_CELLS`` cells,
a key pyarrow cannot look up — answers None: the caller recomputes the groups from the
table as before.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from duckflock.live.fold.retraction import Retraction, Retracts
from duckflock.sql import quote_ident

_CELLS = 1 << 18  # at most groups x segments kept (each cell 8 bytes a matrix)
_MOST_CUT = 4  # segments a delete may cut (each is read back by a query of its own)
_ROWS_PER_SEGMENT = 32_768  # about one fourth of a DuckDB row group
_LARGEST = 16 * _ROWS_PER_SEGMENT  # a cell past this is cut afresh at the next delete
_MOST = 1 << 62  # |value - low| beyond this: no segments (no int64 overflow)


@dataclass
class Segments:
    """One state's groups x segments (``n`` ranges of ``width`` from ``low``, one cell
    below ``low``, the last range open above, one cell for NULL)."""

    column: str  # the ordered column, as the deleted rows name it
    temporal: bool  # a TIMESTAMP (microseconds), else an integer
    low: int
    width: int
    n: int
    keys: pa.Array  # the groups, in row order of the matrices
    rows: np.ndarray  # int64 [groups, cells]: count(*)
    sums: dict[int, np.ndarray]  # per floating sum partial: float64 [groups, cells]
    counts: dict[int, np.ndarray]  # its count(x): int64 [groups, cells]
    state: weakref.ref[pa.Table] | None = None  # the state these describe

    def describes(self, state: pa.Table) -> bool:
        return self.state is not None and self.state() is state

    @property
    def cells(self) -> int:
        return self.n + 2

    def bins(self, values: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
        """The cell of each value (None: a value out of reach, an infinity)."""
        raw = pc.cast(values, pa.int64()) if not pa.types.is_int64(values.type) else values
        nulls = raw.null_count
        filled = pc.fill_null(raw, self.low) if nulls else raw
        x = np.asarray(filled.to_numpy(zero_copy_only=False), dtype=np.int64)
        if len(x) and (int(x.max()) - self.low >= _MOST or self.low - int(x.min()) >= _MOST):
            return None
        edge = np.iinfo(np.int64).max - 1
        if self.temporal and len(x) and ((x >= edge) | (x <= -edge)).any():
            return None  # DuckDB's ±infinity: epoch_us gives NULL there
        cell = np.minimum((x - self.low) // self.width, self.n - 1) + 1
        cell[x < self.low] = 0
        if nulls:
            valid = pc.is_valid(values).to_numpy(zero_copy_only=False)
            cell[~np.asarray(valid, dtype=bool)] = self.n + 1
        return cell

    def _epoch(self) -> str:
        column = quote_ident(self.column)
        return f"epoch_us({column})" if self.temporal else f"{column}::BIGINT"

    def bin_sql(self) -> str:
        """The cell of each row of the table when the segments are cut (every value is
        at or above ``low`` then; NULL stays NULL: :meth:`put` puts it last)."""
        return f"(least(({self._epoch()} - {self.low}) // {self.width}, {self.n - 1}) + 1)::INTEGER"

    def range_sql(self, cell: int) -> str:
        """A WHERE of the rows of ``cell``: plain comparisons of the column with
        constants, which DuckDB prunes row groups by (as :meth:`bins` cuts them)."""
        column = quote_ident(self.column)

        def at(value: int) -> str:
            return f"make_timestamp({value}::BIGINT)" if self.temporal else str(value)

        if cell == self.n + 1:
            return f"{column} IS NULL"
        if cell == 0:
            return f"{column} < {at(self.low)}"
        start = self.low + (cell - 1) * self.width
        upper = f" AND {column} < {at(start + self.width)}" if cell < self.n else ""
        return f"{column} >= {at(start)}{upper}"

    def grow(self, keys: pa.Array) -> np.ndarray:
        """The row of each of ``keys`` in the matrices, adding the groups not there."""
        at = pc.index_in(keys, value_set=self.keys, skip_nulls=False)
        missing = pc.is_null(at)
        if pc.any(missing).as_py():
            new = pc.unique(keys.filter(missing))
            self.keys = pa.concat_arrays([self.keys, new])
            more = len(new)
            self.rows = np.vstack([self.rows, np.zeros((more, self.cells), np.int64)])
            for i in self.sums:
                self.sums[i] = np.vstack([self.sums[i], np.zeros((more, self.cells))])
                self.counts[i] = np.vstack([self.counts[i], np.zeros((more, self.cells), np.int64)])
            if len(self.keys) * self.cells > _CELLS:
                raise ValueError("too many groups to keep segments of")
            at = pc.index_in(keys, value_set=self.keys, skip_nulls=False)
        return np.asarray(at.to_numpy(zero_copy_only=False), dtype=np.int64)

    def put(self, table: pa.Table, retraction: Retraction, add: bool) -> None:
        """Cells from ``table`` (keys, partials, ``__seg``: one row per group and
        cell): replacing what they held, or added to it (appended rows)."""
        g = self.grow(table["__k0"].combine_chunks())
        c = np.asarray(pc.fill_null(table["__seg"], self.n + 1).to_numpy(), dtype=np.int64)

        def numbers(name: str, kind: type) -> np.ndarray:
            column = pc.fill_null(table[name], 0).to_numpy()
            return np.asarray(column, dtype=kind)

        rows = numbers(f"__p{retraction.rows}", np.int64)
        self.rows[g, c] = self.rows[g, c] + rows if add else rows
        for i in self.sums:
            count = numbers(f"__p{retraction.counts[i]}", np.int64)
            value = numbers(f"__p{i}", np.float64)
            had = self.counts[i][g, c]
            if add:  # only values are added: a cell's sum is never touched by a 0.0
                with np.errstate(all="ignore"):  # inf - inf: NaN, refused by _totals
                    value = np.where(had > 0, self.sums[i][g, c] + value, value)
                value = np.where(count > 0, value, self.sums[i][g, c])
                count = had + count
            self.sums[i][g, c], self.counts[i][g, c] = value, count


@dataclass
class Slot:
    """Where an analysis keeps its segments between refreshes (``State.segments``)."""

    kept: Segments | None = None
    scattered: bool = False  # a delete cut too many segments: no segments from then on


class _Scattered(Exception):
    """A delete cut more than ``_MOST_CUT`` segments (its rows are not in the
    column's order): reading them back would cost more than recomputing the groups."""


def _column(rows: pa.Schema, keys: tuple[str, ...]) -> tuple[str, bool] | None:
    """The column to cut the table by: the first TIMESTAMP (microseconds, no time
    zone), else the first integer column, that is not a key."""
    taken = {key.lower() for key in keys}
    fields = [f for f in rows if f.name.lower() not in taken]
    for field in fields:
        if field.type == pa.timestamp("us"):
            return field.name, True
    for field in fields:
        if pa.types.is_integer(field.type) and field.type not in (pa.uint64(),):
            return field.name, False
    return None


def applies(retraction: Retraction) -> bool:
    """Whether floating sums are what a retraction recomputes, and nothing else."""
    return bool(
        retraction.floating
        and retraction.source
        and retraction.keys == 1
        and retraction.sources is not None
        and not retraction.forms
        and not {Retracts.MIN, Retracts.MAX} & set(retraction.kinds)
    )


def build(
    cursor: duckdb.DuckDBPyConnection, retraction: Retraction, schema: pa.Schema, groups: int
) -> Segments | None:
    """Segments of the whole table (one scan for its range, one grouped by cell), in
    the caller's pinned snapshot; None where they do not apply."""
    assert retraction.key_columns is not None
    chosen = _column(schema, retraction.key_columns)
    if chosen is None:
        return None
    column, temporal = chosen
    x = f"epoch_us({quote_ident(column)})" if temporal else f"{quote_ident(column)}::BIGINT"
    found = cursor.execute(
        f"SELECT min({x}), max({x}), count(*), count({quote_ident(column)}) - count({x}) "
        f"FROM {retraction.source}"
    ).fetchone()
    if found is None or found[3] or found[0] is None:
        return None  # an empty table, or infinities
    low, high, total = int(found[0]), int(found[1]), int(found[2])
    if high - low >= _MOST:
        return None
    n = min(total // _ROWS_PER_SEGMENT, 4096, _CELLS // max(groups, 1) - 2)
    if n < 1:
        return None  # a small table (a scan is cheap), or too many groups
    width = max(1, -(-(high - low + 1) // n))
    empty = np.zeros((0, n + 2))
    segments = Segments(
        column,
        temporal,
        low,
        width,
        n,
        pa.array([], schema.field(retraction.key_columns[0]).type),
        empty.astype(np.int64),
        {i: empty.copy() for i in retraction.floating},
        {i: empty.astype(np.int64) for i in retraction.floating},
    )
    cell = segments.bin_sql()  # grouped by itself: a table's own __seg column wins an alias
    whole = cursor.execute(
        f"SELECT {retraction.select}, {cell} AS __seg FROM {retraction.source} "
        f"GROUP BY {retraction.group}, {cell}"
    ).to_arrow_table()
    segments.put(whole, retraction, add=False)
    return segments


def _cells(retraction: Retraction, segments: Segments, cells: list[int]) -> str:
    """The partials of each group in each of ``cells``, read from the table."""
    return " UNION ALL ".join(
        f"SELECT {retraction.select}, {cell} AS __seg FROM {retraction.source} "
        f"WHERE {segments.range_sql(cell)} GROUP BY {retraction.group}"
        for cell in cells
    )


def appended(segments: Segments, retraction: Retraction, delta: pa.Table) -> bool:
    """Add appended rows to their cells; False where that fails (drop the segments)."""
    assert retraction.key_columns is not None and retraction.sources is not None
    with contextlib.suppress(pa.ArrowException, TypeError, ValueError, KeyError):
        names = {name.lower(): name for name in delta.column_names}
        cell = segments.bins(delta[names[segments.column.lower()]])
        if cell is None:
            return False
        rows = delta.append_column("__seg", pa.array(cell))
        key = names[retraction.key_columns[0].lower()]
        aggregations: list[tuple[str, str] | tuple[str, str, pc.CountOptions]] = [
            ("__seg", "count", pc.CountOptions(mode="all"))
        ]
        columns = {names[str(retraction.sources[i]).lower()] for i in segments.sums}
        for column in sorted(columns):
            if rows[column].type != pa.float64():
                return False
            aggregations += [(column, "sum"), (column, "count")]
        grouped = rows.group_by([key, "__seg"], use_threads=False).aggregate(aggregations)
        out = {"__k0": grouped[key], "__seg": grouped["__seg"]}
        out[f"__p{retraction.rows}"] = grouped["__seg_count"]
        for i in sorted(segments.sums):
            source = names[str(retraction.sources[i]).lower()]
            out[f"__p{i}"] = grouped[f"{source}_sum"]
            out[f"__p{retraction.counts[i]}"] = grouped[f"{source}_count"]
        segments.put(pa.table(out), retraction, add=True)
        return True
    return False


def settle(
    cursor: duckdb.DuckDBPyConnection,
    retraction: Retraction,
    segments: Segments,
    out: pa.Table,
    pieces: list[pa.Table],
) -> pa.Table | None:
    """``out`` (the state less the deleted rows, ``__again`` flagging the groups whose
    floating sums they touched) with those sums taken from the segments: the deleted
    rows leave their cells, the cells they cut but did not empty are read back from
    the table. None where the segments do not agree with the state (see the module)."""
    assert retraction.key_columns is not None
    names = {name.lower(): name for name in pieces[0].column_names}
    key = names[retraction.key_columns[0].lower()]
    column = names[segments.column.lower()]
    found = []
    for piece in pieces:
        cell = segments.bins(piece[column])
        if cell is None:
            return None
        found.append((segments.grow(piece[key].combine_chunks()), cell))
    size = segments.rows.size
    gone = sum(np.bincount(g * segments.cells + cell, minlength=size) for g, cell in found)
    gone = np.asarray(gone, dtype=np.int64).reshape(segments.rows.shape)
    left = segments.rows - gone
    if (left < 0).any():
        return None
    touched = gone.any(axis=0)
    cut = [int(c) for c in np.flatnonzero(touched & (left > 0).any(axis=0))]
    if len(cut) > _MOST_CUT:
        raise _Scattered
    emptied = touched & ~(left > 0).any(axis=0)
    segments.rows = left
    for i in segments.sums:
        segments.counts[i][:, emptied] = 0
    if cut:
        read = cursor.execute(_cells(retraction, segments, cut)).to_arrow_table()
        for c in cut:  # cells read back replace what they held, groups absent are empty
            segments.rows[:, c] = 0
            for i in segments.sums:
                segments.counts[i][:, c] = 0
        segments.put(read, retraction, add=False)
        if not np.array_equal(segments.rows, left):
            return None  # the table's rows are not the ones the segments expect
    return _totals(retraction, segments, out)


def _totals(retraction: Retraction, segments: Segments, out: pa.Table) -> pa.Table | None:
    """``out`` without ``__again``, the flagged groups' floating sums from the cells."""
    again = pc.fill_null(out["__again"], True)
    g = segments.grow(out["__k0"].combine_chunks())
    flagged = np.asarray(again.to_numpy(zero_copy_only=False), dtype=bool)
    rows = np.asarray(pc.fill_null(out[f"__p{retraction.rows}"], 0).to_numpy(), dtype=np.int64)
    if not np.array_equal(segments.rows[g].sum(axis=1), rows):
        return None
    columns = dict(zip(out.column_names, out.columns, strict=True))
    for i in segments.sums:
        counts = segments.counts[i][g]
        have = np.asarray(pc.fill_null(out[f"__p{retraction.counts[i]}"], 0).to_numpy())
        if not np.array_equal(counts.sum(axis=1), have):
            return None
        with np.errstate(all="ignore"):  # inf - inf: NaN, refused below
            total = np.where(counts > 0, segments.sums[i][g], 0.0).sum(axis=1)
        some = have > 0
        if not np.isfinite(total[some & flagged]).all() or (total[some & flagged] == 0).any():
            return None  # infinity, NaN or a signed zero: DuckDB's own sum decides
        old = out[f"__p{i}"].combine_chunks()
        mine = pa.array(total, pa.float64(), mask=~some)
        columns[f"__p{i}"] = pc.if_else(pa.array(flagged), mine, old)
    del columns["__again"]
    return pa.table(columns)


def retracting(
    cursor: duckdb.DuckDBPyConnection,
    retraction: Retraction,
    slot: Slot,
    state: pa.Table,
    out: pa.Table,
    pieces: list[pa.Table],
) -> tuple[pa.Table, Segments | None] | None:
    """:func:`settle` with the slot's segments where they describe ``state``, else with
    segments built now; None where neither settles (the caller recomputes the groups;
    the slot's segments go)."""
    kept, slot.kept = slot.kept, None
    if slot.scattered or not applies(retraction):
        return None
    if pc.sum(out[f"__p{retraction.rows}"]).as_py() is None:
        return None
    if pc.sum(out[f"__p{retraction.rows}"]).as_py() < 2 * _ROWS_PER_SEGMENT:
        return None  # a small table: its groups are recomputed at little cost
    with contextlib.suppress(pa.ArrowException, TypeError, ValueError, KeyError):
        if kept is not None and kept.describes(state):
            try:
                done = settle(cursor, retraction, kept, out, pieces)
            except _Scattered:
                slot.scattered = True
                return None
            if done is not None and kept.rows.sum(axis=0).max() > _LARGEST:
                return done, None  # a cell grew (appended rows): cut afresh next time
            if done is not None:
                return done, kept
        fresh = build(cursor, retraction, pieces[0].schema, out.num_rows)
        if fresh is not None:
            done = _totals(retraction, fresh, out)
            if done is not None:
                return done, fresh
    return None
