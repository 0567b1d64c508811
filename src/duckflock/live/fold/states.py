"""The catalogue of mergeable aggregates: each one's partial state and how states merge.

An incremental analysis keeps, per group, *partials* (``__p0…``): aggregates computed
over some rows that can be merged with the partials of other rows into what the
aggregate over all the rows would be. Each aggregate the query uses becomes one or more
partials, each with

- ``sql``: the partial over source rows (the whole table, or the newly appended rows);
- ``merge``: an aggregate over the union of the kept state's row and the new rows'
  row of a group (``__d`` is 0 on the state's, 1 on the new rows'), giving the merged
  partial;

and a ``final`` expression over the merged partials: the aggregate's value.

Why each one merges exactly (every claim checked against DuckDB 1.5.5 by experiment):

- ``count``/``sum``/``min``/``max``/``avg``/``bool_and``/``bool_or``: associative. Sums
  keep DuckDB's own types (HUGEINT for integers, DECIMAL(38, s) for decimals: exact);
  ``avg`` of an integer or DECIMAL is finalised from that exact sum and the count by
  DuckDB's own avg (:mod:`duckflock.live.fold.averages`), of a FLOAT/DOUBLE as the double sum
  over the count, as DuckDB's does.
- ``FILTER (WHERE c)``: the filter applies to the source rows, so to each partial.
- ``arg_max(v, o)``/``arg_min``: DuckDB skips rows whose ``v`` or ``o`` is NULL and, on
  equal ``o``, keeps the row it saw first (a single-threaded scan sees rows in insertion
  order; a parallel scan of a large table returns any of the tied rows). The state keeps
  the winning pair; on a tie the kept state (older rows) wins, as in a scan.
- ``first(v ORDER BY o)``/``last``: the state keeps the winner's value and ordering key
  and whether the group had rows; the merge orders the two candidates the same way.
- ``count(DISTINCT x)``: the state keeps the group's distinct values as a list (NULLs
  left out). Merging the lists with ``list_distinct`` counts -0.0 as 0.0 like DISTINCT
  does, but keeps every NaN, where DISTINCT counts one: NaNs are folded into one.
- ``approx_count_distinct(x)``: its HyperLogLog state is exported (``EXPORT_STATE``,
  kept as a BLOB) and merged with ``combine``: the union of two sketches is the sketch of
  the union, and ``finalize`` gives what a full run gives. The BLOB is DuckDB's memory
  image of the state: it is only valid in this process, which is where the state lives.

Other aggregates (median, quantiles, string_agg, list, unordered first…) have no exact
merge here: such a query runs in full, and its reason names the aggregate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from duckflock.live.fold.averages import Inexact, final_sql

# chunks past which a kept state (and its outputs) is made one chunk again: each fold
# that splices touched groups into it adds chunks (positions.py, touch.py, merges.py)
MAX_CHUNKS = 64


class PartialKind(StrEnum):
    """What a partial holds. Where it is one, the value is the name of the SQL and
    pyarrow aggregate that merges it (count_all and count merge by sum)."""

    COUNT_ALL = "count_all"  # count(*)
    COUNT = "count"
    SUM = "sum"
    MIN = "min"
    MAX = "max"
    BOOL_AND = "bool_and"
    BOOL_OR = "bool_or"
    SET = "set"  # a group's distinct values as a list (count(DISTINCT …))
    PICK = "pick"  # a winner's value (arg_max/arg_min, ordered first/last)
    KEY = "key"  # the winner's ordering key
    SEEN = "seen"  # how many rows a group had (ordered first/last)
    SKETCH = "sketch"  # approx_count_distinct's exported HyperLogLog state


# what arrowfold can merge
ARROW_KINDS = {
    PartialKind.COUNT_ALL,
    PartialKind.COUNT,
    PartialKind.SUM,
    PartialKind.MIN,
    PartialKind.MAX,
}

# a partial's kind and, for the pyarrow path, its source column (None: count(*); False:
# not a plain column, or not a kind the pyarrow path merges)
Spec = tuple[PartialKind, str | bool | None]


@dataclass(frozen=True)
class Pick:
    """How a winner's partial (PICK or KEY) merges row by row, as its ``merge`` SQL
    does: the candidate whose ordering key (partial ``key``) comes first in the order
    wins, the kept state's (older rows) on a tie. ``seen``: the partial counting a
    group's rows (ordered first/last: a candidate exists where it is > 0); -1 for
    arg_max/arg_min, whose candidate exists where its key is not NULL. ``descending``:
    the greater key comes first; ``nulls_first``: a NULL key comes before every value."""

    key: int
    seen: int = -1
    descending: bool = True
    nulls_first: bool = False


@dataclass(frozen=True)
class Partial:
    sql: str  # over source rows
    merge: str  # over the union of the state's and the new rows' partials
    spec: Spec
    pick: Pick | None = None  # PICK/KEY: the row-by-row form of ``merge``


@dataclass
class Aggregate:
    """One aggregate call of the query, as the planner found it."""

    name: str  # lower-case function name (count_star for count(*))
    args: list[str]  # SQL of each argument
    plain: list[str | bool]  # each argument's plain column name, or False
    filter: str | None = None  # SQL of the FILTER condition
    order: tuple[str, str, str] | None = None  # (SQL, ASC/DESC, NULLS …) of ORDER BY
    distinct: bool = False
    arg_type: Callable[[], str] = field(default=lambda: "INTEGER")  # of args[0]


class NotIncremental(Exception):
    """The query needs a full re-run (here: an aggregate has no exact merge); the
    message says why."""


class Slots:
    """Allocates partial columns (``__p{i}``) in the order they are added."""

    def __init__(self) -> None:
        self.partials: list[Partial] = []
        self.sets: list[str] = []  # partials holding distinct-value lists

    def add(
        self, sql: str, merge: Callable[[str], str], spec: Spec, pick: Pick | None = None
    ) -> str:
        name = f"__p{len(self.partials)}"
        self.partials.append(Partial(sql, merge(name), spec, pick))
        return name


SUPPORTED = {
    "count_star",
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "mean",
    "bool_and",
    "bool_or",
    "arg_max",
    "arg_min",
    "max_by",
    "min_by",
    "first",
    "last",
    "approx_count_distinct",
}


def _filtered(sql: str, condition: str | None) -> str:
    return sql if condition is None else f"{sql} FILTER (WHERE {condition})"


def plan_aggregate(agg: Aggregate, slots: Slots) -> tuple[str, int | None]:
    """Add ``agg``'s partials to ``slots``; its final SQL over the merged state, and (for
    the pyarrow path) the index of the one partial that is its value, if any."""
    name = agg.name
    if name not in SUPPORTED:
        raise NotIncremental(f"{name}() cannot be merged from partial results")
    if agg.distinct and name not in ("count", "min", "max", "bool_and", "bool_or"):
        raise NotIncremental(f"{name}(DISTINCT …) cannot be merged from partial results")
    if agg.order is not None and name not in ("first", "last"):
        raise NotIncremental(f"{name}() has an ORDER BY")
    where = agg.filter
    arrow_ok = where is None
    expected = {"count_star": 0, "arg_max": 2, "arg_min": 2, "max_by": 2, "min_by": 2}
    if len(agg.args) != expected.get(name, 1):
        raise NotIncremental(f"{name}() takes {len(agg.args)} arguments")

    def spec(kind: PartialKind, column: str | bool | None) -> Spec:
        return (kind, column) if arrow_ok and kind in ARROW_KINDS else (kind, False)

    if name == "count_star":
        out = slots.add(
            _filtered("count(*)", where), lambda p: f"sum({p})", spec(PartialKind.COUNT_ALL, None)
        )
        return out, len(slots.partials) - 1
    arg = agg.args[0]
    if name == "count" and agg.distinct:
        kind = agg.arg_type()
        floating = kind in ("FLOAT", "DOUBLE")
        if not floating and any(word in kind for word in ("FLOAT", "DOUBLE")):
            raise NotIncremental(f"count(DISTINCT …) of {kind}: NaN inside it cannot be merged")
        if "ENUM(" in kind:
            # its state is a list of ENUM: DuckDB 1.5.5 exports that as a list of Arrow
            # dictionaries, and scanning one back whose list is empty or NULL fails an
            # internal assertion that invalidates the whole database
            raise NotIncremental(f"count(DISTINCT …) of {kind}: its list state cannot be scanned")
        if "INTERVAL" in kind:  # list_distinct tells '1 day' from '24 hours'; DISTINCT not
            raise NotIncremental(f"count(DISTINCT …) of {kind}: its equal forms cannot be merged")

        def union(p: str) -> str:
            merged = f"list_distinct(flatten(list({p})))"
            if not floating:
                return merged
            # list_distinct keeps every NaN; DuckDB's DISTINCT counts them as one value
            return (
                f"CASE WHEN len(list_filter({merged}, __u -> isnan(__u))) > 0 THEN "
                f"list_concat(list_filter({merged}, __u -> NOT isnan(__u)), "
                f"[CAST('NaN' AS {kind})]) ELSE {merged} END"
            )

        values = slots.add(
            _filtered(
                f"list(DISTINCT {arg})",
                f"({arg}) IS NOT NULL" + (f" AND ({where})" if where else ""),
            ),
            union,
            (PartialKind.SET, agg.plain[0] if arrow_ok else False),  # arrowpath admits
        )
        slots.sets.append(values)
        return f"coalesce(len({values}), 0)", None
    if name in ("count", "sum", "min", "max", "bool_and", "bool_or"):
        # DISTINCT changes nothing for min, max, bool_and and bool_or
        merge = "sum" if name == "count" else name
        out = slots.add(
            _filtered(f"{name}({arg})", where),
            lambda p: f"{merge}({p})",
            spec(PartialKind(name), agg.plain[0]),
        )
        return out, len(slots.partials) - 1
    if name in ("avg", "mean"):
        total = slots.add(
            _filtered(f"sum({arg})", where),
            lambda p: f"sum({p})",
            spec(PartialKind.SUM, agg.plain[0]),
        )
        count = slots.add(
            _filtered(f"count({arg})", where),
            lambda p: f"sum({p})",
            spec(PartialKind.COUNT, agg.plain[0]),
        )
        try:
            exact = final_sql(total, count, agg.arg_type())
        except Inexact as why:
            raise NotIncremental(str(why)) from why
        if exact is not None:  # an exact sum: finalised by DuckDB's own avg
            return f"({exact})", None
        return f"({total} / NULLIF({count}, 0))", None
    if name in ("arg_max", "arg_min", "max_by", "min_by"):
        return _arg_extreme(agg, slots), None
    if name in ("first", "last"):
        return _ordered_pick(agg, slots), None
    assert name == "approx_count_distinct"
    # an empty sketch of the right type, as a constant (an aggregate here would turn
    # the outputs query into an aggregate): combine() needs a state first, BLOB second
    empty = f"(SELECT approx_count_distinct(CAST(NULL AS {agg.arg_type()})) EXPORT_STATE)"
    sketch = slots.add(
        # EXPORT_STATE goes after the FILTER (before it, DuckDB's parser refuses it)
        f"CAST({_filtered(f'approx_count_distinct({arg})', where)} EXPORT_STATE AS BLOB)",
        lambda p: (
            f"CAST(combine(combine({empty}, first({p}) FILTER (WHERE __d = 0)), "
            f"first({p}) FILTER (WHERE __d = 1)) AS BLOB)"
        ),
        (PartialKind.SKETCH, False),
    )
    return f"finalize(combine({empty}, {sketch}))", None


def _arg_extreme(agg: Aggregate, slots: Slots) -> str:
    """arg_max/arg_min: the winning value and its ordering key; older rows win ties.

    The merge compares the two candidates with ``>``/``<``, which orders NaN above
    every number and equal to itself, as DuckDB's own arg_max does (a struct comparison
    did not: NaN ties went to the newer row). Ties between -0.0 and 0.0 are not pinned:
    which of the two a full run keeps was not found to follow the scan order."""
    value, key = agg.args
    biggest = agg.name in ("arg_max", "max_by")
    pick, extreme, beats = ("arg_max", "max", ">") if biggest else ("arg_min", "min", "<")
    both = f"({value}) IS NOT NULL AND ({key}) IS NOT NULL"
    where = both + (f" AND ({agg.filter})" if agg.filter else "")
    first = len(slots.partials)
    value_slot, key_slot = f"__p{first}", f"__p{first + 1}"

    def merge(slot: str) -> str:
        old, new = (f"any_value({slot}) FILTER (WHERE __d = {d})" for d in (0, 1))
        old_key, new_key = (f"any_value({key_slot}) FILTER (WHERE __d = {d})" for d in (0, 1))
        return (
            f"CASE WHEN {new_key} IS NULL THEN {old} WHEN {old_key} IS NULL THEN {new} "
            f"WHEN {new_key} {beats} {old_key} THEN {new} ELSE {old} END"
        )

    rule = Pick(first + 1, descending=biggest)
    slots.add(_filtered(f"{pick}({value}, {key})", where), merge, (PartialKind.PICK, False), rule)
    slots.add(_filtered(f"{extreme}({key})", where), merge, (PartialKind.KEY, False), rule)
    return value_slot


def _ordered_pick(agg: Aggregate, slots: Slots) -> str:
    """first/last(v ORDER BY o): the winner's value, its key, and whether rows were seen."""
    if agg.order is None:
        raise NotIncremental(f"{agg.name}() without ORDER BY depends on the scan order")
    value = agg.args[0]
    key, direction, nulls = agg.order
    order = f"{key} {direction} {nulls}".strip()
    first = len(slots.partials)
    key_slot, seen_slot = f"__p{first + 1}", f"__p{first + 2}"
    merge_order = f"{key_slot} {direction} {nulls}".strip()
    seen = f"{seen_slot} > 0"
    # on a tie the state's candidate (older rows) wins, for last as for first: DuckDB's
    # last(v ORDER BY o) returns the first row it saw among those tied for last
    tie = "__d" if agg.name == "first" else "__d DESC"
    # the row-by-row rule, where the planner made the order explicit (aggregates.py):
    # last's winner is first's under the reversed order
    rule = None
    if direction and nulls:
        descending = (direction == "DESC") != (agg.name == "last")
        nulls_first = (nulls == "NULLS FIRST") != (agg.name == "last")
        rule = Pick(first + 1, first + 2, descending, nulls_first)
    winner = slots.add(
        _filtered(f"{agg.name}({value} ORDER BY {order})", agg.filter),
        lambda p: f"{agg.name}({p} ORDER BY {merge_order}, {tie}) FILTER (WHERE {seen})",
        (PartialKind.PICK, False),
        rule,
    )
    slots.add(
        _filtered(f"{agg.name}({key} ORDER BY {order})", agg.filter),
        lambda p: f"{agg.name}({p} ORDER BY {merge_order}, {tie}) FILTER (WHERE {seen})",
        (PartialKind.KEY, False),
        rule,
    )
    slots.add(_filtered("count(*)", agg.filter), lambda p: f"sum({p})", (PartialKind.SEEN, False))
    return winner
