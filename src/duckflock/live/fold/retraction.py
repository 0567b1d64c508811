"""The plan of a retraction (:mod:`duckflock.live.fold.retention`): the hidden partials a
state keeps to take deletes, and the SQL that subtracts deleted rows from it and
recomputes the groups subtraction cannot settle (min/max, floating sums, keys of
several forms), made once when the analysis is planned."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from duckflock.live.fold.states import Partial, PartialKind, Spec

KEYS = "__duckflock_keys"


# what each partial kind (states.Partial.spec[0]) is to a delete: subtracted, or its
# group recomputed when the deleted rows reached its extreme (bool_and is a min of
# booleans, bool_or a max); other kinds (distinct sets, sketches, winners) rebuild
class Retracts(StrEnum):
    """What a partial is to a delete (its value is pyarrow's merge aggregate's name)."""

    COUNT = "count"  # subtracted
    SUM = "sum"  # subtracted (exact), or its touched groups recomputed (floating)
    MIN = "min"  # its group recomputed when the deleted rows reached it
    MAX = "max"


_RETRACTS = {
    PartialKind.COUNT_ALL: Retracts.COUNT,
    PartialKind.COUNT: Retracts.COUNT,
    PartialKind.SUM: Retracts.SUM,
    PartialKind.MIN: Retracts.MIN,
    PartialKind.MAX: Retracts.MAX,
    PartialKind.BOOL_AND: Retracts.MIN,
    PartialKind.BOOL_OR: Retracts.MAX,
}


def _count_of(sql: str) -> str | None:
    """The count(x) partial beside a sum(x) partial (FILTER kept), from its SQL."""
    return "count" + sql[len("sum") :] if sql.startswith("sum(") else None


def hidden_partials(partials: list[Partial]) -> list[tuple[str, str, Spec]] | None:
    """The partials a state needs beside ``partials`` to take deletes: a count(*), and a
    count(x) for each sum(x) — as (SQL, merge aggregate, pyarrow spec), to add to the
    plan. None: a partial cannot take deletes (the state rebuilds on one anyway)."""
    if any(partial.spec[0] not in _RETRACTS for partial in partials):
        return None
    have = {partial.sql for partial in partials}
    extra: list[tuple[str, str, Spec]] = []
    if "count(*)" not in have:
        extra.append(("count(*)", "sum", (PartialKind.COUNT_ALL, None)))
        have.add("count(*)")
    for partial in partials:
        count = _count_of(partial.sql) if partial.spec[0] is PartialKind.SUM else None
        if count is not None and count not in have:
            extra.append((count, "sum", (PartialKind.COUNT, partial.spec[1])))
            have.add(count)
    return extra


@dataclass(frozen=True)
class Retraction:
    """How to take deleted rows out of a state (see :mod:`duckflock.live.fold.retention`)."""

    subtract: str  # over STATE and DELTA (the deleted rows): new state + __again flag
    subtract_partials: str  # the same, DELTA being the deleted rows' partials already
    recompute: str  # over the source table and KEYS: the partials of those groups
    keys: int  # how many key columns the state has
    recompute_all: str = ""  # recompute's query for every group (no KEYS to join)
    kinds: tuple[Retracts, ...] = ()  # per partial
    counts: tuple[int, ...] = ()  # per sum partial: its count(x) partial (else -1)
    rows: int = 0  # the count(*) partial
    floating: frozenset[int] = frozenset()  # FLOAT/DOUBLE sum partials: recomputed
    forms: bool = False  # a key's equal values differ in form: touched groups recomputed
    # for pyarrow: the source column of each key, and of each partial (None: count(*));
    # None when a key or an argument is more than a column, or the query has a WHERE
    key_columns: tuple[str, ...] | None = None
    sources: tuple[str | None, ...] | None = None
    # the FROM, the SELECT list (keys, then partials) and the GROUP BY of the recompute,
    # when ``sources`` is given (for floating sums kept per segment: fold/segments.py)
    source: str = ""
    select: str = ""
    group: str = ""

    @property
    def exact(self) -> bool:
        """Whether subtraction alone settles every group (no min/max, no float sum, no
        key of several forms)."""
        return (
            not self.floating
            and not self.forms
            and not {Retracts.MIN, Retracts.MAX} & set(self.kinds)
        )


def retraction(
    source_sql: str,
    keys: list[str],
    partials: list[Partial],
    where_sql: str,
    deleted_partials: str,
    state: str,
    keys_relation: str = KEYS,
    deltas: str = "__duckflock_delta",
    floating: frozenset[int] = frozenset(),
    forms: bool = False,
    plain: tuple[tuple[str, ...], tuple[str | None, ...]] | None = None,
) -> Retraction | None:
    """The queries that retract deleted rows, or None where a partial cannot take them
    (those deletes rebuild the state).

    ``keys`` and ``partials`` are the SQL of the group keys and partials over the source
    table (``source_sql``, its FROM clause), ``where_sql`` its `` WHERE …`` (or ""),
    ``deleted_partials`` the query of the partials of the rows in ``delta``. With
    ``forms`` (a key whose equal values differ in form: -0.0 and 0.0, '30 days' and
    '720 hours', 'a' and 'A' under NOCASE) every group deleted rows touch is recomputed:
    it shows the form of its first row, which may be gone. ``plain``: the source
    columns of the keys and of the partials (None for count(*)), when all are plain
    columns and there is no WHERE (the pyarrow path of
    :func:`duckflock.live.fold.retention.retract`).
    """
    kinds: list[tuple[Retracts, str]] = []  # (kind, SQL): a sum finds its count by SQL
    for partial in partials:
        kind = _RETRACTS.get(partial.spec[0])
        if kind is None:
            return None
        kinds.append((kind, partial.sql))
    sqls = [partial.sql for partial in partials]
    if "count(*)" not in sqls:
        return None
    rows = sqls.index("count(*)")
    columns = [f"s.__k{i}" for i in range(len(keys))]
    again: list[str] = []
    for i, (kind, arg) in enumerate(kinds):
        mine, gone = f"s.__p{i}", f"g.__p{i}"
        if kind is Retracts.COUNT:
            columns.append(f"{mine} - coalesce({gone}, 0) AS __p{i}")
        elif kind is Retracts.SUM:
            count = _count_of(arg)
            if count not in sqls:
                return None
            n = sqls.index(count)
            columns.append(
                f"CASE WHEN s.__p{n} - coalesce(g.__p{n}, 0) = 0 THEN NULL "
                f"ELSE {mine} - coalesce({gone}, 0) END AS __p{i}"
            )
            if i in floating:
                # a floating sum less the deleted values is not the sum of the values left
                # (1e16 + 1 - 1e16 is 0, NaN and infinity do not come out at all):
                # recompute the groups deleted rows touched
                again.append(f"({gone} IS NOT NULL)")
        else:  # min / max: recompute the group when its extreme may have gone
            columns.append(f"{mine} AS __p{i}")
            compare = "<=" if kind is Retracts.MIN else ">="
            again.append(f"({gone} IS NOT NULL AND {gone} {compare} {mine})")
    if forms:
        again.append(f"(g.__p{rows} IS NOT NULL)")
    join = " AND ".join(f"s.__k{i} IS NOT DISTINCT FROM g.__k{i}" for i in range(len(keys)))
    flag = " OR ".join(again) if again else "false"
    # a global aggregate always has its one row; a group with no rows left is gone
    alive = f" WHERE s.__p{rows} - coalesce(g.__p{rows}, 0) > 0" if keys else ""
    body = (
        f"SELECT {', '.join(columns)}, coalesce({flag}, true) AS __again "
        f"FROM {state} AS s LEFT JOIN __gone AS g ON {join or 'true'}{alive}"
    )
    subtract = f"WITH __gone AS ({deleted_partials}) {body}"
    subtract_partials = f"WITH __gone AS (SELECT * FROM {deltas}) {body}"
    select = [f"{sql} AS __k{i}" for i, sql in enumerate(keys)]
    select += [f"{sql} AS __p{i}" for i, sql in enumerate(sqls)]
    semi = ""
    if keys:
        on = " AND ".join(f"({sql}) IS NOT DISTINCT FROM __r.__k{i}" for i, sql in enumerate(keys))
        semi = f" SEMI JOIN {keys_relation} AS __r ON {on}"
    group = f" GROUP BY {', '.join(keys)}" if keys else ""
    recompute = f"SELECT {', '.join(select)} FROM {source_sql}{semi}{where_sql}{group}"
    recompute_all = f"SELECT {', '.join(select)} FROM {source_sql}{where_sql}{group}"
    return Retraction(
        subtract=subtract,
        subtract_partials=subtract_partials,
        recompute=recompute,
        recompute_all=recompute_all,
        keys=len(keys),
        kinds=tuple(kind for kind, _ in kinds),
        counts=tuple(
            sqls.index(str(_count_of(sql))) if kind is Retracts.SUM else -1 for kind, sql in kinds
        ),
        rows=rows,
        floating=floating,
        forms=forms,
        key_columns=plain[0] if plain is not None else None,
        sources=plain[1] if plain is not None else None,
        source=source_sql if plain is not None and keys and not where_sql else "",
        select=", ".join(select),
        group=", ".join(keys),
    )
