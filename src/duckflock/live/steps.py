"""The fold steps a refresh is made of: pyarrow for plain shapes, DuckDB otherwise.

Used by :mod:`duckflock.live.refresh` and :mod:`duckflock.live.pinned`; each runs on the
analysis thread of the run, on the analysis's own cursor, and reads and writes only the
run's :class:`~duckflock.live.record.State` (``fast``).
"""

from __future__ import annotations

import contextlib
import weakref

import duckdb
import pyarrow as pa

from duckflock.live.fold import coded, detached, merges, segments, touch
from duckflock.live.fold.query import over_arrow
from duckflock.live.plan.plans import Plan, split
from duckflock.live.record import Analysis
from duckflock.live.results import log


def arrow_fold(
    analysis: Analysis, plan: Plan, state: pa.Table | None, delta: pa.Table
) -> tuple[pa.Table, pa.Table] | None:
    """The pyarrow fast path for plain shapes; None where it does not apply.

    A column type pyarrow cannot group or aggregate turns it off for this analysis:
    DuckDB does the refresh instead, then and from then on.
    """
    run = analysis.state
    if plan.arrow is None or not run.fast or state is None:
        return None
    if plan.arrow.has_nan(state, delta):
        # pyarrow skips NaN in min/max and sorts it apart; DuckDB ranks it above every
        # number and groups it: from the first NaN on, DuckDB folds this analysis
        run.fast = False
        return None
    try:
        folded = plan.arrow.fold(state, delta)
    except (pa.ArrowException, TypeError, ValueError):
        log.warning("analysis %r: pyarrow cannot fold it; DuckDB will", analysis.name)
        run.fast = False
        return None
    kept = run.segments.kept  # floating sums per segment: the new rows added to theirs
    if kept is not None:
        retraction = plan.retract if state is not None and kept.describes(state) else None
        adds = retraction is not None and segments.appended(kept, retraction, delta)
        run.segments.kept = kept if adds else None
        kept.state = weakref.ref(folded[0])
    return folded


def merge_fold(
    analysis: Analysis, plan: Plan, state: pa.Table, delta: pa.Table
) -> tuple[pa.Table, pa.Table]:
    """(state, result) with ``delta`` folded in by DuckDB: only the groups it touches
    where the plan has a touch query, the kept outputs belong to ``state`` and it has
    enough groups (:mod:`duckflock.live.fold.touch`), else the whole state (then keeping every
    group's outputs for the next fold)."""
    run = analysis.state
    if plan.merge is not None and run.fast:  # one query, merged row by row
        merged = merges.fold(run.cursor, plan.merge, state, delta)
        if merged is not None:
            run.kept = None
            return merged
        run.fast = False  # a NaN, -0.0 or overflow: DuckDB folds from now on
    kept = run.kept
    cursor = detached.fitting(plan.detached, run.cursor, state, delta)  # (fold/detached.py)
    if plan.touch and kept is not None and touch.applies(kept, state):
        folded = touch.touched(cursor, plan.touch, kept, delta, plan.state_columns)
        if folded is not None:
            run.kept = folded
            return folded.state, touch.result(folded.outputs, plan.outputs, plan.filtered)
    merged = over_arrow(cursor, plan.refresh, state, delta)
    new_state, table = split(plan, merged)
    columns = touch.output_columns(len(plan.outputs), plan.filtered)
    run.kept = touch.Kept(new_state, merged.select(columns)) if plan.touch else None
    return new_state, table


def fold_in(
    analysis: Analysis, plan: Plan, state: pa.Table | None, delta: pa.Table
) -> tuple[pa.Table, pa.Table]:
    """(state, result) with the appended rows ``delta`` folded in (not a join: its
    deletes rebuild, and a window reads one table)."""
    assert not plan.joined
    folded = arrow_fold(analysis, plan, state, delta)
    if folded is None:
        analysis.check()
        assert state is not None
        folded = merge_fold(analysis, plan, state, delta)
    return folded


def outputs(analysis: Analysis, plan: Plan, state: pa.Table, empty: pa.Table) -> pa.Table:
    """The result (HAVING, ORDER BY, LIMIT) of ``state``: pyarrow for plain shapes,
    else a DuckDB fold of no rows (``empty``: the source table's columns)."""
    if plan.arrow is not None and analysis.state.fast and not plan.arrow.has_nan(state, empty):
        with contextlib.suppress(pa.ArrowException, TypeError, ValueError):
            return plan.arrow.result(state)  # (not a large state's exact averages)
    if plan.finish:  # the state is merged already: its outputs alone
        return split(plan, over_arrow(analysis.state.cursor, plan.finish, state))[1]
    return split(plan, over_arrow(analysis.state.cursor, plan.refresh, state, empty))[1]


def combined(
    cursor: duckdb.DuckDBPyConnection, plan: Plan, inside: pa.Table, rows: pa.Table
) -> pa.Table:
    """A window's result: its buckets inside the window merged by the query's own keys,
    with the rows of the cut buckets folded in (pyarrow for plain shapes)."""
    if plan.arrow is not None and not plan.arrow.has_nan(inside, rows):
        with contextlib.suppress(pa.ArrowException, TypeError, ValueError):
            merged = coded.combined(plan.arrow, inside, rows)  # integer keys: in numpy
            if merged is not None:
                return plan.arrow.result(merged)
            return plan.arrow.fold(inside, rows, unique=False)[1]  # buckets: grouped
    return split(plan, over_arrow(cursor, plan.refresh, inside, rows))[1]
