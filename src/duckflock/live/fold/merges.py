"""A refresh of one DuckDB query: the new rows' partials, merged into the state row by row.

Every DuckDB query here costs ~1.5 ms of planning and ~0.5 ms per Arrow table it scans,
more than the work of 10,000 new rows. Where a planned shape's partials all merge
element-wise (:class:`Merge`, chosen by :mod:`duckflock.live.plan.queries`), a refresh
runs one query, over the new rows only: their keys and partials, grouped (DuckDB
computes the keys' expressions, WHERE and FILTER, and decides which new rows share a
group). Then pyarrow

1. finds each new group's state row by its key values (``index_in``; several keys as
   one code per row): Arrow's equality, which is DuckDB's for the key types admitted
   (:func:`equal_in_arrow`: no floating, interval, collated or nested keys);
2. merges the two rows' partials as their SQL ``merge`` does: counts and sums add
   (exact sums in ``decimal256``, back with an overflow check), min/max keep the
   smaller/greater, bool_and/bool_or combine, and a winner (arg_max/arg_min, ordered
   first/last: :class:`~duckflock.live.fold.states.Pick`) is the new row's where its
   ordering key comes strictly first, else the kept state's (older rows win ties), and
   approx_count_distinct's sketches keep each register's maximum (fold/sketches.py);
3. splices: the untouched groups' rows are kept (one filter, no aggregation), the
   touched ones replaced, new groups appended;
4. reads the result off the state (outputs that are a key, a partial, a floating
   average or a sketch's count, each already of the query's type:
   :meth:`ArrowPlan.result`).

Where a fold cannot be proven equal to DuckDB's (a NaN or -0.0 in a floating partial, a
sum past its type, a type a kernel refuses), :func:`fold` returns None and DuckDB folds
(:mod:`duckflock.live.fold.touch`, or the whole-state query).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from duckflock.live.fold import aligned, detached, sketches
from duckflock.live.fold.arrow import ArrowPlan
from duckflock.live.fold.computed import Computed, Refused
from duckflock.live.fold.dense import KeyIndex
from duckflock.live.fold.lookup import Lookup
from duckflock.live.fold.nans import unlike_duckdb
from duckflock.live.fold.positions import combine
from duckflock.live.fold.query import over_arrow
from duckflock.live.fold.states import MAX_CHUNKS, PartialKind, Pick

# column types (DuckDB's names) whose equality and order pyarrow shares with DuckDB:
# their stored values compare alike (floats only without NaN and -0.0, VARCHAR only
# without a collation: each user checks those). Not INTERVAL, ENUM, UUID, HUGEINT (its
# Arrow form is lossy), nested. Also the pyarrow path's (live/plan/arrowpath.py).
ARROW_COMPARES = frozenset(
    {"BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT"}
    | {"UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "FLOAT", "DOUBLE", "VARCHAR"}
    | {"DATE", "TIME", "TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS"}
    | {"TIMESTAMP WITH TIME ZONE"}
)
_FLOATING = frozenset({"FLOAT", "DOUBLE"})


def equal_in_arrow(kind: str) -> bool:
    """Whether Arrow's ``index_in`` finds values of DuckDB type ``kind`` equal exactly
    where DuckDB does: not floating (-0.0 = 0.0); bytes and DECIMAL (one type on both
    sides) too. A VARCHAR key reaches here only uncollated (a plan with a touch query
    has no key with several forms)."""
    return (kind in ARROW_COMPARES and kind not in _FLOATING) or _decimal_or(kind, "BLOB")


def ordered_in_arrow(kind: str) -> bool:
    """Whether pyarrow orders values of DuckDB type ``kind`` as DuckDB does (min/max, a
    winner's ordering key): not strings (a collation may order them) nor booleans;
    floating ones while no NaN or -0.0 is merged (checked on every fold)."""
    return (kind in ARROW_COMPARES and kind not in ("BOOLEAN", "VARCHAR")) or _decimal_or(kind)


def _decimal_or(kind: str, *also: str) -> bool:
    return kind.startswith("DECIMAL(") or kind in also


class Program(Protocol):
    """The new rows' partials computed without DuckDB: a
    :class:`~duckflock.live.fold.computed.Computed` program, or a join's
    :class:`~duckflock.live.fold.lookup.Lookup`."""

    def partials(self, delta: pa.Table, schema: pa.Schema) -> pa.Table: ...


ELEMENTWISE = frozenset(
    {PartialKind.COUNT_ALL, PartialKind.COUNT, PartialKind.SEEN}
    | {PartialKind.SUM, PartialKind.MIN, PartialKind.MAX}
    | {PartialKind.BOOL_AND, PartialKind.BOOL_OR, PartialKind.PICK, PartialKind.KEY}
    | {PartialKind.SKETCH}  # registers' maxima, admitted by probes (fold/sketches.py)
)


@dataclass(frozen=True)
class Merge:
    """How one shape's refresh folds by :func:`fold`."""

    partials: str  # the new rows' keys and partials, grouped (over DELTA)
    keys: int  # the state's first ``keys`` columns are its keys
    kinds: tuple[PartialKind, ...]  # each partial's
    picks: tuple[Pick | None, ...]  # a winner's rule, per partial
    outputs: ArrowPlan  # the result from the state (only its outputs are used)
    # the settings ``partials`` runs under on a detached instance (None: on the
    # analysis's cursor): live/fold/detached.py
    detached: detached.Settings | None = None
    # the same partials as a pyarrow program, admitted by probes (live/plan/computing.py,
    # a join's: live/plan/joining.py)
    computed: Program | None = None
    # the state's key's lookup table for the aligned path (one integer key: dense.py)
    _keys: KeyIndex = field(default_factory=KeyIndex, compare=False, hash=False, repr=False)

    def admits(self, schema: pa.Schema) -> bool:
        """Whether pyarrow has every kernel a fold of a state of ``schema`` calls
        (asked once, over no rows: kernels are chosen by type), and, for sketches,
        whether numpy merges and counts them as DuckDB does (:func:`sketches.agrees`)."""
        if PartialKind.SKETCH in self.kinds and not sketches.agrees():
            return False
        empty = schema.empty_table()
        try:
            _combined(self, empty, empty)
            self.outputs.result(empty)
        except (pa.ArrowException, TypeError, ValueError):
            return False
        return True


def fold(
    cursor: duckdb.DuckDBPyConnection, merge: Merge, state: pa.Table, delta: pa.Table
) -> tuple[pa.Table, pa.Table] | None:
    """(state, result) with the appended rows ``delta`` folded in by one DuckDB query
    and pyarrow; None where pyarrow cannot fold them as DuckDB would (DuckDB then does).
    A computed program over a small state merges its partials aligned to the state's
    rows, ungrouped (:mod:`.aligned`), where it can."""
    new = None
    program, rows = _program(merge, delta)
    if program is not None:
        folded = _aligned(merge, program, state, rows)
        if folded is not None:
            return folded, merge.outputs.result(folded)
        new = _computed(program, state.schema, rows)
    if new is None and merge.detached is not None:
        new = detached.run(merge.detached, cursor, merge.partials, delta)
    elif new is None:
        new = over_arrow(cursor, merge.partials, state, delta)
    try:
        new = new.cast(state.schema)  # a safe cast: a value that does not fit raises
        folded = merged(merge, state, new)
        if folded is None:
            return None
        return folded, merge.outputs.result(folded)
    except (pa.ArrowException, TypeError, ValueError):
        return None


def _program(merge: Merge, delta: pa.Table) -> tuple[Program | None, pa.Table]:
    """The shape's pyarrow program and the rows it reads: a join's program reads the
    new rows joined with its dimension copy (joined once per fold)."""
    found = merge.computed
    if not isinstance(found, Lookup):
        return found, delta
    try:
        return found.join.program, found.joined(delta)
    except (pa.ArrowException, TypeError, ValueError):
        return None, delta


def _aligned(merge: Merge, program: Program, state: pa.Table, rows: pa.Table) -> pa.Table | None:
    """``state`` with the new ``rows`` merged in by :func:`aligned.partials`; None where
    it does not apply (the grouped path then runs)."""
    if not isinstance(program, Computed):
        return None
    try:
        new = aligned.partials(program, state, merge.keys, rows, merge._keys)
        if new is None or _unlike(state, merge.keys):  # (new: checked by partials)
            return None
        return _combined(merge, state, new)
    except (Refused, pa.ArrowException, TypeError, ValueError):
        return None


def _computed(program: Program, schema: pa.Schema, rows: pa.Table) -> pa.Table | None:
    """The new rows' partials by the shape's pyarrow program; None where this batch is
    DuckDB's to compute (live/fold/computed.py)."""
    try:
        return program.partials(rows, schema)
    except (Refused, pa.ArrowException, TypeError, ValueError):
        return None


def merged(merge: Merge, state: pa.Table, new: pa.Table) -> pa.Table | None:
    """``state`` with ``new`` (the new rows' partials, one row per group, in the
    state's schema) merged in; None where the merge would differ from DuckDB's."""
    at = _positions(state, new, merge.keys)
    if at is None:
        return None
    touched = pc.is_valid(at)
    matched = len(at) - at.null_count
    parts = []
    if matched:
        old = state.filter(touched)
        taken = pc.drop_null(at)
        fresh = new.take(taken)
        if _unlike(old, merge.keys) or _unlike(fresh, merge.keys):
            return None
        parts += [state.filter(pc.invert(touched)), _combined(merge, old, fresh)]
        if matched < new.num_rows:  # and the groups the state had not seen
            rows = pa.array(range(new.num_rows), pa.int64())
            parts.append(new.filter(pc.invert(pc.is_in(rows, value_set=taken))))
    else:
        parts += [state, new]
    folded = pa.concat_tables(parts)
    if folded.num_columns and folded.column(0).num_chunks > MAX_CHUNKS:
        folded = folded.combine_chunks()
    return folded


def _positions(state: pa.Table, new: pa.Table, keys: int) -> pa.ChunkedArray | None:
    """Per state row, the row of ``new`` with the same key values (null: none). NULL
    keys match NULL keys, as GROUP BY groups them. Several keys become one code per
    row: the key values' positions among ``new``'s, in a mixed radix."""
    if keys == 1:
        return pc.index_in(state.column(0), value_set=new.column(0))
    width = max(new.num_rows, 1)
    if width**keys >= 2**62:
        return None
    state_code: pa.ChunkedArray | pa.Array | None = None
    new_code: pa.ChunkedArray | pa.Array | None = None
    for i in range(keys):
        values = new.column(i)
        own = pc.cast(pc.index_in(values, value_set=values), pa.int64())
        found = pc.cast(pc.index_in(state.column(i), value_set=values), pa.int64())
        if state_code is None or new_code is None:
            state_code, new_code = found, own
        else:
            state_code = pc.add(pc.multiply(state_code, width), found)
            new_code = pc.add(pc.multiply(new_code, width), own)
    return pc.index_in(state_code, value_set=new_code)


def _unlike(table: pa.Table, keys: int) -> bool:
    """Whether a floating partial of ``table`` holds NaN or -0.0 (there DuckDB's sums,
    order and ties differ from pyarrow's)."""
    return any(
        pa.types.is_floating(column.type) and column.num_chunks and unlike_duckdb(chunk)
        for column in table.columns[keys:]
        for chunk in column.chunks
    )


def _combined(merge: Merge, old: pa.Table, new: pa.Table) -> pa.Table:
    """The touched groups: ``old``'s rows (the state's) merged with ``new``'s, row by row."""
    width = merge.keys
    columns = list(old.columns[:width])
    wins: dict[Pick, pa.ChunkedArray] = {}  # a winner's value and key share its rule
    for i, (kind, pick) in enumerate(zip(merge.kinds, merge.picks, strict=True)):
        a, b = old.column(width + i), new.column(width + i)
        if pick is not None:
            if pick not in wins:
                wins[pick] = _new_wins(pick, width, old, new)
            columns.append(pc.if_else(wins[pick], b, a))
        else:
            columns.append(_combine(kind, a, b))
    return pa.Table.from_arrays(columns, schema=old.schema)


def _combine(
    kind: PartialKind, old: pa.ChunkedArray, new: pa.ChunkedArray
) -> pa.ChunkedArray | pa.Array:
    """One partial (not a winner's) of the touched groups, merged: counts, sums, min
    and max as the plain shape merges them (:func:`positions.combine`)."""
    if kind is PartialKind.SEEN:
        return pc.add_checked(old, new)  # never null
    if kind is PartialKind.SKETCH:
        return sketches.merge(old, new)
    if kind is PartialKind.BOOL_AND:
        return pc.coalesce(pc.and_(old, new), old, new)  # skipping nulls, as bool_and does
    if kind is PartialKind.BOOL_OR:
        return pc.coalesce(pc.or_(old, new), old, new)
    return combine(kind, old, new)


def _new_wins(pick: Pick, width: int, old: pa.Table, new: pa.Table) -> pa.ChunkedArray:
    """Per touched group, whether the new rows' candidate beats the state's: it has
    one, and the state has none or the new one's key comes strictly first."""
    old_key, new_key = old.column(width + pick.key), new.column(width + pick.key)
    if pick.seen < 0:  # arg_max/arg_min: a candidate has a key
        has_old, has_new = pc.is_valid(old_key), pc.is_valid(new_key)
    else:
        has_old = pc.greater(old.column(width + pick.seen), 0)
        has_new = pc.greater(new.column(width + pick.seen), 0)
    ahead = (pc.greater if pick.descending else pc.less)(new_key, old_key)
    if old_key.null_count or new_key.null_count:
        # a NULL key against a value: ahead where NULLs come first
        null_new = pc.and_(pc.is_null(new_key), pc.is_valid(old_key))
        null_old = pc.and_(pc.is_valid(new_key), pc.is_null(old_key))
        ahead = pc.if_else(
            null_new, pick.nulls_first, pc.if_else(null_old, not pick.nulls_first, ahead)
        )
        ahead = pc.fill_null(ahead, False)  # two NULL keys tie
    return pc.and_(has_new, pc.or_(pc.invert(has_old), ahead))
