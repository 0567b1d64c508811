"""The plan of an incremental analysis: its generated queries and how to read their output.

:mod:`duckflock.live.plan.incremental` makes a :class:`Plan` from an analysis's SQL;
:mod:`duckflock.live.refresh` runs its queries and :func:`split` turns their output into
the kept state and the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from duckflock.core.names import Identity
from duckflock.live.fold.arrow import ArrowPlan
from duckflock.live.fold.detached import Settings
from duckflock.live.fold.merges import Merge
from duckflock.live.fold.query import DELTA as DELTA  # the newly appended rows
from duckflock.live.fold.retraction import Retraction

STATE = "__duckflock_state"  # the kept state, as the refresh query names it
DISTINCT_LIMIT = 1_000_000  # distinct values kept in all groups' sets, at most


@dataclass(frozen=True)
class Plan:
    """The generated queries of an incremental analysis, and how to read their output.

    ``build`` and ``refresh`` each return the new state (``__k…``/``__p…`` columns) and,
    beside it, the query's outputs (``__o…``, cast to the full query's types), a HAVING
    flag (``__keep``) and an ORDER BY rank (``__rank``); :func:`split` turns that into
    the state and the result. One DuckDB query per refresh: each costs 1-2 ms of fixed
    overhead on small inputs, more than the work itself.
    """

    table: Identity  # the source (fact) table: its appended rows are folded in
    pin: str  # touches the table: DuckDB takes a transaction's snapshot at first access
    build: str  # from the whole table
    refresh: str  # from STATE and the new rows in DELTA
    state_columns: tuple[str, ...]
    outputs: tuple[str, ...]  # the full query's column names
    filtered: bool  # has HAVING
    ordered: bool  # has ORDER BY
    offset: int
    limit: int | None
    arrow: ArrowPlan | None = None  # the pyarrow fast path, for the plainest shapes
    sets: tuple[str, ...] = ()  # state columns holding count(DISTINCT …) value lists
    distinct_limit: int = DISTINCT_LIMIT  # values those may hold in all, then: full
    joined: frozenset[Identity] = frozenset()  # dimension tables: a write rebuilds
    retract: Retraction | None = None  # how deleted rows leave the state (retention.py)
    finish: str = ""  # the outputs of STATE alone, already merged (one Arrow scan, no GROUP BY)
    # the merge of only the groups DELTA lands in, with STATE's row positions
    # (duckflock.live.fold.touch); "" where a rank or a key's form needs every group
    touch: str = ""
    # one query over DELTA, then a row-by-row merge in pyarrow (duckflock.live.fold.merges);
    # None where a partial, key or output has no such merge
    merge: Merge | None = None
    partials: str = ""  # the partials of DELTA's rows alone, one row per group (no outputs)
    # the settings ``refresh`` and ``touch`` run under on a detached instance (None: on
    # the analysis's cursor): duckflock.live.fold.detached
    detached: Settings | None = None

    def oversized(self, state: pa.Table) -> str | None:
        """Why the state is too big to keep (its distinct sets), or None."""
        if not self.sets:
            return None
        held = sum(
            pc.sum(pc.fill_null(pc.list_value_length(state[column]), 0)).as_py() or 0
            for column in self.sets
        )
        if held <= self.distinct_limit:
            return None
        return (
            f"full: count(DISTINCT …) would keep {held:,} values, over distinct_limit="
            f"{self.distinct_limit:,}"
        )


def split(plan: Plan, table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(state, result) from the output of ``plan.build`` or ``plan.refresh``."""
    state = table.select(list(plan.state_columns))
    result = table
    if plan.filtered:
        result = result.filter(pc.fill_null(result["__keep"], False))
    if plan.ordered:
        result = result.sort_by("__rank")
    if plan.offset or plan.limit is not None:
        result = result.slice(plan.offset, plan.limit)
    result = result.select([f"__o{i}" for i in range(len(plan.outputs))])
    return state, result.rename_columns(list(plan.outputs))
