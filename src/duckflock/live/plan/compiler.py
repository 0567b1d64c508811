"""The compiler of a partials query's nodes into a pyarrow program
(:mod:`duckflock.live.fold.computed`): column references, constants, ``upper``/``lower``,
checked ``+ - *`` and ``%`` of integers, comparisons, NOT, AND/OR, IS [NOT] NULL, and
the aggregates of :data:`~duckflock.live.fold.computed.FUNCTIONS` with a FILTER.
:mod:`duckflock.live.plan.computing` decides where a query is such a program and admits
it by probes; this module only knows the nodes.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from duckflock.live.fold.computed import (
    FUNCTIONS,
    ORDERED,
    Aggregate,
    Expression,
    Refused,
    Value,
)
from duckflock.live.plan.probes import PROBED
from duckflock.live.plan.trees import canonical

_CONSTANTS = {"INTEGER": pa.int32(), "BIGINT": pa.int64(), "VARCHAR": pa.string()}
_CONSTANTS |= {"BOOLEAN": pa.bool_(), "DOUBLE": pa.float64(), "TINYINT": pa.int8()}
_CONSTANTS |= {"SMALLINT": pa.int16()}
_COMPARE = {
    "COMPARE_EQUAL": pc.equal,
    "COMPARE_NOTEQUAL": pc.not_equal,
    "COMPARE_LESSTHAN": pc.less,
    "COMPARE_LESSTHANOREQUALTO": pc.less_equal,
    "COMPARE_GREATERTHAN": pc.greater,
    "COMPARE_GREATERTHANOREQUALTO": pc.greater_equal,
}
_ARITHMETIC = {"+": pc.add_checked, "-": pc.subtract_checked, "*": pc.multiply_checked}
_CASES = {"upper": pc.ascii_upper, "ucase": pc.ascii_upper}
_CASES |= {"lower": pc.ascii_lower, "lcase": pc.ascii_lower}
_DIRECTIONS = ("ASCENDING", "DESCENDING")
_NULLS = ("NULLS FIRST", "NULLS LAST")


class Unknown(Exception):
    """A node this module does not compile."""


class Compiler:
    """The pyarrow program of one partials query's nodes (:func:`Compiler.aggregate`,
    :func:`Compiler.expression`); :class:`Unknown` for a node it does not know."""

    def __init__(self, names: dict[str, str], types: dict[str, str]) -> None:
        self._names = names
        self._types = types
        self.floating: set[str] = set()
        # each expression compiled once: one FILTER (or argument) written by several
        # aggregates is one object, evaluated once per batch (fold/aligned.py)
        self._compiled: dict[str, Expression] = {}

    def aggregate(self, node: dict[str, Any]) -> Aggregate:
        if _sketch(node):  # CAST(approx_count_distinct(x) EXPORT_STATE AS BLOB)
            counted = self.expression(node["child"]["children"][0])
            return Aggregate(function="approx_count_distinct", argument=counted, filter=None)
        name = str(node.get("function_name", "")).lower()
        children = node.get("children") or []
        orders = (node.get("order_bys") or {}).get("orders") or []
        if (
            node.get("class") != "FUNCTION"
            or name not in FUNCTIONS
            or name == "approx_count_distinct"  # only its state, above
            or node.get("distinct")
            or node.get("export_state")
            or len(orders) != (name in ORDERED)
            or len(children) != {"count_star": 0, "arg_max": 2, "arg_min": 2}.get(name, 1)
        ):
            raise Unknown(name)
        filtered = node.get("filter")
        argument = self.expression(children[0]) if children else None
        where = self.expression(filtered) if filtered else None
        if orders:  # first/last(v ORDER BY o): the planner spelt out the order
            (order,) = orders
            direction = order.get("type")
            nulls = str(order.get("null_order", "")).replace("_", " ")
            if direction not in _DIRECTIONS or nulls not in _NULLS:
                raise Unknown(f"{name} ordered {direction} {nulls}")
            return Aggregate(
                function=name,
                argument=argument,
                filter=where,
                by=self.expression(order["expression"]),
                descending=direction == "DESCENDING",
                nulls_first=nulls == "NULLS FIRST",
                order=canonical(order["expression"]),
            )
        return Aggregate(
            function=name,
            argument=argument,
            filter=where,
            by=self.expression(children[1]) if len(children) == 2 else None,
            descending=name == "arg_max",
            order=canonical(children[1]) if len(children) == 2 else "",
        )

    def expression(self, node: dict[str, Any]) -> Expression:
        text = canonical(node)
        if text not in self._compiled:
            self._compiled[text] = self._expression(node)
        return self._compiled[text]

    def _expression(self, node: dict[str, Any]) -> Expression:
        kind = node.get("class")
        if kind == "COLUMN_REF":
            return self._column(node)
        if kind == "CONSTANT":
            value = _constant(node)
            return lambda rows: value
        if kind == "COMPARISON" and node.get("type") in _COMPARE:
            compare = _COMPARE[node["type"]]
            left, right = self.expression(node["left"]), self.expression(node["right"])
            return lambda rows: compare(*_typed(left(rows), right(rows)))
        children = [self.expression(child) for child in node.get("children") or []]
        operator = node.get("type")
        if kind == "OPERATOR" and len(children) == 1:
            (child,) = children
            if operator == "OPERATOR_NOT":
                return lambda rows: pc.invert(child(rows))
            if operator == "OPERATOR_IS_NULL":
                return lambda rows: pc.is_null(child(rows))
            if operator == "OPERATOR_IS_NOT_NULL":
                return lambda rows: pc.is_valid(child(rows))
        if kind == "CONJUNCTION" and children:
            join = pc.and_kleene if operator == "CONJUNCTION_AND" else pc.or_kleene
            if operator not in ("CONJUNCTION_AND", "CONJUNCTION_OR"):
                raise Unknown(operator)

            def joined(rows: pa.Table) -> Value:
                value = children[0](rows)
                for child in children[1:]:
                    value = join(value, child(rows))
                return value

            return joined
        if kind == "FUNCTION" and not node.get("filter") and not node.get("distinct"):
            return self._function(str(node.get("function_name", "")).lower(), children)
        raise Unknown(f"{kind} {operator}")

    def _column(self, node: dict[str, Any]) -> Expression:
        parts = node["column_names"]
        name = self._names.get(str(parts[-1]).lower())
        if name is None or len(parts) > 2:
            raise Unknown(f"column {parts}")
        kind = self._types.get(name.lower(), "")
        if kind in ("FLOAT", "DOUBLE"):
            self.floating.add(name)
        elif kind not in PROBED:
            raise Unknown(f"a column of {kind}")  # no probe values for it
        return lambda rows: rows[name]

    def _function(self, name: str, children: list[Expression]) -> Expression:
        if name in _CASES and len(children) == 1:
            case, (child,) = _CASES[name], children

            def cased(rows: pa.Table) -> Value:
                value = child(rows)
                if pc.all(pc.string_is_ascii(value)).as_py() not in (True, None):
                    raise Refused("a non-ASCII string: DuckDB's case rules")
                return case(value)

            return cased
        if name in _ARITHMETIC and len(children) == 2:
            arithmetic, (left, right) = _ARITHMETIC[name], children
            return lambda rows: arithmetic(*_typed(left(rows), right(rows)))
        if name == "%" and len(children) == 2:
            left, right = children
            return lambda rows: _remainder(*_typed(left(rows), right(rows)))
        raise Unknown(name)


def _sketch(node: dict[str, Any]) -> bool:
    child = node.get("child") or {}
    return (
        node.get("class") == "CAST"
        and (node.get("cast_type") or {}).get("id") == "BLOB"
        and not node.get("try_cast")
        and child.get("class") == "FUNCTION"
        and str(child.get("function_name", "")).lower() == "approx_count_distinct"
        and bool(child.get("export_state"))
        and len(child.get("children") or []) == 1
        and not child.get("filter")
        and not child.get("distinct")
        and not (child.get("order_bys") or {}).get("orders")
    )


def _remainder(left: Value, right: Value) -> Value:
    """Integer ``left % right`` truncated toward zero (the dividend's sign), as C's."""
    if not isinstance(right, pa.Scalar) or not pa.types.is_integer(right.type):
        raise Refused("a remainder by a column")
    if not right.as_py():
        raise Refused("a remainder by zero")
    return pc.subtract_checked(left, pc.multiply_checked(pc.divide_checked(left, right), right))


def _typed(left: Value, right: Value) -> tuple[Value, Value]:
    """A constant operand in its column operand's type (a safe cast; unsafe: refused)."""
    if isinstance(right, pa.Scalar) and not isinstance(left, pa.Scalar):
        right = _cast(right, left.type)
    elif isinstance(left, pa.Scalar) and not isinstance(right, pa.Scalar):
        left = _cast(left, right.type)
    if left.type != right.type:
        raise Refused(f"{left.type} against {right.type}")
    return left, right


# (id of a constant, type) -> (the constant, held: its id is not reused; its cast): a
# scalar's cast costs as much as a comparison of 10,000 values. Bounded: cleared when full
_CASTS: dict[tuple[int, pa.DataType], tuple[pa.Scalar, pa.Scalar]] = {}
_MAX_CASTS = 256


def _cast(value: pa.Scalar, kind: pa.DataType) -> pa.Scalar:
    """``value.cast(kind)``, kept for the next batch."""
    found = _CASTS.get((id(value), kind))
    if found is not None and found[0] is value:
        return found[1]
    cast = value.cast(kind)  # raises where it does not fit: never kept
    if len(_CASTS) >= _MAX_CASTS:
        _CASTS.clear()
    _CASTS[(id(value), kind)] = (value, cast)
    return cast


def _constant(node: dict[str, Any]) -> pa.Scalar:
    value = node["value"]
    kind = str(value["type"]["id"])
    if value.get("is_null") or kind not in _CONSTANTS:
        raise Unknown(f"a constant of {kind}")
    return pa.scalar(value["value"], _CONSTANTS[kind])
