"""Secrets never reach a log line: tokens in URLs, bearer headers, the lake's password.

Two rules. By key: a query-string part is percent-decoded (as Starlette reads it) and
its key compared by its letters alone, so ``?access%5Ftoken=…``, ``?access+token=…``,
``?access_token[]=…``, ``?;access_token=…`` and ``?access_token%3D…`` are hidden like
``?access_token=…`` (an unknown token, perhaps a real one mistyped). By value: every
token the server knows (:func:`remember`, given the configured ones at start) is hidden
wherever it appears in a line, as itself or percent-encoded, whatever key or spelling
carried it. The lake's connection strings go through :func:`duckflock.lake.connection.redact`.
:func:`install` puts the filter on every handler that writes log lines (uvicorn's
access and error logs, the root logger's, the last-resort one), so a record is cleaned
whatever logger it came from; tracebacks are cleaned too.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import unquote, unquote_plus

from duckflock.lake.connection import redact as redact_lake

HIDDEN = "<hidden>"
TOKEN_KEYS = frozenset({"access_token"})  # query keys that carry a token (see auth.py)
_QUERY = re.compile(r"\?([^\s\"'#]*)")
_SEPARATOR = re.compile(r"([&;])")
_BEARER = re.compile(r"(\bbearer\s+)[^\s\"',]+", re.IGNORECASE)
_WORD = re.compile(r"[^\s\"']+")  # a word of a log line: a URL, a header's value
_PIECE = re.compile(r"[^?&;=#,/]+")  # a piece of a word: a key, a value, a path segment


def _letters(key: str) -> str:
    return "".join(c for c in key.lower() if c.isalpha())


_TOKEN_LETTERS = frozenset(map(_letters, TOKEN_KEYS))


def _query(match: re.Match[str]) -> str:
    parts = _SEPARATOR.split(match.group(1))
    for i, part in enumerate(parts):
        key, equals, _ = unquote_plus(part).partition("=")
        if equals and _letters(key) in _TOKEN_LETTERS:
            raw_key, raw_equals, _ = part.partition("=")
            parts[i] = f"{raw_key}={HIDDEN}" if raw_equals else HIDDEN
    return "?" + "".join(parts)


class _Known:
    """The tokens this process serves with: hidden wherever they appear."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _secrets, _exact
        self._secrets: frozenset[str] = frozenset()
        self._exact: re.Pattern[str] | None = None

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            self._secrets = self._secrets | {s for s in secrets if s}
            if self._secrets:
                longest_first = sorted(self._secrets, key=len, reverse=True)
                self._exact = re.compile("|".join(map(re.escape, longest_first)))

    def _held(self, text: str) -> bool:
        return any(s in text for s in self._secrets)

    def _in_piece(self, match: re.Match[str]) -> str:
        piece = match.group(0)
        return HIDDEN if self._decoded_holds(piece) else piece

    def _decoded_holds(self, text: str) -> bool:
        return self._held(unquote(text)) or self._held(unquote_plus(text))

    def _in_word(self, match: re.Match[str]) -> str:
        word = match.group(0)
        if "%" not in word and "+" not in word:
            return word  # no other spelling: the exact match has run
        word = _PIECE.sub(self._in_piece, word)
        return HIDDEN if self._decoded_holds(word) else word  # split across pieces

    def hide(self, text: str) -> str:
        if self._exact is None:
            return text
        return _WORD.sub(self._in_word, self._exact.sub(HIDDEN, text))


_known = _Known()


def remember(tokens: Iterable[str]) -> None:
    """Hide each of ``tokens`` in every line this process logs from now on."""
    _known.add(tokens)


def redact(text: str) -> str:
    """``text`` without tokens (query strings, bearer headers, every known token,
    however encoded) or lake passwords."""
    text = _known.hide(text)  # first: a known token may hold a separator (& ; =)
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


def install(tokens: Iterable[str] = ()) -> RedactingFilter:
    """Put one filter on every handler configured now (once each); ``tokens`` are
    hidden wherever they appear from now on (:func:`remember`)."""
    remember(tokens)
    found = RedactingFilter()
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    handlers = {h for lg in loggers if isinstance(lg, logging.Logger) for h in lg.handlers}
    if logging.lastResort is not None:
        handlers.add(logging.lastResort)
    for handler in handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(found)
    return found
