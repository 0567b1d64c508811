"""The one lexer (duckflock.sql): DuckDB reads back what it writes, and it is the only one."""

from __future__ import annotations

import ast
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from duckflock import sql
from duckflock.live.fold import capture
from duckflock.server.pgwire import compat
from duckflock.sql import LexError

SRC = Path(sql.__file__).parent

# names DuckDB can hold: any text without NUL (hypothesis leaves out lone surrogates)
names = st.text(min_size=1, max_size=16).filter(lambda s: "\x00" not in s)
WEIRD = [
    'a"b',
    '"',
    '""',
    "my table",
    "ü名",
    "a.b",
    "select",
    "from",
    ";DROP TABLE x;--",
    "'",
    "🦆",
]


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    yield connection
    connection.close()


def _made_table(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> tuple[str, str]:
    """Create ``schema.name`` through quote_qualified; what DuckDB's catalog calls it."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {sql.quote_ident(schema)}")
    qualified = sql.quote_qualified([schema, name])
    con.execute(f"CREATE OR REPLACE TABLE {qualified} ({sql.quote_ident(name)} INTEGER)")
    rows = con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
    column = con.execute(f"SELECT * FROM {qualified}").description[0][0]
    con.execute(f"DROP TABLE {qualified}")
    assert len(rows) == 1  # the one table made here
    assert column == name
    row = rows[0]
    return str(row[0]), str(row[1])


@pytest.mark.parametrize("name", WEIRD)
def test_weird_names_round_trip_through_duckdb(con: duckdb.DuckDBPyConnection, name: str) -> None:
    assert _made_table(con, name, name) == (name, name)
    assert con.execute(f"SELECT 1 AS {sql.quote_ident(name)}").description[0][0] == name


@given(name=names)
@settings(max_examples=150, deadline=None)
def test_a_quoted_name_is_read_back_by_duckdb_as_itself(name: str) -> None:
    con = duckdb.connect()
    try:
        assert con.execute(f"SELECT 1 AS {sql.quote_ident(name)}").description[0][0] == name
        assert _made_table(con, "s", name) == ("s", name)
    finally:
        con.close()


@given(parts=st.lists(names, min_size=1, max_size=3))
@settings(max_examples=300, deadline=None)
def test_split_name_undoes_quote_qualified(parts: list[str]) -> None:
    assert sql.split_name(sql.quote_qualified(parts)) == tuple(parts)
    text = sql.quote_qualified(parts) + " (x)"
    assert sql.name_end(text, 0) == len(text) - 4


@given(value=st.text(max_size=30).filter(lambda s: "\x00" not in s))
@settings(max_examples=150, deadline=None)
def test_a_quoted_literal_is_read_back_by_duckdb_as_itself(value: str) -> None:
    con = duckdb.connect()
    try:
        assert con.execute(f"SELECT {sql.quote_literal(value)}").fetchone() == (value,)
    finally:
        con.close()


def test_bare_names_split_as_duckdb_writes_them() -> None:
    assert sql.split_name("events") == ("events",)
    assert sql.split_name(' other ."my.t"') == ("other", "my.t")
    assert sql.split_name('"a""b".c') == ('a"b', "c")
    assert sql.display_ident("events") == "events"
    assert sql.display_ident("my table") == '"my table"'


@pytest.mark.parametrize(
    ("bad", "reason", "position"),
    [
        ("", "empty name part", 0),
        ("a..b", "empty name part", 2),
        ('"open', "unclosed quoted identifier", 0),
        ('a"b.c', "quote inside a bare name", 1),
        ('"t" x', "text after a quoted name", 3),
        ('""', "empty quoted name", 0),
        ("a\x00b", "NUL character", 1),
        ("a\ud800", "lone surrogate", 1),
        ("a.b.c.d", "more than three parts", None),
    ],
)
def test_malformed_names_get_a_precise_error(bad: str, reason: str, position: int | None) -> None:
    with pytest.raises(LexError, match=reason) as caught:
        sql.split_name(bad)
    assert caught.value.position == position
    assert caught.value.text == bad


@pytest.mark.parametrize(
    ("bad", "reason"),
    [("", "cannot be empty"), ("a\x00", "NUL character"), ("\udcff", "lone surrogate")],
)
def test_quoting_refuses_what_duckdb_cannot_hold(bad: str, reason: str) -> None:
    with pytest.raises(LexError, match=reason):
        sql.quote_ident(bad)
    if bad:
        with pytest.raises(LexError, match=reason):
            sql.quote_literal(bad)
    with pytest.raises(TypeError, match="must be a str"):
        sql.quote_ident(1)  # type: ignore[arg-type]


def test_what_quoting_refuses_duckdb_refuses_too(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(duckdb.ParserException, match="zero-length"):
        con.execute('CREATE TABLE "" (x INTEGER)')
    # DuckDB stops reading at a NUL: the rest of the statement would be lost silently
    assert con.execute("SELECT 42 \x00; DROP TABLE anything").fetchone() == (42,)
    with pytest.raises(LexError, match="NUL"):
        sql.tokens("SELECT 42 \x00; DROP TABLE anything")


def test_unclosed_quotes_are_errors_not_guesses() -> None:
    with pytest.raises(LexError, match="unclosed quoted identifier at position 2"):
        sql.read_ident('x "abc', 2)
    with pytest.raises(LexError, match="has no name"):
        sql.read_ident("1abc")
    assert sql.read_ident('"a""b" rest') == ('a"b', 6)
    assert sql.read_ident("ü_1$x y") == ("ü_1$x", 5)
    assert sql.paren_end("(a, \"b)\", 'c)') x", 0) == 15
    assert sql.paren_end('("open)', 0) is None


@pytest.mark.parametrize(
    ("text", "quoting", "value", "end"),
    [
        ('"a""b" x', sql.Quoting.DOUBLED, 'a"b', 6),
        ('""""', sql.Quoting.DOUBLED, '"', 4),
        ('"a\\"b\\\\" x', sql.Quoting.BACKSLASH, 'a"b\\', 8),
        ('"\\x"', sql.Quoting.BACKSLASH, "x", 4),
        ('""', sql.Quoting.BACKSLASH, "", 2),
    ],
)
def test_one_reader_for_quoted_text(text: str, quoting: sql.Quoting, value: str, end: int) -> None:
    assert sql.read_quoted(text, 0, '"', quoting) == (value, end)
    assert sql.read_quoted(sql.quote_bytes(value.encode(), quoting).decode(), 0, '"', quoting) == (
        value,
        len(sql.quote_bytes(value.encode(), quoting)),
    )


@pytest.mark.parametrize(
    ("text", "mark", "quoting"),
    [
        ('x "a""', '"', sql.Quoting.DOUBLED),
        ('x "a\\"', '"', sql.Quoting.BACKSLASH),  # the backslash takes the would-be close
        ('x "a\\', '"', sql.Quoting.BACKSLASH),  # a backslash at the very end
        ("x 'a\\'", "'", sql.Quoting.EITHER),  # E'a\'
    ],
)
def test_an_unclosed_quote_is_an_error_at_its_opening(
    text: str, mark: str, quoting: sql.Quoting
) -> None:
    with pytest.raises(LexError, match="unclosed quoted thing at position 2"):
        sql.read_quoted(text, 2, mark, quoting, "thing")
    kind = "identifier" if mark == '"' else "string"
    with pytest.raises(LexError, match=f"unclosed quoted {kind} at position 2"):
        sql.read_quoted(text, 2, mark, quoting)


# pieces of a select list: literals, names and comments, closed or not, that one
# reader might see closed and another open (nested comments, "$" and E in bare names)
_CLOSABLE = [
    "'a'", "'it''s'", "'\\'", "E'\\''", "E'\\\\'", "e'a''b'", "$$x'$$", "$t$a$$b$t$",
    '"a""b"', "a$b$", "xe", "b'01'", "x'ff'", "'--'", "'/*'", '"*/"', "/* a */", "/**/",
    "/* /* */ ' */", "/* $$ */", "-- '\n", "'open", "E'\\'", '"open', "$$open", "$t$open$$",
    "/* open", "/* /* */", "$é$x'$é$", "$é$open",
]  # fmt: skip


@given(st.lists(st.sampled_from(_CLOSABLE), min_size=1, max_size=4))
@settings(max_examples=300, deadline=None)
def test_a_quote_or_comment_is_closed_where_duckdbs_parser_says(pieces: list[str]) -> None:
    text = "SELECT 1" + "".join(p if p[0] in "/-" else f", {p}" for p in pieces)
    try:
        duckdb.extract_statements(text)
    except duckdb.ParserException as exc:  # another syntax error may come first
        if "unterminated" in str(exc):
            with pytest.raises(LexError, match="unclosed"):
                sql.check_closed(text)
        return
    assert sql.check_closed(text) == text


def test_escaped_quoted_text_is_read_in_one_pass() -> None:
    """The closing quote was searched again after each backslash: 160,000 characters of
    escapes took 1.4 s and grew as their square (a 2 MB Bind parameter: minutes)."""
    escapes = "\\n" * 600_000
    started = time.perf_counter()
    assert sql.read_quoted(f'"{escapes}"', 0, '"', sql.Quoting.BACKSLASH)[0] == "n" * 600_000
    assert sql.check_closed(f"SET x = E'{escapes}'")
    with pytest.raises(LexError, match="unclosed quoted string at position 9"):
        sql.check_closed(f"SET x = E'{escapes}")
    assert time.perf_counter() - started < 6  # 0.08 s at load 6 (it took 13 s)


def test_a_long_quoted_name_is_matched_without_state_per_character() -> None:
    """IDENT's repeated group kept backtracking state: a 1 MB name in LISTEN took 152 MB."""
    listen = 'LISTEN "' + "a" * 1_000_000 + '"'
    compat.classify("LISTEN x")  # DuckDB's first call allocates for itself
    tracemalloc.start()
    try:
        assert compat.classify(listen).name == "a" * 1_000_000
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * len(listen), peak


def test_escaped_string_literals_are_one_span() -> None:
    text = "SELECT E'a\\'b''c', 'd''e' AS \"f\"\"g\""
    spans = [text[start:end] for start, end in sql.quoted_spans(text)]
    assert spans == ["E'a\\'b''c'", "'d''e'", '"f""g"']


def test_tokens_count_characters_where_duckdb_counts_bytes() -> None:
    text = "/* é */ DELETE FROM \"tü\" WHERE x = 'ü' -- 🦆\n; SELECT 1"
    found = sql.tokens(text)
    raw = duckdb.tokenize(text)
    assert [len(text[: t.start].encode()) for t in found] == [start for start, _ in raw]
    assert [t.kind for t in found] == [kind for _, kind in raw]
    assert [t.word for t in found][:3] == ["delete", "from", ""]
    assert found[2].name == "tü"
    assert sql.skip_blank(text) == text.index("DELETE")


# statements holding ; where only code may split them
_PIECES = st.sampled_from(
    [
        "SELECT 1",
        "SELECT 'a;b' AS x",
        "SELECT 'it''s;' AS \"c;d\"",
        'SELECT "we""ird;" FROM (SELECT 1 AS "we""ird;")',
        "SELECT $$;$$",
        "SELECT $t$ ; $t$",
        "SELECT E'\\';' AS e",
        "SELECT 1 /* ; */ + 2",
        "SELECT 1 -- ;\n + 2",
        "/* ; */ SELECT 'ü;🦆'",
        'SELECT [1, 2][1] AS "x;"',
    ]
)


_TRICKY = ";'\"$-/*\n aé🦆"
_QUIET = ";'\" aé🦆"  # nothing that could end a comment or a dollar quote


@st.composite
def _generated(draw: st.DrawFn) -> str:
    """A SELECT with ; and quotes inside literals, names and comments."""
    value = draw(st.text(alphabet=_TRICKY, max_size=8))
    alias = draw(st.text(alphabet=_TRICKY, min_size=1, max_size=8))
    quiet = draw(st.text(alphabet=_QUIET, max_size=8))
    form = draw(st.integers(0, 3))
    if form == 0:
        return f"SELECT {sql.quote_literal(value)} AS {sql.quote_ident(alias)}"
    if form == 1:
        return f"SELECT $${quiet}$$ /* {quiet} */"
    if form == 2:
        return f"-- {quiet}\nSELECT 1 AS {sql.quote_ident(alias)}"
    return f"SELECT {sql.quote_ident(alias)} FROM (SELECT 1 AS {sql.quote_ident(alias)})"


@given(
    st.lists(st.one_of(_generated(), _PIECES), min_size=1, max_size=5),
    st.sampled_from([";", " ; ", ";\n ", ";;"]),
)
@settings(max_examples=400, deadline=None)
def test_statements_split_as_duckdb_splits_them(pieces: list[str], glue: str) -> None:
    text = glue.join(pieces)
    expected = [s.query.strip() for s in duckdb.extract_statements(text)]
    assert [part.strip() for part in sql.split_statements(text)] == expected
    assert len(expected) == len(pieces)


def test_postgres_commands_split_where_duckdb_would() -> None:
    text = "LISTEN \"a;b\"; -- don't ; split\nSET x TO 'a;b'; NOTIFY c"
    assert [part.strip() for part in compat.split(text)] == [
        'LISTEN "a;b"',
        "-- don't ; split\nSET x TO 'a;b'",
        "NOTIFY c",
    ]
    assert compat.classify('/* x */ -- y\n LISTEN "a""b"').name == 'a"b'
    assert compat.unquote("DateStyle") == "datestyle"
    assert compat.classify("SET application_name = 'it''s; ok'").value == "it's; ok"
    assert compat.classify("SET search_path TO a, b").value == "a, b"
    with pytest.raises(LexError, match="text after a quoted name"):
        compat.unquote('"a"b"')


def test_parameters_are_counted_in_code_only() -> None:
    assert compat.parameter_count("SELECT $$ $5 $$, '$6', \"$7\", $2 -- $9\n + $1") == 2
    assert compat.parameter_count("SELECT E'\\' $4', $3 /* $8 */") == 3


def test_catalog_rewrites_leave_literals_and_names_as_sent() -> None:
    rewritten = compat.rewrite(
        "SELECT 'pg_catalog.version()', \"pg_catalog.version()\", E'\\'pg_catalog.version()'"
        " FROM pg_catalog.pg_class WHERE relname OPERATOR(pg_catalog.~) '^(t)$'"
        ' COLLATE "default"'
    )
    assert rewritten.count("pg_catalog.version()") == 3
    assert "'(?s).*(?:^(t)$).*'" in rewritten
    assert "COLLATE" not in rewritten


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("/* é */ DELETE FROM \"tü\" WHERE x = 'é'", ("tü",)),
        ('DELETE FROM ü."a b" WHERE true', ("ü", "a b")),
        ('DELETE FROM "a""b".events', ('a"b', "events")),
    ],
)
def test_a_delete_after_non_ascii_text_names_its_table(text: str, parts: tuple[str, ...]) -> None:
    # retention read DuckDB's byte offsets as characters: after an é they were off by one
    assert capture.target(text) == parts


# -- one lexer: no other module of the package reads or writes SQL text by hand ---------

# fragments of the hand-written lexers this module replaced
_FORBIDDEN_TEXT = (
    '[^"]|""',  # a quoted-identifier regex
    "[^']|''",  # a string-literal regex
    "\\x80-\\U0010ffff",  # DuckDB's bare-identifier class
    "\\u0080-\\U0010ffff",
    "/\\*.*?\\*/",  # a comment regex
)
_FORBIDDEN_REPLACES = {('"', '""'), ("'", "''"), ('""', '"'), ("''", "'")}
_QUOTES = ('"', "'")


def _is_quote(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value in _QUOTES


def _violations(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for fragment in _FORBIDDEN_TEXT:
                if fragment in node.value:
                    yield f"{where}: a SQL regex ({fragment!r})"
        elif isinstance(node, ast.Attribute) and node.attr == "tokenize":
            yield f"{where}: duckdb.tokenize outside duckflock.sql"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method, args = node.func.attr, node.args
            if method == "replace" and "chr(39)" in ast.unparse(node):
                yield f"{where}: hand-written quoting"
            elif method == "replace" and len(args) == 2 and all(_is_quote_pair(a) for a in args):
                pair = tuple(a.value for a in args if isinstance(a, ast.Constant))
                if pair in _FORBIDDEN_REPLACES:
                    yield f"{where}: hand-written quoting {pair!r}"
            elif method in ("find", "rfind", "index", "strip", "lstrip", "rstrip") and (
                args and _is_quote(args[0])
            ):
                yield f"{where}: a hand-written quote scanner ({ast.unparse(node)})"
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(map(_is_quote, sides)) and any(isinstance(n, ast.Subscript) for n in sides):
                yield f"{where}: a character loop over quotes ({ast.unparse(node)})"


def _is_quote_pair(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value in ('"', '""', "'", "''")


def test_no_other_module_has_its_own_lexer() -> None:
    found = [
        problem
        for path in sorted(SRC.rglob("*.py"))
        if path != Path(sql.__file__)
        for problem in _violations(path)
    ]
    # the bare-identifier class is defined once, in duckflock.sql
    assert found == []


def test_the_guard_sees_the_copies_it_forbids(tmp_path: Path) -> None:
    copy = tmp_path / "copy.py"
    copy.write_text(
        "import re, duckdb\n"
        'Q = re.compile(r\'"(?:[^"]|"")*"\')\n'
        "def quote(n): return '\"' + n.replace('\"', '\"\"') + '\"'\n"
        'def lit(v): return "\'" + v.replace("\'", "\'\'") + "\'"\n'
        "T = duckdb.tokenize('select 1')\n"
        "def scan(t, i): return t[i] == '\"' or t.find('\"', i)\n"
        "def lit2(v): return v.replace(chr(39), chr(39) * 2)\n"
    )
    assert len(list(_violations(copy))) == 7
