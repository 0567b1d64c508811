"""Secrets never reach a log line: tokens in URLs, bearer headers, the lake's password.

A query string is read the way the server reads it (each key percent-decoded, as
Starlette does), so ``?access%5Ftoken=…`` is hidden like ``?access_token=…``. The lake's
connection strings go through :func:`duckflock.lake.redact`. :func:`install` puts the
filter on every handler that writes log lines (uvicorn's access and error logs, the
root logger's, the last-resort one), so a record is cleaned whatever logger it came
from; tracebacks are cleaned too.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

from ..lake import redact as redact_lake

HIDDEN = "<hidden>"
TOKEN_KEYS = frozenset({"access_token"})  # query keys that carry a token (see auth.py)
_QUERY = re.compile(r"\?([^\s\"'#]*)")
_BEARER = re.compile(r"(\bbearer\s+)[^\s\"',]+", re.IGNORECASE)


def _query(match: re.Match[str]) -> str:
    parts = []
    for part in match.group(1).split("&"):
        key, equals, _ = part.partition("=")
        if equals and unquote_plus(key).strip().lower() in TOKEN_KEYS:
            part = f"{key}={HIDDEN}"
        parts.append(part)
    return "?" + "&".join(parts)


def redact(text: str) -> str:
    """``text`` without tokens (query strings, bearer headers) or lake passwords."""
    return redact_lake(_BEARER.sub(rf"\1{HIDDEN}", _QUERY.sub(_query, text)))


def _clean(value: object) -> object:
    """A string cleaned; another object (an exception, a URL) replaced by its cleaned
    text only when that text held a secret (``%d`` arguments keep their numbers)."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, int | float):
        return value
    text = str(value)
    cleaned = redact(text)
    return value if cleaned == text else cleaned


class RedactingFilter(logging.Filter):
    """Cleans each record's message, its arguments (kept apart: uvicorn's access
    formatter reads them one by one) and its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _clean(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(map(_clean, record.args))
        elif isinstance(record.args, dict):
            record.args = {k: _clean(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install() -> RedactingFilter:
    """Put one filter on every handler configured now (once each)."""
    found = RedactingFilter()
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    handlers = {h for lg in loggers if isinstance(lg, logging.Logger) for h in lg.handlers}
    if logging.lastResort is not None:
        handlers.add(logging.lastResort)
    for handler in handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(found)
    return found
