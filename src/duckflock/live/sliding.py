"""A sliding window's refresh after appends over its dense arrays (fold/slots.py).

The carried refresh (:meth:`duckflock.live.pinned.Pinned._carry`, marks.py) folds the
new rows into the bucketed state, flags its buckets at the instant, splits it and
combines the buckets inside the window with the cut bucket's rows. Here the state is
:class:`~duckflock.live.fold.slots.Slots` as well: the new rows' partials are added to
the slots they land in, the flags and the split are per bucket (~65), and the result
sums the slots inside the window — the same values, bit for bit, in the same order of
additions (fold/slots.py). Anything else (no arrays for the shape, a new key, NaN, the
instant in another cut bucket, a settings change) declines before anything is changed,
and the table path runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb
import numpy as np
import pyarrow as pa

from duckflock.live import bucketflags, marks, windows
from duckflock.live.fold import coded, slots
from duckflock.live.instants import ORIGIN, bucket_numbers
from duckflock.live.marks import Carried
from duckflock.live.steps import combined
from duckflock.live.windows import Window


@dataclass(frozen=True)
class _Marks:
    """A marks table (marks.py) in numpy, by bucket start: kept with the arrays while
    the marks are the same table (a new bucket's marks: another)."""

    table: pa.Table
    starts: np.ndarray  # the buckets' starts (µs), ascending (at least one)
    order: np.ndarray  # each one's row in the table
    columns: dict[str, np.ndarray]  # bucketflags.columns

    def find(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per bucket start: its row in the table, and whether it has one."""
        at = np.minimum(np.searchsorted(self.starts, starts), len(self.starts) - 1)
        return self.order[at], self.starts[at] == starts


def _view(arrays: slots.Slots, table: pa.Table, key: str) -> _Marks | None:
    kept = arrays.marks
    if isinstance(kept, _Marks) and kept.table is table:
        return kept  # (the arrays' owner's: this module keeps only _Marks there)
    starts = coded.instants(table[key])
    if starts is None or not len(starts):
        return None  # (no marks: the table path asks for them)
    order = np.argsort(starts, kind="stable")
    view = _Marks(table, starts[order], order, bucketflags.columns(table))
    arrays.marks = view
    return view


def _arrays(window: Window, carried: Carried, state: pa.Table) -> slots.Slots | None:
    """The arrays of ``state``: the carried ones where they describe it, else built."""
    found = carried.slots
    if found is not None and found.state is state:
        return found
    if window.buckets is None:
        return None
    return slots.build(window.buckets, state, window.width, ORIGIN % window.width)


def refreshed(
    cursor: duckdb.DuckDBPyConnection,
    window: Window,
    carried: Carried,
    state: pa.Table,
    delta: pa.Table | None,
    instant: datetime,
    epoch: int | None,
) -> tuple[pa.Table, pa.Table, Carried] | None:
    """(the new state, the result, what it leaves) of the carried refresh at ``instant``
    with the new rows ``delta``, over the arrays; None where it declines (unchanged).
    ``epoch``: the settings epoch, read before the settings (:func:`marks.shifted`)."""
    marking = window.marking
    arrays = _arrays(window, carried, state)
    if marking is None or arrays is None or carried.rows is None or carried.marks is None:
        return None
    bound = marks.shifted(cursor, marking, instant, carried, epoch) or marks.bounds(
        cursor, windows.at(marking.bound, instant), epoch
    )
    if bound is None or bound.settings != carried.settings or carried.marking is not marking:
        return None
    kind = state.schema.field(window.keys).type
    found, fresh = None, np.zeros(0, np.int64)
    if delta is not None and delta.num_rows:
        # each row's bucket as instants.bucket_of gives it (µs timestamps, no NULL)
        column = marks.column_of(delta, marking.name)
        stamps = None if column is None or kind.unit != "us" else coded.instants(column)
        numbers = None if stamps is None else bucket_numbers(stamps, window.width)
        if numbers is None:  # (NaN and -0.0 in what is summed: slots.added declines)
            return None
        found = slots.added(arrays, delta, numbers)
        if found is None:
            return None
        fresh = slots.starts(arrays, slots.used(arrays, found, new=True))
    numbers = slots.used(arrays, found)
    starts = slots.starts(arrays, numbers)
    view = _view(arrays, carried.marks, marking.key)
    if view is None:
        return None
    if not view.find(fresh)[1].all():  # a new bucket: its marks from DuckDB
        column = pa.array(starts, pa.int64()).view(kind)
        fresh_column = pa.array(fresh, pa.int64()).view(kind)
        known = marks.marked(
            cursor, marking, pa.table({marking.key: column}), view.table, fresh_column
        )
        view = None if known is None else _view(arrays, known, marking.key)
        if view is None:
            return None
    at, has = view.find(starts)
    flags = {
        name: values[at] & has
        for name, values in bucketflags.judged(marking, view.columns, bound.compared).items()
    }
    live, whole = flags["__live"], flags["__in"]
    span = windows.cutting(window, starts, live, whole, flags["__local"])[2]
    if span is None:
        return None
    rows = None
    if span == (0, 0):
        rows = carried.rows.slice(0, 0)
    else:
        row, has = view.find(np.array([span[0]]))
        start = int(view.columns["__s_in"][row[0]]) if has[0] else None
        local = None if start is None else marks.local_of(marking, view.table, span, bound, start)
        if local is not None:
            rows = marks.carried(marking, carried, delta, span, local)
    if rows is None:
        return None
    # from here on the arrays change: they describe no table until the end
    if found is not None:
        slots.store(arrays, found)
    arrays.state = None
    if not live.all():
        slots.clear(arrays, numbers[~live])
    kept = slots.table(arrays)
    inside = numbers[whole]
    plan = window.combine
    assert plan.arrow is not None  # (window.buckets is its)
    schema = state.schema.remove(window.keys)
    merged = slots.combined(arrays, inside, rows, schema)  # (NaN: None, as added)
    if merged is None:
        table = combined(cursor, plan, slots.table(arrays, inside, bucket=False), rows)
    else:
        table = plan.arrow.result(merged)
    arrays.state = kept
    left = Carried(kept, view.table, span, rows, bound.settings, marking, bound.epoch, arrays)
    return kept, table, left


def leave(
    window: Window,
    parts: windows.Split,
    rows: pa.Table,
    flagged: tuple[pa.Table, marks.Bound] | None,
    old: Carried | None,
) -> Carried | None:
    """What a refresh that read the cut bucket leaves for the next (marks.py): its rows
    only where its buckets were flagged from their marks (``flagged``: those marks and
    the bound; not after a delete, nor where DuckDB had to fold: NaN, a shape without
    pyarrow merges — the next run would only find that again); the marks it had, in any
    case. No arrays: the next carried refresh builds them from the state."""
    marking = window.marking
    if marking is None:
        return None
    if flagged is None or parts.span is None:
        if old is None or old.marking is not marking:
            return None
        # marks of an older state: the buckets folded in since may lack theirs
        return Carried(None, old.marks, None, None, old.settings, marking, old.epoch)
    known, bound = flagged
    return Carried(parts.kept, known, parts.span, rows, bound.settings, marking, bound.epoch)
