"""What a sliding window (:mod:`duckflock.live.windows`) keeps between refreshes, so that
a refresh after appends asks DuckDB for one constant and reads nothing from the table.

- Each bucket's **marks**: the instants the window's comparison sees for its start, its
  end and its end two days later (epoch microseconds in the comparison's type: a
  TIMESTAMP bucket met by a TIMESTAMPTZ bound is cast to TIMESTAMPTZ through the
  session's time zone, as DuckDB's own comparison does), and whether the zone's offset
  is one throughout it. None of these depends on the instant: DuckDB computes them once
  per bucket (a new bucket's, a rebuilt state's), not per refresh. At an instant, the
  flags :func:`duckflock.live.windows.cut` splits the state by are comparisons of those
  integers with the bound, which DuckDB evaluates (:attr:`Marking.bound`): exactly what
  the flags' SQL (:func:`duckflock.live.instants.flags_sql`) computes.
- The rows of the one bucket the boundary cut, as the predicate kept them at the last
  instant. The bound never goes back (the instants never do: expired buckets are dropped
  on the same grounds), so at a later instant the bucket's rows are those rows and the
  appended ones in its span that the predicate still keeps: ``ts op bound`` in the
  column's type (in local time for a TIMESTAMP in a bucket of one offset, as
  :attr:`Window.local` reads them), a comparison of integers.

Where anything is not proven equal (another bound type, an infinite or overflowing
bucket, a NULL bound, other cut buckets, deletes, appended rows of another schema) the
refresh takes the pinned path and reads the table.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from duckflock.core.cursors import first_row
from duckflock.live.fold import coded
from duckflock.live.fold.arrow import ArrowPlan
from duckflock.live.fold.query import over_arrow
from duckflock.live.fold.slots import Slots
from duckflock.live.fold.states import MAX_CHUNKS
from duckflock.live.instants import NOW, Op, Stamp, bucket_micros, bucket_of, steady_sql
from duckflock.live.plan.plans import Plan

# what a TIMESTAMP's instant depends on besides its value: marks and rows are carried
# only while these stay as they were
_SETTINGS = "current_setting('TimeZone') || ' ' || current_setting('Calendar')"
_MARKS = ("__s_in", "__s_live", "__s_late", "__steady", "__local")
BUCKET = "__duckflock_bucket"  # the new rows' bucket, in pyarrow (see partials)
_COMPARE = {Op.AFTER: pc.greater, Op.FROM: pc.greater_equal}
# the bound's type as DuckDB names it, for the column types it meets without a cast of
# its own (a TIMESTAMP column is cast to TIMESTAMPTZ to meet a TIMESTAMPTZ bound)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BOUNDS = {"TIMESTAMP WITH TIME ZONE": Stamp.TIMESTAMPTZ, "TIMESTAMP": Stamp.TIMESTAMP}


@dataclass(frozen=True)
class Marking:
    """How a window's buckets are marked and flagged (see the module's docstring)."""

    marks: str  # over STATE (its bucket column, ``key``): each distinct bucket's marks
    bound: str  # at NOW: the bound in the comparison's type and in local time (epoch
    # microseconds), and the settings (Bound)
    partials: str  # the new rows' partials per bucket (over DELTA)
    key: str  # the bucket's state column
    name: str  # the window column's name in the table
    op: Op  # AFTER or FROM (the column on the left)
    column_type: Stamp
    shift: int | None = None  # the bound is now() minus this many µs (shift_of), or None


def marking(
    cursor: duckdb.DuckDBPyConnection,
    column: dict[str, Any],
    source: dict[str, Any],
    bucketing: tuple[str, str, str, int],
    op: Op,
    column_type: Stamp,
    plan: Plan,
    step: str | None = None,
) -> Marking | None:
    """The marking of a window over ``column`` (a column node of the parsed query, over
    the table ``source``): ``bucketing`` is (its bound's SQL with NOW in it, the state's
    bucket column, the bucket's interval in SQL, its width in microseconds). None where
    the column is not named plainly (``ts``, or ``t.ts`` with t the table's alias or
    name: not a struct's field) or the bound's type is not one compared here."""
    names = [str(name) for name in column.get("column_names") or []]
    table = str(source.get("alias") or source.get("table_name") or "")
    if not plan.partials or not (
        len(names) == 1 or (len(names) == 2 and names[0].lower() == table.lower())
    ):
        return None
    bound_sql, key, interval, width = bucketing
    try:
        row = first_row(cursor.execute(f"SELECT typeof({bound_sql.replace(NOW, 'now()')})"))
    except duckdb.Error:
        return None
    compared = _BOUNDS.get(str(row[0]).upper()) if row is not None else None
    if compared is None or op not in _COMPARE:
        return None
    if column_type is Stamp.TIMESTAMPTZ and compared is not Stamp.TIMESTAMPTZ:
        return None  # the bound is cast to the column's type: not proven here
    timestamp = column_type is Stamp.TIMESTAMP

    def instant(value: str) -> str:
        return f"epoch_us(TRY_CAST({value} AS {compared}))"

    # the zone's offsets: as flags_sql judges them, whatever type the bound is
    steady = steady_sql(key, interval, width, unknown=True) if timestamp else "true"
    local = steady_sql(key, interval, width) if timestamp else "false"
    marks = (
        f"SELECT {key}, {instant(key)} AS __s_in, {instant(f'try({key} + {interval})')} "
        f"AS __s_live, {instant(f'try({key} + {interval} + INTERVAL 2 DAY)')} AS __s_late, "
        f"{steady} AS __steady, {local} AS __local, isfinite({key}) AS __finite "
        f"FROM (SELECT DISTINCT {key} FROM __duckflock_state WHERE {key} IS NOT NULL)"
    )
    # the column's own type: a TIMESTAMP's local time, as Window.local compares
    own = column_type if compared is column_type else Stamp.TIMESTAMP
    bound = (
        f"SELECT epoch_us(CAST(({bound_sql}) AS {compared})), "
        f"epoch_us(CAST(({bound_sql}) AS {own})), {_SETTINGS}"
    )
    shift = None
    if step is not None and compared is Stamp.TIMESTAMPTZ:
        shift = shift_of(cursor, bound_sql, step)
    return Marking(marks, bound, plan.partials, key, names[-1], op, column_type, shift)


# instants the bound is probed at (shift_of): hourly, at a sub-second offset, over the
# 400 days around today (the session zone's transitions both ways), and every
# ~89 days from 1970 to 2100
_PROBES = (
    "SELECT unnest(generate_series(now() - INTERVAL 200 DAY, now() + INTERVAL 200 DAY, "
    "to_microseconds(3599999987))) AS {now} UNION ALL "
    "SELECT unnest(generate_series(TIMESTAMPTZ '1970-01-01 00:00:00.123457+00', "
    "TIMESTAMPTZ '2100-01-01 00:00:00+00', to_microseconds(7689600000001)))"
)


def shift_of(cursor: duckdb.DuckDBPyConnection, bound_sql: str, step: str) -> int | None:
    """µs d such that the bound (a TIMESTAMPTZ ``now() ± X``, ``step`` X's SQL) is
    ``now()`` minus d at every instant, or None. DuckDB proves it for this bound: X is
    an INTERVAL of no years, months or days (ICU moves an instant by those through the
    calendar; the rest it adds to the instant's microseconds), and the bound's value at
    every probe instant (:data:`_PROBES`) is the instant minus one d. A run then takes
    the bound from its instant without a query."""
    try:
        row = first_row(
            cursor.execute(
                f"SELECT typeof({step}) = 'INTERVAL' AND datepart('year', {step}) = 0 AND "
                f"datepart('month', {step}) = 0 AND datepart('day', {step}) = 0"
            )
        )
        if row is None or row[0] is not True:
            return None
        found = cursor.execute(
            f"SELECT DISTINCT epoch_us({NOW}) - epoch_us(CAST(({bound_sql}) AS TIMESTAMPTZ)) "
            f"FROM ({_PROBES.format(now=NOW)})"
        ).fetchall()
    except duckdb.Error:
        return None
    if len(found) != 1 or not isinstance(found[0][0], int):
        return None
    return int(found[0][0])


@dataclass(frozen=True)
class Carried:
    """What one refresh of a window leaves for the next. Owner: the analysis thread."""

    state: pa.Table | None  # the state the marks cover, the rows describe (None: none)
    marks: pa.Table | None  # per bucket: the bucket column, then _MARKS
    span: tuple[int, int] | None  # the cut bucket's [low, high) in epoch us; (0, 0): none
    rows: pa.Table | None  # its rows the predicate kept at the last instant
    settings: str  # the session's, when marks and rows were taken (Bound.settings)
    marking: Marking  # the window plan the marks are for (a new plan: new marks)
    epoch: int | None = None  # the settings epoch ``settings`` were read at (Bound.epoch)
    slots: Slots | None = None  # the state as arrays, where it has them (fold/slots.py)


def marked(
    cursor: duckdb.DuckDBPyConnection,
    marking: Marking,
    state: pa.Table,
    marks: pa.Table | None,
    fresh: pa.ChunkedArray | None = None,
) -> pa.Table | None:
    """``marks`` with the marks of the state's buckets it lacks, from DuckDB, and without
    those of buckets the state no longer has; None where a bucket's are not plain
    integers (infinity, an overflow: the SQL flags judge it). ``fresh``: the only
    buckets that may lack marks (the new rows', where ``marks`` covered the state before
    them): when all have theirs, ``marks`` as they are (an expired bucket's stay until a
    new bucket's are asked for: never more than one window's worth)."""
    key = marking.key
    if marks is not None and fresh is not None:
        looked = coded.look_up(fresh, marks[key])  # (integers without NULL: in numpy)
        if looked is not None and looked[1].all():
            return marks
        values = marks[key].combine_chunks()
        found = pc.is_in(fresh.drop_null(), value_set=values)
        if pc.all(found, min_count=0).as_py():  # (none new: True)
            return marks
    buckets = pc.unique(state[key].drop_null())
    if marks is not None:
        known = pc.is_in(buckets, value_set=marks[key].combine_chunks())
        buckets = buckets.filter(pc.invert(known))
    if len(buckets) or marks is None:
        new = over_arrow(cursor, marking.marks, pa.table({key: buckets}))
        if new[key].type != state[key].type:
            return None
        complete = pc.and_kleene(new["__finite"], pc.is_valid(new["__s_late"]))
        complete = pc.and_kleene(complete, pc.is_valid(new["__s_in"]))
        complete = pc.and_kleene(complete, pc.is_valid(new["__s_live"]))
        if not pc.all(pc.fill_null(complete, False)).as_py():
            return None
        new = new.select([key, *_MARKS])
        marks = new if marks is None else pa.concat_tables([marks, new])
    assert marks is not None
    # only the state's buckets: expired ones go
    return marks.filter(pc.is_in(marks[key], value_set=state[key].combine_chunks()))


class Bound(NamedTuple):
    """The bound at an instant (:attr:`Marking.bound`), in epoch microseconds."""

    compared: int  # in the comparison's type
    local: int | None  # in the window column's type (a TIMESTAMP's: local time; None:
    # from the cut bucket's marks, see local_of)
    settings: str  # the session's time zone and calendar
    epoch: int | None = None  # the settings epoch read before them (effects.Epoch)


def shifted(
    cursor: duckdb.DuckDBPyConnection,
    marking: Marking,
    instant: datetime,
    carried: Carried,
    epoch: int | None,
) -> Bound | None:
    """The bound at ``instant`` without computing it, where DuckDB proved it ``now()``
    minus a constant (:attr:`Marking.shift`); its local time from the cut bucket's marks
    (:func:`local_of`). The settings the carried marks were taken under hold while the
    settings epoch (``epoch``, read before) is the one they were read at; else they are
    asked again (one constant query): a global ``SET TimeZone`` lands before the notice
    that rebuilds the state, and a refresh in between must not answer in the old zone."""
    if marking.shift is None:
        return None
    settings = carried.settings
    if epoch is None or epoch != carried.epoch:
        row = first_row(cursor.execute(f"SELECT {_SETTINGS}"))
        if row is None or str(row[0]) != settings:
            return None
    at = (instant - _EPOCH) // timedelta(microseconds=1) - marking.shift
    local = at if marking.column_type is Stamp.TIMESTAMPTZ else None
    return Bound(at, local, settings, epoch)


def local_of(
    marking: Marking, marks: pa.Table, span: tuple[int, int], bound: Bound, start: int | None = None
) -> int | None:
    """The bound in the window column's local time (a TIMESTAMP's), where it lies in the
    one steady bucket ``span`` the boundary cuts (windows.split's span): the bucket's
    offset (its local start minus its instant, ``__s_in``: ``start`` where the caller
    has it), one throughout it, added to the bound's instant — what
    ``CAST(bound AS TIMESTAMP)`` gives there."""
    if bound.local is not None:
        return bound.local
    if start is None:
        at = pc.index_in(pa.array([span[0]], pa.int64()), bucket_micros(marks[marking.key]))[0]
        if not at.is_valid:
            return None
        start = marks["__s_in"][at.as_py()].as_py()
    return None if start is None else bound.compared + span[0] - start


def bounds(cursor: duckdb.DuckDBPyConnection, sql: str, epoch: int | None) -> Bound | None:
    """The bound, from ``Marking.bound`` at an instant (``sql``), read at the settings
    epoch ``epoch``; None if NULL."""
    row = first_row(cursor.execute(sql))
    if row is None or not isinstance(row[0], int) or not isinstance(row[1], int):
        return None
    return Bound(row[0], row[1], str(row[2]), epoch)


def carried(
    marking: Marking, kept: Carried, delta: pa.Table | None, span: tuple[int, int], local: int
) -> pa.Table | None:
    """The cut bucket's rows (``span``) at an instant whose bound in the column's local
    time is ``local``: the kept ones and the appended ones (``delta``) the predicate
    keeps. None where they cannot be carried (another span, another schema)."""
    if kept.rows is None or kept.span != span:
        return None
    rows = kept.rows
    if delta is not None and delta.num_rows:
        low, high = span
        new = _within(delta, marking.name, low, high)
        if new is None:
            return None
        if new.num_rows:
            if sorted(new.column_names) != sorted(rows.column_names):
                return None
            new = new.select(rows.column_names).cast(rows.schema)
            rows = pa.concat_tables([rows, new])
    times = column_of(rows, marking.name)
    fast = None if times is None else coded.instants(times)
    if fast is not None:  # in numpy: one comparison, a slice where the rows are in order
        after = fast > local if marking.op is Op.AFTER else fast >= local
        left = coded.rows(rows, after)
    else:
        at = _micros(rows, marking.name)
        if at is None:
            return None
        left = rows.filter(pc.fill_null(_COMPARE[marking.op](at, local), False))
    # one chunk more per run with new rows in the bucket: bounded, as a state's are
    return left.combine_chunks() if left.column(0).num_chunks > MAX_CHUNKS else left


def partials(
    cursor: duckdb.DuckDBPyConnection,
    marking: Marking,
    arrow: ArrowPlan,
    width: int,
    state: pa.Table,
    delta: pa.Table,
) -> pa.Table:
    """The new rows' partials per (key, bucket), as the state's columns: in pyarrow where
    the bucket is proven (:func:`~duckflock.live.instants.bucket_of`) and the shape has
    pyarrow merges (``arrow``, the bucketed ones), else DuckDB's query over them."""
    with contextlib.suppress(pa.ArrowException, TypeError, ValueError):
        bucket = buckets_of(marking, width, state[marking.key].type, delta)
        if bucket is not None:
            rows = delta.append_column(BUCKET, bucket)
            fast = coded.partials(arrow, rows, state.schema)  # integer keys: numpy
            return arrow.partials_of(rows, state.schema) if fast is None else fast
    return over_arrow(cursor, marking.partials, state.slice(0, 0), delta)


def buckets_of(
    marking: Marking, width: int, kind: pa.DataType, delta: pa.Table
) -> pa.ChunkedArray | None:
    """The bucket of each new row (:func:`~duckflock.live.instants.bucket_of`, in the
    state's bucket type ``kind``; None where not proven: the SQL buckets them)."""
    column = column_of(delta, marking.name)
    return None if column is None else bucket_of(column, width, kind)


def column_of(rows: pa.Table, name: str) -> pa.ChunkedArray | None:
    """The window column of ``rows`` (None: not one such TIMESTAMP column)."""
    found = [column for column in rows.column_names if column.lower() == name.lower()]
    if len(found) != 1 or not pa.types.is_timestamp(rows[found[0]].type):
        return None
    return rows[found[0]]


def _micros(rows: pa.Table, name: str) -> pa.ChunkedArray | None:
    """The window column of ``rows`` in epoch microseconds (None: not one such column)."""
    column = column_of(rows, name)
    return None if column is None else bucket_micros(column)


def _within(rows: pa.Table, name: str, low: int, high: int) -> pa.Table | None:
    """The ``rows`` whose window column lies in [low, high) µs (None: no such column)."""
    column = column_of(rows, name)
    if column is None:
        return None
    fast = coded.instants(column)
    if fast is not None:
        inside = (fast >= low) & (fast < high)
        return rows.filter(pa.array(inside)) if inside.any() else rows.slice(0, 0)
    at = bucket_micros(column)
    return rows.filter(pc.fill_null(pc.and_(pc.greater_equal(at, low), pc.less(at, high)), False))


def prior(carried: Carried | None, marking: Marking, settings: str) -> pa.Table | None:
    """The marks the last refresh left, where they hold for ``marking`` now (the same
    window plan, the same time zone and calendar: ``settings``)."""
    if carried is None or carried.marking is not marking or carried.settings != settings:
        return None
    return carried.marks
