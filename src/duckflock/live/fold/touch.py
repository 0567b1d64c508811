"""The touched-groups fold: a refresh that merges only the groups the new rows land in.

A refresh after 10,000 new rows changes a handful of groups (the new rows of a time
series land in ~10 second-buckets), yet merging the whole state with the new rows'
partials re-aggregates every group: its cost follows the number of groups, not the new
rows. Where the plan has a ``touch`` query (:mod:`duckflock.live.plan.queries`), a
refresh instead

1. runs it over the state — with its row positions (``__r``) — and the new rows: DuckDB
   computes the new rows' partials, finds the state rows of the same groups by a semi
   join (DuckDB decides key equality) and merges only those, giving for each touched
   group its merged partials, its outputs (``__o…``, ``__keep``) and the state row it
   replaces (``__r``; NULL for a new group);
2. splices those rows into the state and into the kept outputs (:class:`Kept`: the
   outputs of every state row, aligned with it), with pyarrow: unchanged groups are
   copied, not re-aggregated;
3. reads the result from the kept outputs (HAVING is a filter of ``__keep``).

A plan with a row-by-row merge (:mod:`duckflock.live.fold.merges`: one query over the
new rows, no state scan) folds there first; this is where it hands a fold back to, and
the path of shapes without one (HAVING, count(DISTINCT …), sketches, …).

The first refresh after a rebuild runs the whole-state ``refresh`` query once, which
gives every group's outputs to keep; so does every refresh of a state under
:data:`GROUPS` groups, where merging them all costs no more. A plan with ORDER BY,
OFFSET or LIMIT has no ``touch`` query (a rank depends on every group), nor one whose
keys have several forms (-0.0 and 0.0, collations: the kept state's value must win,
see queries.py), nor a join (its fold runs in a pinned transaction, live/pinned.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from duckflock.live.fold.query import over_arrow
from duckflock.live.fold.states import MAX_CHUNKS

ROW = "__r"  # a state row's position, given to the touch query and returned by it
# below this many groups, merging the whole state costs no more than the touch query's
# own fixed cost (its semi join and CTE plan): measured crossover ~2,000 groups (CPU,
# one query each, 10,000 new rows of date_trunc('second') over 1,000/2,000/5,000 groups:
# whole 2.97/3.18/4.90 ms, touch 3.29/3.08/3.92 ms, best of 40)
GROUPS = 2_000


@dataclass(frozen=True)
class Kept:
    """The outputs of each row of ``state``, aligned with it, and what the last fold
    merged. Valid only for that very table: any other step that replaces the state
    (rebuild, retention, window, the pyarrow fold) leaves it behind, and the next
    refresh runs the whole-state query again."""

    state: pa.Table
    outputs: pa.Table  # __o… (and __keep, with HAVING) per state row
    merged: int = -1  # kept state rows the last touch query merged (-1: the whole state)


def applies(kept: Kept | None, state: pa.Table) -> bool:
    """Whether a fold of ``state`` should merge only its touched groups: ``kept`` holds
    its outputs and it has enough groups for that to pay."""
    return kept is not None and kept.state is state and state.num_rows >= GROUPS


def output_columns(outputs: int, filtered: bool) -> list[str]:
    """The columns of the outputs of ``outputs`` output columns, and HAVING's flag."""
    return [f"__o{i}" for i in range(outputs)] + (["__keep"] if filtered else [])


def touched(
    cursor: duckdb.DuckDBPyConnection,
    sql: str,
    kept: Kept,
    delta: pa.Table,
    state_columns: tuple[str, ...],
) -> Kept | None:
    """The kept state and outputs with ``delta`` folded into the groups it touches by
    the touch query ``sql``; None where its rows do not fit the kept tables' types
    (the whole-state query then decides)."""
    state, outputs = kept.state, kept.outputs
    positions = pc.subtract(
        pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), state.num_rows)), 1
    )
    merged = over_arrow(cursor, sql, state.append_column(ROW, positions), delta)
    replaced = pc.drop_null(merged[ROW])
    try:
        # a safe cast: a value that does not fit raises
        new_rows = merged.select(list(state_columns)).cast(state.schema)
        new_outputs = merged.select(outputs.column_names).cast(outputs.schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if len(replaced):
        unchanged = pc.invert(pc.is_in(positions, value_set=replaced.combine_chunks()))
        state, outputs = state.filter(unchanged), outputs.filter(unchanged)
    state = pa.concat_tables([state, new_rows])
    outputs = pa.concat_tables([outputs, new_outputs])
    if state.num_columns and state.column(0).num_chunks > MAX_CHUNKS:
        state, outputs = state.combine_chunks(), outputs.combine_chunks()
    return Kept(state, outputs, len(replaced))


def result(outputs: pa.Table, names: tuple[str, ...], filtered: bool) -> pa.Table:
    """The result from every group's outputs (a plan with a touch query has no ORDER BY,
    OFFSET or LIMIT: HAVING is the only step)."""
    if filtered:
        outputs = outputs.filter(pc.fill_null(outputs["__keep"], False))
    table = outputs.select([f"__o{i}" for i in range(len(names))])
    return table.rename_columns(list(names))
