"""Timing and counting arguments, checked where they enter.

Every interval, time limit and wait that reaches a duckflock thread is a finite real
number of seconds inside a stated range, so a typo cannot become a busy loop (``1e-9``),
a schedule that never fires (``nan``) or a wait that outlives the process (``inf``). The
messages say what is accepted.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

EVERY_FLOOR = 0.01  # seconds: the shortest interval an analysis may run at
TIMEOUT_FLOOR = 0.01  # seconds: the shortest time limit an analysis run may have
MAX_SECONDS = 7 * 24 * 3600.0  # a week: the longest interval, limit or wait
MAX_WORKERS = 64  # analysis threads per Database


def seconds(
    name: str,
    value: Any,
    *,
    floor: float = 0.0,
    cap: float = MAX_SECONDS,
    optional: bool = False,
) -> float | None:
    """``value`` as float seconds in ``[floor, cap]``; None only when ``optional``.

    Raises TypeError for a bool, a string or any non-real value, ValueError for NaN,
    infinities and anything outside the range.
    """
    accepted = f"a number of seconds from {floor:g} to {cap:g}" + (" or None" if optional else "")
    if value is None:
        if optional:
            return None
        raise TypeError(f"{name} must be {accepted}, not None")
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be {accepted}, not {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number) or not floor <= number <= cap:
        raise ValueError(f"{name} must be {accepted}, not {value!r}")
    return number


def count(name: str, value: Any, *, low: int = 0, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (a bool is not a count)."""
    accepted = f"an int from {low}" + (f" to {high}" if high is not None else " up")
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be {accepted}, not {type(value).__name__} {value!r}")
    number = int(value)
    if number < low or (high is not None and number > high):
        raise ValueError(f"{name} must be {accepted}, not {value!r}")
    return number
