"""What PostgreSQL clients say that DuckDB does not: sorted out before any SQL runs.

Transaction control is accepted and does nothing (every statement commits on its own;
:doc:`docs/postgres.md` says so); ``SET``/``RESET`` change the session's settings and
``SHOW`` reads them; ``LISTEN``/``UNLISTEN`` subscribe to analyses. Catalog queries of
psql and drivers are rewritten where only the spelling differs from DuckDB's
(``OPERATOR(pg_catalog.~)``, ``COLLATE pg_catalog.default``, ``version()``), then run
through the same guard as any query.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from enum import StrEnum

import duckdb

from duckflock import __version__
from duckflock.server.pgwire import catalog, types
from duckflock.server.pgwire.clients import describe_query
from duckflock.sql import (
    IDENT,
    LexError,
    check_closed,
    quoted_spans,
    read_ident,
    read_string,
    skip_blank,
    split_statements,
    tokens,
)

SERVER_VERSION = "15.0"
VERSION_TEXT = f"PostgreSQL {SERVER_VERSION} (duckflock {__version__}, DuckDB {duckdb.__version__})"

# reported at start-up (ParameterStatus) and readable with SHOW
DEFAULT_SETTINGS = {
    "server_version": SERVER_VERSION,
    "server_version_num": "150000",
    "server_encoding": "UTF8",
    "client_encoding": "UTF8",
    "DateStyle": "ISO, MDY",
    "TimeZone": "UTC",
    "IntervalStyle": "postgres",
    "integer_datetimes": "on",
    "standard_conforming_strings": "on",
    "is_superuser": "off",
    "application_name": "",
}
# readable with SHOW, not reported at start-up
SHOW_ONLY = {
    "transaction_isolation": "read committed",
    "default_transaction_isolation": "read committed",
    "transaction_read_only": "off",
    "search_path": '"$user", public',
    "max_identifier_length": "63",
    "lc_collate": "C",
    "lc_ctype": "C",
    "extra_float_digits": "1",
}
STARTUP_REPORTED = tuple(DEFAULT_SETTINGS)
# how COPY … TO STDOUT splits its data into CopyData messages: "row", one row a message
# as PostgreSQL sends them (the protocol says so, and psycopg's Copy.rows() and ADBC's
# reader parse one row from each message), or "batch", one message a batch of up to
# 32,768 rows, for clients that read the data as a stream of bytes (psycopg's
# ``for block in copy``, psql, pg_dump): their loop then runs once a batch, not a row
COPY_MESSAGES = "duckflock.copy_messages"
COPY_MESSAGE_KINDS = ("row", "batch")


class Kind(StrEnum):
    """What handles a statement: the session itself, or DuckDB (through the executor)."""

    EMPTY = "empty"  # nothing but comments: EmptyQueryResponse
    TX = "tx"  # BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE: accepted, nothing to do
    SET = "set"  # SET, RESET of a session setting
    SHOW = "show"  # SHOW of a session setting (or DuckDB's SHOW <table>)
    LISTEN = "listen"
    UNLISTEN = "unlisten"
    NOTIFY = "notify"  # refused: channels are analyses
    DISCARD = "discard"
    DEALLOCATE = "deallocate"
    COPY = "copy"  # COPY … TO STDOUT
    INSERT = "insert"  # through the writer, acknowledged after commit
    SQL = "sql"  # anything else: DuckDB runs it


@dataclass(frozen=True)
class Statement:
    """One statement of a query string, sorted by what handles it."""

    kind: Kind
    sql: str
    tag: str = ""
    name: str = ""  # a setting's, channel's or prepared statement's name
    value: str = ""  # a setting's new value


def unquote(name: str) -> str:
    """A setting's, channel's or column's name as written: quoted as it stands, bare in
    lower case (PostgreSQL folds bare names). LexError for a malformed quoted name."""
    if not name.startswith('"'):
        return name.lower()
    value, end = read_ident(name)
    if end != len(name):
        raise LexError(name, "has text after a quoted name", end)
    return value


def _setting_value(text: str) -> str:
    """A SET's value: one string literal's text, else the value as written (a number,
    a word, a list)."""
    if text.startswith("'"):
        with contextlib.suppress(LexError):
            value, end = read_string(text)
            if end == len(text):
                return value
    return text


# a setting's name: one identifier, or two joined by a point (PostgreSQL's custom
# settings, such as duckflock.copy_messages)
_SETTING = rf"({IDENT})(?:\s*\.\s*({IDENT}))?"


def _setting(first: str, second: str | None) -> str:
    """A setting's name from :data:`_SETTING`'s two parts, each unquoted."""
    return unquote(first) if second is None else f"{unquote(first)}.{unquote(second)}"


def _words(sql: str) -> list[str]:
    return sql.split(None, 3)


# commands read here rather than by DuckDB's parser
_READ_BY_HAND = ("SET", "RESET", "SHOW", "LISTEN", "UNLISTEN", "NOTIFY", "DEALLOCATE")


def classify(sql: str) -> Statement:
    """What ``sql`` (one statement) is, for the session to dispatch."""
    body = sql[skip_blank(sql) :].strip().rstrip(";").strip()
    if not body:
        return Statement(Kind.EMPTY, body)
    words = [w.upper() for w in _words(body)]
    first = words[0]
    if first in _READ_BY_HAND:
        check_closed(body)  # an unclosed quote: an error where it opens, not a guess
    if first in ("BEGIN", "START"):
        return Statement(Kind.TX, body, "BEGIN")
    if first in ("COMMIT", "END"):
        return Statement(Kind.TX, body, "COMMIT")
    if first in ("ROLLBACK", "ABORT"):
        # ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name: the block goes on (name set)
        to = "TO" in words[1:3] and first == "ROLLBACK"
        return Statement(Kind.TX, body, "ROLLBACK", words[-1].lower() if to else "")
    if first in ("SAVEPOINT", "RELEASE"):
        return Statement(Kind.TX, body, first)
    if first == "SET":
        match = re.fullmatch(
            rf"SET\s+(?:SESSION\s+|LOCAL\s+)?{_SETTING}\s*(?:=|\s+TO\s+)\s*(.*)", body, re.S | re.I
        )
        if match and match.group(3).strip().upper() == "DEFAULT":  # PostgreSQL's RESET
            return Statement(Kind.SET, body, "RESET", _setting(*match.group(1, 2)))
        if match:
            value = _setting_value(match.group(3).strip())
            return Statement(Kind.SET, body, "SET", _setting(*match.group(1, 2)), value)
        return Statement(Kind.SET, body, "SET")  # SET TRANSACTION …, SET TIME ZONE …: no-ops
    if first == "RESET":
        match = re.fullmatch(rf"RESET\s+{_SETTING}", body, re.S | re.I)
        name = (
            _setting(*match.group(1, 2)) if match else unquote(words[1]) if len(words) > 1 else ""
        )
        return Statement(Kind.SET, body, "RESET", name or "all")
    if first == "SHOW":
        rest = body[4:].strip()
        if re.fullmatch(r"TRANSACTION\s+ISOLATION\s+LEVEL", rest, re.I):
            return Statement(Kind.SHOW, body, "SHOW", "transaction_isolation")
        named = re.fullmatch(_SETTING, rest)
        if named and _setting(*named.group(1, 2)).lower() not in ("tables", "databases"):
            # a setting, or (when the session has no such setting) DuckDB's SHOW <table>
            return Statement(Kind.SHOW, body, "SHOW", setting_name(_setting(*named.group(1, 2))))
        return Statement(Kind.SQL, body)  # DuckDB's SHOW TABLES, SHOW ALL TABLES
    if first in ("LISTEN", "UNLISTEN", "NOTIFY"):
        match = re.fullmatch(rf"\w+\s+({IDENT}|\*)(?:\s*,\s*'.*')?", body, re.S)
        if not match:
            raise ValueError(f"{first} needs a channel name: {first} analysis_name")
        return Statement(Kind(first.lower()), body, first, unquote(match.group(1)))
    if first in ("DISCARD",):
        return Statement(Kind.DISCARD, body, f"DISCARD {words[1] if len(words) > 1 else 'ALL'}")
    if first == "DEALLOCATE":
        name = words[-1] if len(words) > 1 else ""
        return Statement(Kind.DEALLOCATE, body, "DEALLOCATE", "" if name == "ALL" else name)
    if first == "COPY":
        return Statement(Kind.COPY, body, "COPY")
    if first == "INSERT":
        return Statement(Kind.INSERT, body, "INSERT")
    return Statement(Kind.SQL, rewrite(body))


_KNOWN = {k.lower(): k for k in (*DEFAULT_SETTINGS, *SHOW_ONLY)}
# reported to the client, but fixed: values are always sent this way
_FIXED = ("TimeZone", "DateStyle", "IntervalStyle", "client_encoding")


def apply_setting(settings: dict[str, str], statement: Statement) -> list[str]:
    """Apply a ``SET``/``RESET`` to a session's ``settings``; the names whose new value
    the client is told (ParameterStatus). DuckDB's own settings are never touched."""
    if statement.tag == "RESET":
        names = list(settings) if statement.name == "all" else [statement.name]
        changed = []
        for name in map(setting_name, names):
            if name in DEFAULT_SETTINGS:
                settings[name] = DEFAULT_SETTINGS[name]
                changed.append(name)
            else:
                settings.pop(name, None)
        return changed
    if not statement.name:
        return []  # SET TRANSACTION …, SET SESSION CHARACTERISTICS …: nothing to keep
    name = setting_name(statement.name)
    if name == "client_encoding" and statement.value.upper().replace("-", "") not in (
        "UTF8",
        "UNICODE",
    ):
        raise ValueError("only client_encoding UTF8 is supported")
    if name == COPY_MESSAGES and statement.value.lower() not in COPY_MESSAGE_KINDS:
        raise ValueError(f"{COPY_MESSAGES} is one of {', '.join(COPY_MESSAGE_KINDS)}")
    if name not in _FIXED:
        settings[name] = statement.value  # a value duckflock reports but does not interpret
    return [name] if name in DEFAULT_SETTINGS else []


def setting_name(name: str) -> str:
    """The canonical spelling of a setting (``datestyle`` -> ``DateStyle``)."""
    return _KNOWN.get(name.lower(), name.lower())


_REWRITES = [
    (re.compile(r"(?<![\w.])(?:pg_catalog\.)?version\(\s*\)", re.I), f"'{VERSION_TEXT}'"),
    (re.compile(r"OPERATOR\(\s*pg_catalog\.([~!<>=*]+)\s*\)", re.I), r"\1"),
    (re.compile(r'\s+COLLATE\s+(?:pg_catalog\.)?"?default"?', re.I), ""),
    # a regclass shown (psql's "Referenced by"): its name; compared: the oid itself
    (
        re.compile(r"([\w.]+)\s*::\s*(?:pg_catalog\.)?regclass(?=\s+AS\b)", re.I),
        r"duckflock_regclass(\1)",
    ),
    (re.compile(r"::\s*(?:pg_catalog\.)?(?:regclass|regtype|regproc|regnamespace)\b", re.I), ""),
    (re.compile(r"::\s*pg_catalog\.", re.I), "::"),
    # DuckDB's functions psql calls by pg_catalog.name (array_to_string…): its own
    (re.compile(r"(?<![\w.])pg_catalog\s*\.\s*(\w+)\s*(?=\()", re.I), r"\1"),
    (re.compile(r"CAST\((\$\d+|[\w.]+) AS (?:pg_catalog\.)?REG(?:CLASS|TYPE|PROC)\)", re.I), r"\1"),
    # CAST(any expression AS REGCLASS): its oid (or name) as text
    (
        re.compile(r"\bAS\s+(?:pg_catalog\.)?REG(?:CLASS|TYPE|PROC|NAMESPACE)\s*\)", re.I),
        "AS VARCHAR)",
    ),
    (
        re.compile(r"(?<![\w.])(?:pg_catalog\s*\.\s*)?current_setting\s*\(", re.I),
        "duckflock_setting(",
    ),
    # psycopg's TypeInfo.fetch (SQLAlchemy asks for hstore): no such types here
    (re.compile(r"to_regtype\((\$\d+)\)", re.I), r"(CASE WHEN \1 IS NULL THEN 0 END)"),
]


def rewrite(sql: str) -> str:
    """``sql`` in DuckDB's spelling where only the spelling of a client's catalog query
    differs; other SQL is returned as it is."""
    replaced = describe_query(sql)
    if replaced is not None:
        return replaced
    if (
        "pg_" not in sql.lower()
        and "information_schema" not in sql.lower()
        and "version(" not in sql.lower()
        and "::reg" not in sql.lower()
        and "to_regtype" not in sql.lower()
    ):
        return sql
    sql = _OID_LITERAL.sub(r"\1", sql)  # '16409'::regclass: the number
    try:
        spans = quoted_spans(sql)
    except LexError:
        return sql  # DuckDB cannot read it either, and says why
    parts, at = [], 0
    for start, end in spans:  # the client's literals and names stay as sent
        literal = sql[start:end]
        if literal == '"default"':
            continue  # COLLATE "default": rewritten with the code around it
        code = _rewrite_code(sql[at:start])
        if _MATCH_OPERATOR.search(code) and literal.startswith("'"):
            # PostgreSQL's ~ finds the pattern anywhere; DuckDB's must match it all
            literal = "'(?s).*(?:" + literal[1:-1] + ").*'"
        parts += [code, literal]
        at = end
    return "".join([*parts, _rewrite_code(sql[at:])])


_OID_LITERAL = re.compile(r"'(\d+)'\s*::\s*(?:pg_catalog\.)?regclass\b", re.I)
_MATCH_OPERATOR = re.compile(r"(?<![~!])!?~\s*$")


def _rewrite_code(sql: str) -> str:
    for pattern, replacement in _REWRITES:
        sql = pattern.sub(replacement, sql)
    return catalog.rename(sql)


def parameter_count(sql: str) -> int:
    """The highest ``$n`` in ``sql``, outside string literals, quoted names and comments
    (DuckDB's scanner reads ``$n`` as one operator token)."""
    try:
        found = tokens(sql)
    except LexError:
        return 0  # DuckDB cannot read it either, and says why when it runs
    numbers = (
        re.match(r"\$(\d+)", token.text)
        for token in found
        if token.kind == duckdb.token_type.operator
    )
    return max((int(number.group(1)) for number in numbers if number), default=0)


# a cast's type name -> OID: PostgreSQL's names and spellings (types.PG_TYPES), and DuckDB's
_CASTS = {
    name: oid for oid, kind in types.PG_TYPES.items() for name in (kind.name, kind.spelled)
} | {
    "int": types.Oid.INT4,
    "double": types.Oid.FLOAT8,
    "float": types.Oid.FLOAT8,
    "decimal": types.Oid.NUMERIC,
    "blob": types.Oid.BYTEA,
}
# element OID -> array OID, for the arrays a parameter can be read as
_ARRAY_CASTS = {element: array for array, element in types.PARAMETER_ARRAYS.items()}


# ``= ANY($1)``, ``<> ALL ($2)``: PostgreSQL reads a parameter of unknown type as an array
_LISTED = re.compile(r"\b(?:ANY|ALL|SOME)\s*\(\s*\$(\d+)\s*\)", re.I)


def parameter_types(sql: str, given: list[int]) -> list[int]:
    """Each parameter's type OID: the client's, else a cast's in the SQL (``$1::int``),
    else text[] as the whole operand of ``ANY``/``ALL``/``SOME`` (psycopg sends a
    ``list[str]`` as text of unknown type: ``{a,"b c"}``), else text (which DuckDB casts
    where the value is used)."""
    count = max(parameter_count(sql), len(given))
    found = list(given) + [0] * (count - len(given))
    for number, name, array in re.findall(r"\$(\d+)\s*::\s*([A-Za-z_]\w*)(\[\])?", sql):
        index = int(number) - 1
        if 0 <= index < count and found[index] == 0:
            oid = _CASTS.get(name.lower(), 0)
            found[index] = _ARRAY_CASTS.get(oid, 0) if array else oid
    for number in _LISTED.findall(sql):
        index = int(number) - 1
        if 0 <= index < count and found[index] == 0:
            found[index] = _ARRAY_CASTS[types.Oid.TEXT]
    return [oid or types.Oid.TEXT for oid in found]


def split(sql: str) -> list[str]:
    """The statements of a simple Query message (DuckDB's parser splits them; text it
    cannot parse stays one statement, so its error is reported as DuckDB's)."""
    if ";" not in sql.strip().rstrip(";"):
        return [sql]
    first = classify_word(sql)
    if first in ("LISTEN", "UNLISTEN", "NOTIFY", "SET", "SHOW", "RESET", "DISCARD"):
        # DuckDB's parser knows none of these: split at its scanner's ; tokens
        try:
            return split_statements(sql) or [sql]
        except LexError:
            return [sql]
    try:
        return [s.query for s in duckdb.extract_statements(sql)] or [sql]
    except duckdb.Error:
        return [sql]


def classify_word(sql: str) -> str:
    try:
        body = sql[skip_blank(sql) :]
    except LexError:
        return ""  # split() leaves such text whole, and DuckDB refuses it
    return body.split(None, 1)[0].upper() if body.strip() else ""
