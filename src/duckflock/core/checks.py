"""Checks for the arguments that bound waits: finite, in range, of the right type.

A wait of ``nan`` seconds compares false with everything and so slips through a plain
``timeout < 0`` check; ``inf`` or ``1e300`` overflows the lock primitives. Every
timeout, interval, count and flag enters the library through these functions.
"""

from __future__ import annotations

import math
from numbers import Integral

MAX_WAIT = 86_400.0  # one day: longer waits are spelled ``None`` (no limit)


def seconds(
    value: object,
    name: str,
    *,
    minimum: float = 0.0,
    maximum: float = MAX_WAIT,
    optional: bool = True,
) -> float | None:
    """``value`` as seconds, or TypeError/ValueError saying what is accepted."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        accepted = _accepted(minimum, maximum, optional)
        raise TypeError(f"{name} must be {accepted}, not {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number) or not minimum <= number <= maximum:
        raise ValueError(f"{name} must be {_accepted(minimum, maximum, optional)}, not {value!r}")
    return number


def _accepted(minimum: float, maximum: float, optional: bool) -> str:
    """What :func:`seconds` accepts, in words (built only for its errors: every insert
    checks its timeout)."""
    return f"a number of seconds from {minimum:g} to {maximum:g}" + (
        " (or None for no limit)" if optional else ""
    )


def flag(value: object, name: str) -> bool:
    """``value`` if it is a bool; TypeError otherwise (``wait="yes"`` is not a flag)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {type(value).__name__} {value!r}")
    return value


def count(value: object, name: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    """``value`` as an int in range (a bool is not a count; numpy ints are), or
    TypeError/ValueError saying what is accepted."""
    accepted = f"an int from {minimum}" + (f" to {maximum}" if maximum is not None else " up")
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be {accepted}, not {type(value).__name__} {value!r}")
    number = int(value)
    if number < minimum or (maximum is not None and number > maximum):
        raise ValueError(f"{name} must be {accepted}, not {value!r}")
    return number


def text(value: str, name: str) -> str:
    """``value`` if it is valid text: a lone surrogate (half of a UTF-16 pair, which
    no UTF-8 can hold) is refused with a ValueError naming where it is."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{name} holds a lone surrogate ({value[exc.start]!r} at index {exc.start}): "
            "it is not valid text"
        ) from None
    return value


def texts(value: object, name: str, depth: int = 0) -> None:
    """Every string inside ``value`` (parameters: lists, tuples and dicts of them) is
    valid text; ValueError otherwise."""
    if isinstance(value, str):
        text(value, name)
    elif depth < 8 and isinstance(value, list | tuple):
        for i, item in enumerate(value):
            texts(item, f"{name}[{i}]", depth + 1)
    elif depth < 8 and isinstance(value, dict):
        for key, item in value.items():
            texts(key, f"{name} key", depth + 1)
            texts(item, f"{name}[{key!r}]", depth + 1)
