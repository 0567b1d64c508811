"""Decimal parameters DuckDB binds to the number they are.

duckdb 1.5.5 binds a ``Decimal`` with a positive exponent as its digits alone:
``Decimal("1E+2")`` (what ``Decimal(100).normalize()`` gives, and what psycopg sends for
it) is stored as 1, ``Decimal("1.5E+3")`` as 15 (duckdb-python issue 566). The same
number with exponent 0 binds right; every door that hands Python values to DuckDB as
parameters passes them through :func:`bindable` (an Arrow column of them is right).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

# parameter types bound as they are, with no Decimal inside (a look at a row's types
# finds most rows need no walk)
PLAIN = frozenset({str, int, float, bool, type(None), bytes, dt.datetime, dt.date})


def exact(value: Decimal) -> Decimal:
    """``value`` with exponent 0 when it had a positive one (the same number)."""
    if value.is_finite() and value.as_tuple().exponent > 0:  # type: ignore[operator]
        return Decimal(int(value))
    return value


def bindable(value: Any) -> Any:
    """``value`` with each Decimal in it (in lists, tuples and dicts too) :func:`exact`."""
    kind = type(value)
    if kind is Decimal:
        return exact(value)
    if kind is list or kind is tuple:
        return kind(bindable(item) for item in value)
    if kind is dict:
        return {key: bindable(item) for key, item in value.items()}
    return value


def bindable_params(params: Any) -> Any:
    """A statement's parameters (a sequence, a dict, or None) made :func:`bindable`;
    the same object when nothing in them needs it."""
    if params is None:
        return None
    values = params.values() if isinstance(params, dict) else params
    if PLAIN.issuperset(map(type, values)):
        return params
    return bindable(params if type(params) in (list, tuple, dict) else list(params))
