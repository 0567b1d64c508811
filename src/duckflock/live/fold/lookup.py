"""A join's new fact rows joined with a dimension copy in pyarrow, then their partials.

A join's fold (:mod:`duckflock.live.joins`) runs the new rows' partials query — their
join with the copies of the dimension tables, grouped — as one DuckDB query (2 to 3 ms for
10,000 rows, most of a refresh). Where the join is one equality of a fact column and a
dimension column of one dimension table (INNER or LEFT), the copy's keys are unique and
the grouping is a :class:`~duckflock.live.fold.computed.Computed` program, the join is a
lookup: ``index_in`` of each new row's key among the copy's keys gives the dimension row
it joins (NULL joins nothing, as ``=`` does), and the program groups the joined rows.

:mod:`duckflock.live.plan.joining` admits a :class:`Join` only after DuckDB ran the
partials query over probe rows (both sides) and the lookup gave the same table; each
copy is checked for duplicate keys when it is taken (:func:`looked_up`: a duplicate makes
DuckDB's join give a fact row several rows, the lookup one). What the probes do not
cover is the program's per-batch check (NaN, -0.0, non-ASCII case rules): such a batch
raises :class:`~duckflock.live.fold.computed.Refused` and DuckDB's query folds it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from duckflock.live.fold.computed import Computed


@dataclass(frozen=True)
class Join:
    """How a plan's new rows join its dimension (admitted once per plan)."""

    program: Computed  # the partials over the joined rows (``read``, then ``taken``)
    fact_key: str  # the new rows' column of the equality
    read: tuple[str, ...]  # the new rows' columns the joined rows carry (the key first)
    dimension_key: str  # the dimension's
    taken: tuple[str, ...]  # the dimension's columns the joined rows carry
    left: bool  # LEFT JOIN: a row that joins nothing keeps NULLs


@dataclass(frozen=True)
class Lookup:
    """A :class:`Join` over one copy of the dimension rows (unique non-NULL keys)."""

    join: Join
    dimension: pa.Table

    def joined(self, delta: pa.Table) -> pa.Table:
        """The new rows ``delta`` (their :attr:`Join.read` columns), each with its
        dimension row's :attr:`Join.taken` columns (an INNER join drops those that join
        none)."""
        join = self.join
        delta = delta.select(list(join.read))
        keys = self.dimension[join.dimension_key]
        at = pc.index_in(delta[join.fact_key], value_set=keys, skip_nulls=True)
        if not join.left:
            found = pc.is_valid(at)
            delta, at = delta.filter(found), at.filter(found)
        taken = self.dimension.select(list(join.taken)).take(at)
        columns = [*delta.columns, *taken.columns]
        return pa.Table.from_arrays(columns, names=[*delta.column_names, *taken.column_names])

    def partials(self, delta: pa.Table, schema: pa.Schema) -> pa.Table:
        """The new rows' keys and partials in ``schema`` (as
        :meth:`Computed.partials <duckflock.live.fold.computed.Computed.partials>`)."""
        return self.join.program.partials(self.joined(delta), schema)


def looked_up(join: Join | None, dimension: pa.Table) -> Lookup | None:
    """``join`` over the copy ``dimension``; None where a key is there twice (DuckDB's
    join would give a fact row each of its rows)."""
    if join is None:
        return None
    keys = dimension[join.dimension_key]
    distinct = pc.count_distinct(keys, mode="only_valid").as_py()
    if distinct != len(keys) - keys.null_count:
        return None
    return Lookup(join, dimension)
