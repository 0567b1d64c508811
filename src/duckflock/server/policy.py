"""Request values checked where they enter: every bound finite, positive and capped.

A query parameter or JSON field that is not a number, is NaN or infinite, negative, or
over its cap is a :class:`RequestError` (400) naming it — never a hang, never a 500.
"""

from __future__ import annotations

import math
from typing import Any

from duckflock.core import checks
from duckflock.errors import RequestError
from duckflock.ingest.keys import check_header_key
from duckflock.server.formats import check_text

MAX_SECONDS = 86_400.0  # one day: the longest interval or limit anything may name
MAX_VERSION = 2**62
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


def positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return value


def bounded_seconds(value: Any, name: str, *, zero_ok: bool = False) -> float:
    """A finite number of seconds in (0, one day] (or [0, …] with ``zero_ok``): the
    library's own check (:func:`duckflock.core.checks.seconds`), every failure a ValueError."""
    try:
        number = checks.seconds(value, name, maximum=MAX_SECONDS, optional=False)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    assert number is not None
    if number == 0 and not zero_ok:
        raise ValueError(f"{name} must be more than 0 seconds, not {value!r}")
    return number


def _request(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ValueError as exc:
        raise RequestError(str(exc)) from None


def flag(raw: str | None, name: str, *, default: bool) -> bool:
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise RequestError(f"query parameter {name}={raw!r} must be true or false")


def idempotency_key(raw: str | None) -> str | None:
    """The ``Idempotency-Key`` header, checked as ``db.insert`` checks a key (400 if not)."""
    key: str | None = _request(check_header_key, raw, "the Idempotency-Key header")
    return key


def _whole(raw: str | None, name: str, low: int, high: int, bounds: str) -> int | None:
    """``?name=``: an integer from ``low`` to ``high`` (``bounds`` says them in words)."""
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise RequestError(f"query parameter {name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise RequestError(f"query parameter {name}={raw!r} must be between {bounds}")
    return value


def min_version(raw: str | None) -> int | None:
    """``?min_version=``: an integer from 1 to 2**62."""
    return _whole(raw, "min_version", 1, MAX_VERSION, "1 and 2**62")


def last_count(raw: str | None, cap: int) -> int | None:
    """``?last=``: how many of the newest versions, an integer from 0 to ``cap``."""
    return _whole(raw, "last", 0, cap, f"0 and {cap}")


def wait_seconds(raw: str | None, default: float, cap: float) -> float:
    """``?timeout=``: finite seconds in [0, cap]."""
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise RequestError(f"query parameter timeout={raw!r} is not a number") from None
    if not math.isfinite(value) or not 0 <= value <= cap:
        raise RequestError(
            f"query parameter timeout={raw!r} must be a finite number of seconds from 0 to {cap:g}"
        )
    return value


def sql_and_params(payload: dict[str, Any]) -> tuple[str, Any]:
    sql = payload.get("sql")
    if not isinstance(sql, str):
        raise RequestError('the body needs "sql": a string')
    params = payload.get("params")
    if params is not None and not isinstance(params, list | dict):
        raise RequestError('"params" must be an array or an object')
    check_text(sql, '"sql"')
    check_text(params, '"params"')
    return sql, params


_ANALYSIS_KEYS = {"sql", "every", "on_change", "min_interval", "params", "timeout"}


def analysis_options(payload: dict[str, Any], *, min_every: float) -> dict[str, Any]:
    """The keyword arguments of ``db.analysis`` from a PUT body, every one checked."""
    unknown = set(payload) - _ANALYSIS_KEYS
    if unknown:
        raise RequestError(
            f"unknown analysis fields {sorted(unknown)}; use {sorted(_ANALYSIS_KEYS)}"
        )
    sql, params = sql_and_params(payload)
    every = payload.get("every")
    if every is not None:
        every = _request(bounded_seconds, every, '"every"')
        if every < min_every:
            raise RequestError(f'"every" must be at least {min_every:g} s, not {every!r}')
    min_interval = payload.get("min_interval", 0.1)
    min_interval = _request(bounded_seconds, min_interval, '"min_interval"', zero_ok=True)
    on_change = payload.get("on_change", False)
    if not isinstance(on_change, bool):
        raise RequestError(f'"on_change" must be true or false, not {on_change!r}')
    timeout = payload.get("timeout")
    if timeout is not None:
        timeout = _request(bounded_seconds, timeout, '"timeout"')
    return {
        "sql": sql,
        "every": every,
        "on_change": on_change,
        "min_interval": min_interval,
        "params": params,
        "timeout": timeout,
    }
