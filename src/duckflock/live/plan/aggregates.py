"""The planner's aggregate decisions: each aggregate call of the query checked, turned
into partials of the state (:mod:`duckflock.live.fold.states`) and a final expression
over them, and, where pyarrow can compute its output, how (:class:`Output`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import duckdb

from duckflock.live.fold.arrow import Output, OutputKind
from duckflock.live.fold.averages import divided_in_long_double, long_double_bits
from duckflock.live.fold.states import Aggregate, NotIncremental, Slots, plan_aggregate
from duckflock.live.plan.probes import picks_as_compared
from duckflock.live.plan.trees import Renderer, plain_column

# 128-bit integer types: their sums overflow where DuckDB checks
_WIDE_INTEGERS = ("HUGEINT", "UHUGEINT", "VARINT", "BIGNUM")

# winners by an ordering key, merged by > (<): only where DuckDB's own pick over probe
# pairs of the key's type is >'s (probes.picks_as_compared). DuckDB 1.5.5's
# arg_max(v, INTERVAL '1 month') beats '40 days' (months, days, microseconds in turn,
# where > normalizes) and TIME WITH TIME ZONE picks by local time, > by UTC
_WINNERS = frozenset({"arg_max", "arg_min", "max_by", "min_by"})

# checks that an expression is row-local (raising NotIncremental naming where it stands)
RowLocal = Callable[[dict[str, Any], str], None]


def wide_decimal(kind: str) -> bool:
    """Whether DuckDB type ``kind`` is a DECIMAL wider than 18 digits."""
    found = re.match(r"DECIMAL\((\d+)", kind)
    return found is not None and int(found.group(1)) > 18


def is_wide(kind: str) -> bool:
    """Whether DuckDB type ``kind`` is 128-bit: HUGEINT, UHUGEINT, or a DECIMAL wider
    than 18 digits (their sums overflow where DuckDB checks)."""
    return kind.startswith(_WIDE_INTEGERS) or wide_decimal(kind)


class Aggregates:
    """The aggregates of one query, as they are met: their partials (:attr:`slots`),
    final expressions, names (:attr:`kinds`, for the reason) and pyarrow outputs
    (:attr:`outputs`, by canonical expression)."""

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        renderer: Renderer,
        row_local: RowLocal,
        type_of: Callable[[str], str],
    ) -> None:
        self._cursor = cursor
        self._renderer = renderer
        self._row_local = row_local
        self._type_of = type_of  # the DuckDB type of an expression over the FROM clause
        self.slots = Slots()
        self._finals: dict[str, str] = {}  # canonical aggregate -> final SQL over state
        self.kinds: list[str] = []  # the aggregates used, for the reason
        # for the pyarrow fast path: each aggregate's output in terms of partials
        self.outputs: dict[str, Output] = {}
        self._picks: dict[str, bool] = {}  # ordering type -> picks_as_compared

    def final(self, expr: dict[str, Any], canonical: str) -> str:
        """The final SQL (over the state's partials) of the aggregate call ``expr``,
        whose canonical form is ``canonical``; its partials are allocated once."""
        if canonical in self._finals:
            return self._finals[canonical]
        sql = self._renderer.sql
        name = expr["function_name"].lower()
        shown = "count(*)" if name == "count_star" else f"{name}()"
        if expr.get("export_state"):
            raise NotIncremental(f"{name}() uses EXPORT_STATE")
        children = expr.get("children") or []
        for child in children:
            self._row_local(child, f"the argument of {shown}")
        args = [sql(child) for child in children]
        condition = expr.get("filter")
        if condition is not None:
            self._row_local(condition, f"the FILTER of {shown}")
        orders = (expr.get("order_bys") or {}).get("orders") or []
        order = None
        if len(orders) > 1:
            raise NotIncremental(f"{shown} orders by more than one expression")
        if orders:
            self._row_local(orders[0]["expression"], f"the ORDER BY of {shown}")
            order = (
                sql(orders[0]["expression"]),
                {"ASCENDING": "ASC", "DESCENDING": "DESC"}.get(orders[0]["type"], ""),
                {"NULLS FIRST": "NULLS FIRST", "NULLS LAST": "NULLS LAST"}.get(
                    orders[0].get("null_order", ""), ""
                ),
            )
            order = (order[0], *self._explicit(order[1], order[2]))
        if name in ("sum", "avg", "mean") and args and is_wide(self._type_of(args[0])):
            raise NotIncremental(
                f"{name}() of a 128-bit or decimal value: a full run raises on overflow, "
                "merging partial sums would not"
            )
        if name in _WINNERS and len(args) == 2 and not self._compared(args[1]):
            raise NotIncremental(
                f"{name}() ordered by {self._type_of(args[1])}: DuckDB picks among those "
                "otherwise than > orders them, so winners kept apart would not merge to a "
                "full run's"
            )
        aggregate = Aggregate(
            name=name,
            args=args,
            plain=[plain_column(child) for child in children],
            filter=sql(condition) if condition is not None else None,
            order=order,
            distinct=bool(expr.get("distinct")),
            arg_type=lambda: self._type_of(args[0]),
        )
        final, partial = plan_aggregate(aggregate, self.slots)
        self.kinds.append(
            ("count(*)" if name == "count_star" else f"{name}()")
            + (" DISTINCT" if aggregate.distinct else "")
            + (" FILTER" if condition is not None else "")
        )
        if partial is not None:
            self.outputs[canonical] = Output(OutputKind.PARTIAL, partial)
        elif name == "count" and aggregate.distinct and condition is None:
            # its distinct list's length (the SET partial just added)
            self.outputs[canonical] = Output(OutputKind.LENGTH, len(self.slots.partials) - 1)
        elif name in ("avg", "mean") and condition is None:
            last = len(self.slots.partials) - 1
            if "finalize(" not in final:  # a floating sum: pyarrow divides as DuckDB does
                self.outputs[canonical] = Output(OutputKind.AVG, last - 1, last)
            elif divided_in_long_double(self._type_of(args[0])):
                # an integer's: divided as DuckDB's avg divides, once DuckDB said how
                bits = long_double_bits(self._cursor)
                if bits is not None:
                    self.outputs[canonical] = Output(OutputKind.EXACT_AVG, last - 1, last, bits)
        self._finals[canonical] = final
        return final

    def _compared(self, key: str) -> bool:
        """Whether DuckDB's arg_max/arg_min pick by the SQL ``key``'s type as > and <
        order it (asked once per type: :func:`probes.picks_as_compared`)."""
        kind = self._type_of(key)
        if kind not in self._picks:
            self._picks[kind] = picks_as_compared(self._cursor, kind)
        return self._picks[kind]

    def _explicit(self, direction: str, nulls: str) -> tuple[str, str]:
        """An aggregate's ORDER BY direction and NULLS order with DuckDB's defaults
        (``default_order``, ``default_null_order``, as they stand now) filled in, so that
        every merge of the analysis orders alike (and the row-by-row merges of
        :mod:`duckflock.live.fold.merges` know the order); "" where not known."""
        if direction and nulls:
            return direction, nulls
        row = self._cursor.execute(
            "SELECT current_setting('default_order'), current_setting('default_null_order')"
        ).fetchone()
        # spelt ASCENDING by default and ASC once SET; NULLS_LAST or NULLS LAST
        order, null_order = (str(value).upper().replace(" ", "_") for value in row or ("", ""))
        direction = direction or {"ASCENDING": "ASC", "DESCENDING": "DESC"}.get(order, order)
        if direction not in ("ASC", "DESC"):
            return "", ""
        ascending = direction == "ASC"
        nulls = nulls or {
            "NULLS_LAST": "NULLS LAST",
            "NULLS_FIRST": "NULLS FIRST",
            "NULLS_FIRST_ON_ASC_LAST_ON_DESC": "NULLS FIRST" if ascending else "NULLS LAST",
            "NULLS_LAST_ON_ASC_FIRST_ON_DESC": "NULLS LAST" if ascending else "NULLS FIRST",
        }.get(null_order, "")
        return direction, nulls
