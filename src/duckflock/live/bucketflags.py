"""A sliding window's flags per bucket at an instant, from its buckets' marks (marks.py):
which buckets lie whole inside the window (``__in``), which are not expired (``__live``)
and which keep one zone offset throughout (``__local``) — what ``flags_sql``
(:mod:`duckflock.live.instants`) computes in SQL, as comparisons of integers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from duckflock.live.fold import coded
from duckflock.live.instants import Op
from duckflock.live.marks import Marking


def columns(marks: pa.Table) -> dict[str, np.ndarray]:
    """The marks per bucket in numpy (see marked: plain integers); a NULL offset flag
    is neither steady nor unsteady, as the SQL leaves it."""

    def true(values: pa.ChunkedArray) -> np.ndarray:
        return np.asarray(values.fill_null(False).to_numpy(), bool)

    steady = marks["__steady"]
    found = {name: marks[name].to_numpy() for name in ("__s_in", "__s_live", "__s_late")}
    return found | {
        "__steady": true(steady),
        "__unsteady": true(pc.invert(steady)),
        "__local": true(marks["__local"]),
    }


def judged(marking: Marking, marks: dict[str, np.ndarray], bound: int) -> dict[str, np.ndarray]:
    """Per bucket (:func:`columns`), the flags :func:`duckflock.live.windows.cut` splits
    the state by at the instant whose bound is ``bound``: ``flags_sql``'s."""

    def after(name: str) -> np.ndarray:
        at = marks[name]
        return np.asarray(at > bound if marking.op is Op.AFTER else at >= bound, bool)

    return {
        "__in": after("__s_in") & marks["__steady"],
        "__live": after("__s_live") | (marks["__unsteady"] & after("__s_late")),
        "__local": marks["__local"],
    }


def flags(
    marking: Marking, marks: pa.Table, bound: int, buckets: pa.ChunkedArray | pa.Array
) -> dict[str, np.ndarray]:
    """Per value of ``buckets`` (a state's bucket column), its bucket's :func:`judged`
    flags (a value of no bucket, NULL: none)."""
    per_bucket = judged(marking, columns(marks), bound)
    looked = coded.look_up(buckets, marks[marking.key])
    if looked is None:
        where = pc.index_in(buckets, value_set=marks[marking.key].combine_chunks())
        found = np.asarray(where.is_valid().to_numpy(zero_copy_only=False), bool)
        looked = where.fill_null(0).to_numpy(zero_copy_only=False), found
    at, found = looked
    return {name: values[at] & found for name, values in per_bucket.items()}


def flagged(marking: Marking, state: pa.Table, marks: pa.Table, bound: int) -> pa.Table:
    """``state`` with its :func:`flags` as columns."""
    for name, values in flags(marking, marks, bound, state[marking.key]).items():
        state = state.append_column(name, pa.array(values))
    return state
