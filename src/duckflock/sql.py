"""The one lexer: quoting names and literals, splitting names and statements.

Every identifier or string literal duckflock writes into SQL is quoted here, every
dotted name a caller hands it is split here, and every token it reads out of SQL comes
from DuckDB's own scanner (``duckdb.tokenize``) through :func:`tokens`. Nothing else in
the package scans SQL text by hand (``tests/test_sql.py`` checks that), so a name one
module refuses cannot slip through another.

- :func:`quote_ident` / :func:`quote_qualified` / :func:`quote_literal` — text as SQL;
- :func:`split_name` — ``catalog.schema.name`` (quoted or bare parts) into its parts,
  :func:`name_end` — where such a name that starts inside longer text ends,
  :func:`read_ident` / :func:`read_string` — the one identifier / string literal at a
  position, :func:`read_quoted` — quoted text of any :class:`Quoting` (CSV, arrays);
- :func:`tokens` — DuckDB's tokens with offsets in characters (DuckDB counts bytes),
  :func:`quoted_spans` — where its string literals and quoted names are,
  :func:`skip_blank` — where the first token starts (after space and comments),
  :func:`split_statements` — statements split at DuckDB's ``;`` tokens, for text
  DuckDB's parser does not know (PostgreSQL's ``LISTEN``, ``SHOW``…; for DuckDB's own
  SQL, ``duckdb.extract_statements`` is the oracle).

Text that cannot be SQL — a NUL (DuckDB ends the text there), a lone surrogate (it has no
UTF-8 form), an empty name, an unclosed quote — is refused with :class:`LexError`, a
``ValueError`` that names the problem and where it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import Enum
from typing import NamedTuple

import duckdb

__all__ = [
    "IDENT",
    "MAX_PARTS",
    "LexError",
    "Token",
    "check_closed",
    "check_text",
    "display_ident",
    "name_end",
    "paren_end",
    "Quoting",
    "quoted_spans",
    "quote_bytes",
    "quote_ident",
    "quote_literal",
    "quote_qualified",
    "read_ident",
    "read_quoted",
    "read_string",
    "split_name",
    "skip_blank",
    "split_statements",
    "tokens",
]

# a bare identifier as DuckDB's scanner reads one: a letter, "_" or any non-ASCII
# character, then those, digits and "$" (its ident_start / ident_cont byte classes)
_BARE_PATTERN = r"[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*"
_BARE = re.compile(_BARE_PATTERN)
# one identifier, quoted (``""`` is a quote) or bare: for patterns that match statements
IDENT = r'"(?:[^"]|"")*+"|' + _BARE_PATTERN
# a backslash and the character it escapes (PostgreSQL's array text)
_BACKSLASHED = re.compile(r"\\(.)", re.S)
# escaped text up to a quote (possessive: no state kept per escape)
_ESCAPED = {mark: re.compile(rf"(?:[^\\{mark}]|\\.)*+", re.S) for mark in "\"'"}
# a dollar quote's tag; where a quote, comment or bare name opens; /* and */ (they nest)
_DOLLAR = re.compile(r"\$(?:[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")
_OPENING = re.compile(rf"""--[^\n]*|/\*|[EeXxBb]?'|"|{_DOLLAR.pattern}|{_BARE_PATTERN}""")
_NESTED = re.compile(r"/\*|\*/")
# a name shown without quotes (messages, displays): plain ASCII words only
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# a dotted name's parts: catalog.schema.name
MAX_PARTS = 3
# how much of the text an error message quotes
_SHOWN = 200


class LexError(ValueError):
    """Text that is not a well-formed name, literal or statement text (``.text``,
    ``.position``: where the problem is, in characters, when one place is to blame)."""

    def __init__(self, text: str, reason: str, position: int | None = None) -> None:
        where = "" if position is None else f" at position {position}"
        shown = text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"
        super().__init__(f"{shown!r} {reason}{where}")
        self.text = text
        self.reason = reason
        self.position = position


def check_text(text: object, what: str) -> str:
    """``text`` when it can be SQL text: a str with no NUL and no lone surrogate
    (TypeError, LexError otherwise; ``what`` names it in the message)."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, not {type(text).__name__}")
    nul = text.find("\x00")
    if nul >= 0:
        raise LexError(text, f"({what}) has a NUL character", nul)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LexError(
            text, f"({what}) has a lone surrogate, which UTF-8 cannot hold", exc.start
        ) from None
    return text


# -- quoting ------------------------------------------------------------------------------


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier. Every identifier duckflock writes goes here."""
    check_text(name, "a name")
    if not name:
        raise LexError(name, "is not a name: an identifier cannot be empty")
    return '"' + name.replace('"', '""') + '"'


def quote_qualified(parts: Iterable[str]) -> str:
    """A dotted name (``"catalog"."schema"."name"``), every part quoted."""
    return ".".join(quote_ident(part) for part in parts)


def quote_literal(value: str) -> str:
    """``value`` as a SQL string literal (``'it''s'``)."""
    check_text(value, "a string literal")
    return "'" + value.replace("'", "''") + "'"


def display_ident(part: str) -> str:
    """A name part as a person would type it: bare when it is a plain word, else quoted."""
    return part if _PLAIN.fullmatch(part) else quote_ident(part)


# -- names --------------------------------------------------------------------------------


class Quoting(Enum):
    """How a quote stands inside quoted text."""

    DOUBLED = "doubled"  # SQL names and strings, CSV: ``""`` is one ``"``
    BACKSLASH = "backslash"  # PostgreSQL's array text: ``\\x`` is ``x``
    EITHER = "either"  # E'…' strings: both


def _quoted_end(
    text: str, start: int, mark: str, quoting: Quoting = Quoting.DOUBLED, what: str = ""
) -> int:
    """The index after the quote closing the one at ``start`` (LexError, naming ``what``
    is quoted, when it is not closed): the one scanner of quoted text."""
    at = start + 1
    while True:
        if quoting is not Quoting.DOUBLED:  # past what backslashes escape, in one C scan
            found = _ESCAPED[mark].match(text, at)
            at = at if found is None else found.end()  # (never None: it matches "")
        close = text.find(mark, at)
        if close < 0:
            what = what or ("identifier" if mark == '"' else "string")
            raise LexError(text, f"has an unclosed quoted {what}", start)
        if quoting is not Quoting.BACKSLASH and text.startswith(mark, close + 1):
            at = close + 2
            continue
        return close + 1


def read_quoted(
    text: str, start: int, mark: str = '"', quoting: Quoting = Quoting.DOUBLED, what: str = ""
) -> tuple[str, int]:
    """The text quoted by ``mark`` at ``text[start]``, its escapes undone (EITHER: as
    written), and the index after it. LexError when there is no such quote or it is not
    closed (``what``: the thing quoted, in the message)."""
    if not text.startswith(mark, start):
        raise LexError(text, f"has no {mark} here", start)
    end = _quoted_end(text, start, mark, quoting, what)
    inner = text[start + 1 : end - 1]
    if quoting is Quoting.DOUBLED:
        return inner.replace(mark * 2, mark), end
    return "".join(_BACKSLASHED.split(inner)) if quoting is Quoting.BACKSLASH else inner, end


def quote_bytes(value: bytes, quoting: Quoting, mark: bytes = b'"') -> bytes:
    """``value`` in ``mark`` quotes, a quote inside doubled (:attr:`Quoting.DOUBLED`:
    CSV) or after a backslash, as is a backslash (:attr:`Quoting.BACKSLASH`: PostgreSQL's
    array text) — bytes, as they go over the wire."""
    if quoting is Quoting.DOUBLED:
        return mark + value.replace(mark, mark * 2) + mark
    return mark + value.replace(b"\\", b"\\\\").replace(mark, b"\\" + mark) + mark


def read_ident(text: str, start: int = 0) -> tuple[str, int]:
    """The identifier at ``text[start]`` — quoted (``"a""b"`` is ``a"b``) or bare, as
    DuckDB's scanner reads it — and the index after it. LexError when there is none."""
    if text.startswith('"', start):
        name, end = read_quoted(text, start)
        if not name:
            raise LexError(text, "has an empty quoted name", start)
        return name, end
    found = _BARE.match(text, start)
    if found is None:
        raise LexError(text, "has no name", start)
    return found.group(0), found.end()


def read_string(text: str, start: int = 0) -> tuple[str, int]:
    """The string literal at ``text[start]`` (``'it''s'`` is ``it's``) and the index
    after it. LexError when there is none, or it is not closed."""
    if not text.startswith("'", start):
        raise LexError(text, "has no string literal", start)
    return read_quoted(text, start, "'")


def _scan(text: str, at: int, stop: str) -> tuple[tuple[str, ...], int]:
    """The parts of the dotted name at ``text[at]`` and the index after it. A bare part
    runs up to a dot or a character of ``stop``, surrounding spaces dropped."""
    parts: list[str] = []
    while True:
        if text.startswith('"', at):
            part, at = read_ident(text, at)
        else:
            end = at
            while end < len(text) and text[end] != "." and text[end] not in stop:
                end += 1
            part = text[at:end].strip()
            quote = text.find('"', at, end)
            if quote >= 0:
                raise LexError(text, "has a quote inside a bare name", quote)
            if not part:
                raise LexError(text, "has an empty name part", at)
            at = end
        parts.append(part)
        if len(parts) > MAX_PARTS:
            raise LexError(text, "has more than three parts (catalog.schema.name)")
        if not text.startswith(".", at):
            return tuple(parts), at
        at += 1


def split_name(text: str) -> tuple[str, ...]:
    """``catalog.schema.name`` (1 to 3 parts) split into its parts.

    A part is either bare (no dot, no quote, not empty; surrounding spaces dropped) or
    double-quoted, where ``""`` stands for one quote. LexError for anything else.
    """
    check_text(text, "a table name")
    parts, end = _scan(text, 0, "")
    if end != len(text):
        raise LexError(text, "has text after a quoted name", end)
    return parts


def name_end(text: str, start: int) -> int | None:
    """Where the dotted name that starts ``text[start:]`` ends (as DuckDB renders names:
    bare parts end at white space or a parenthesis), or None when there is none."""
    try:
        _, end = _scan(text, start, " \t\n\r(")
    except LexError:
        return None
    return end


def paren_end(text: str, start: int) -> int | None:
    """The index after the ``)`` closing the ``(`` at ``start`` (quoted names and strings
    respected), or None when it is not closed."""
    depth, at = 0, start
    while at < len(text):
        char = text[at]
        if char in "\"'":
            try:
                at = _quoted_end(text, at, char)
            except LexError:
                return None
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return at + 1
        at += 1
    return None


# -- tokens and statements ----------------------------------------------------------------


class Token(NamedTuple):
    """One token of DuckDB's scanner. ``text`` runs from the token to the next one, so
    it may end in white space or a comment; :attr:`word` and :attr:`name` read the
    token itself."""

    start: int  # in characters
    kind: duckdb.token_type
    text: str

    @property
    def word(self) -> str:
        """A keyword or bare word, lower case ("" for anything else)."""
        found = _BARE.match(self.text)
        return found.group(0).lower() if found else ""

    @property
    def name(self) -> str:
        """The name an identifier or keyword token spells, quoted or bare ("" if none)."""
        try:
            return read_ident(self.text)[0]
        except LexError:
            return ""

    @property
    def is_semicolon(self) -> bool:
        return self.kind == duckdb.token_type.operator and self.text.startswith(";")


def tokens(sql: str) -> list[Token]:
    """DuckDB's tokens of ``sql`` (comments are not tokens; text after an unclosed quote
    is dropped, as DuckDB's scanner does), with offsets in characters: DuckDB's are
    UTF-8 bytes (as its syntax tree's ``query_location``, duckdb/duckdb#22818)."""
    check_text(sql, "SQL")
    found = duckdb.tokenize(sql)
    if sql.isascii():
        starts = [start for start, _ in found]
    else:  # DuckDB counts UTF-8 bytes
        byte_to_char: dict[int, int] = {}
        size = 0
        for index, char in enumerate(sql):
            byte_to_char[size] = index
            size += len(char.encode("utf-8"))
        byte_to_char[size] = len(sql)
        starts = [byte_to_char[start] for start, _ in found]
    ends = [*starts[1:], len(sql)]
    return [
        Token(start, kind, sql[start:end])
        for start, end, (_, kind) in zip(starts, ends, found, strict=True)
        if start < len(sql)  # DuckDB 2.0 adds a token past the end (duckdb/duckdb#24742)
    ]


def split_statements(sql: str) -> list[str]:
    """The statements of ``sql``, split at DuckDB's ``;`` tokens (never inside a string,
    quoted name or comment); blank ones left out. For text that DuckDB's parser does not
    know; SQL that it does is split by ``duckdb.extract_statements``."""
    parts: list[str] = []
    at = 0
    for token in tokens(sql):
        if token.is_semicolon:
            parts.append(sql[at : token.start])
            at = token.start + 1
    parts.append(sql[at:])
    return [part for part in parts if part.strip()]


def skip_blank(sql: str) -> int:
    """Where the first token of ``sql`` starts, after white space and comments
    (``len(sql)`` when there is none)."""
    found = tokens(sql)
    return found[0].start if found else len(sql)


_PREFIX = re.compile(r"[A-Za-z]*'")  # E'…', X'…', B'…'


def _literal_end(sql: str, start: int) -> int:
    """The index after the string literal DuckDB's scanner found at ``start``."""
    dollar = _DOLLAR.match(sql, start)
    if dollar is not None:
        close = sql.find(dollar.group(0), dollar.end())
        if close < 0:
            raise LexError(sql, "has an unclosed dollar-quoted string", start)
        return close + len(dollar.group(0))
    prefix = _PREFIX.match(sql, start)
    if prefix is None:
        raise LexError(sql, "has no string literal", start)
    quote = prefix.end() - 1
    escaped = sql[start:quote].lower() == "e"  # E'…': a backslash escapes the next character
    return _quoted_end(sql, quote, "'", Quoting.EITHER if escaped else Quoting.DOUBLED)


def check_closed(sql: str) -> str:
    """``sql`` when each of its quotes and block comments is closed; else LexError at the
    unclosed one. DuckDB's scanner silently drops the text after an unclosed quote, so a
    command read by hand (``SET "x = 1``) would otherwise pass as something else."""
    at, depth, comment = 0, 0, 0
    while (found := (_NESTED if depth else _OPENING).search(sql, at)) is not None:
        mark, start, at = found.group(0), found.start(), found.end()
        if mark in ("/*", "*/"):
            comment, depth = comment if depth else start, depth + (1 if mark == "/*" else -1)
        elif mark == '"':
            at = _quoted_end(sql, start, mark)
        elif mark[0] in "$'" or mark[1:] == "'":  # not a line comment, nor a bare name
            at = _literal_end(sql, start)
    if depth:
        raise LexError(sql, "has an unclosed comment", comment)
    return sql


def quoted_spans(sql: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every string literal and quoted name in ``sql``, in order, as
    DuckDB's scanner finds them: text that is data, not code."""
    spans = []
    for token in tokens(sql):
        if token.kind == duckdb.token_type.string_const:
            spans.append((token.start, _literal_end(sql, token.start)))
        elif token.text.startswith('"'):
            spans.append((token.start, _quoted_end(sql, token.start, '"')))
    return spans
