"""The Postgres port with real clients: psycopg, pg8000, asyncpg, SQLAlchemy and ADBC.

One server (in this process, on a free port) for the module, over a locked-down file
database with three tokens; each client connects with a token as its password. The
real ``duckflock serve`` process, TLS and the ``psql`` binary are in test_pgwire_serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import decimal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

import duckflock
import pgclients
from duckflock.server.http.app import create_app
from duckflock.server.pgwire import PgServer, PgSettings
from duckflock.server.settings import ServerSettings
from pgclients import CLIENTS

READ, WRITE, ADMIN = "read-token-0123456789", "write-token-0123456789", "admin-token-0123456789"
ROW_CAP = 20_000


@dataclass
class Served:
    db: duckflock.Database
    server: PgServer
    port: int


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    path = tmp_path_factory.mktemp("pg") / "pg.duckdb"
    db = duckflock.connect(str(path))
    db.execute("CREATE TABLE events (name VARCHAR, n INTEGER)")
    db.execute("CREATE TABLE live (k VARCHAR, v INTEGER)")
    db.execute(
        "CREATE TABLE kinds (i INTEGER, big BIGINT, small SMALLINT, f DOUBLE, r FLOAT, "
        "d DECIMAL(12,3), t VARCHAR, b BOOLEAN, day DATE, ts TIMESTAMP, tz TIMESTAMPTZ, "
        "iv INTERVAL, u UUID, bin BLOB, j JSON, arr INTEGER[], words VARCHAR[])"
    )
    db.execute(
        "INSERT INTO kinds VALUES (1, 9007199254740993, -7, 1.5, 0.25, -1234.5, 'tab\there', "
        "true, '2024-02-29', '2024-02-29 12:34:56.789', '2024-02-29 12:34:56+00', "
        "INTERVAL '1 month 2 days 03:04:05', '0b4b3b8e-6c4f-4f8e-9d2e-3d2f1c0b9a88', "
        "'\\x00\\xff'::BLOB, '{\"a\": [1, 2]}', [1, NULL, 3], ['a b', NULL, 'c\"d']), "
        "(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
        "NULL, NULL, NULL)"
    )
    db.analysis("per_name", "SELECT name, count(*) AS n FROM events GROUP BY 1", on_change=True)
    db.refresh("per_name")
    db.lock_down()
    settings = ServerSettings(
        tokens={READ: "read", WRITE: "write", ADMIN: "admin"},
        query_row_cap=ROW_CAP,
        query_timeout=5.0,
        queue_timeout=10.0,
    )
    server = PgServer(db, settings, PgSettings(port=0)).start()
    yield Served(db, server, server.port)
    server.stop()
    db.close()


def _until(condition: Any, timeout: float = 10.0) -> None:
    """Wait (bounded) for a condition another thread brings about."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        threading.Event().wait(0.01)


# -- every client: connect, list, query live data, refused statements -----------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_a_client_connects_with_a_token_as_password_and_not_without(
    pg: Served, client: str
) -> None:
    with pytest.raises(Exception, match="password authentication failed") as refused:
        pgclients.connect(client, pg.port, "not-the-token-at-all")
    assert "password authentication failed" in pgclients.message(refused.value)
    with pgclients.connect(client, pg.port, READ) as conn:
        assert conn.query("SELECT 41 + 1 AS answer") == [(42,)]


@pytest.mark.parametrize("client", CLIENTS)
def test_a_client_lists_tables_and_columns(pg: Served, client: str) -> None:
    with pgclients.connect(client, pg.port, READ) as conn:
        tables = conn.query(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'main' ORDER BY 1"
        )
        assert ("events",) in tables and ("kinds",) in tables
        columns = conn.query(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'events' ORDER BY ordinal_position"
        )
        assert columns == [("name",), ("n",)]
        listed = conn.query(  # the way psql's \dt asks
            "SELECT c.relname FROM pg_catalog.pg_class c "
            "LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r','p','') AND n.nspname <> 'pg_catalog' "
            "AND n.nspname !~ '^pg_toast' AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 1"
        )
        assert ("live",) in listed


def test_sqlalchemy_reflects_tables_and_pandas_reads_and_appends(pg: Served) -> None:
    import pandas as pd
    import sqlalchemy as sa

    url = f"postgresql+psycopg://duckflock:{WRITE}@127.0.0.1:{pg.port}/duckflock"
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        inspector = sa.inspect(engine)
        assert {"events", "kinds", "live"} <= set(inspector.get_table_names())
        columns = {c["name"]: c["type"] for c in inspector.get_columns("kinds")}
        assert isinstance(columns["d"], sa.Numeric) and columns["d"].scale == 3
        assert isinstance(columns["tz"], sa.DateTime) and columns["tz"].timezone
        assert isinstance(columns["arr"], sa.ARRAY)
        frame = pd.DataFrame({"name": ["pandas"] * 3, "n": [1, 2, 3]})
        frame.to_sql("events", engine, if_exists="append", index=False)  # through the writer
        back = pd.read_sql("SELECT n FROM events WHERE name = 'pandas' ORDER BY n", engine)
        assert back["n"].tolist() == [1, 2, 3]
    finally:
        engine.dispose()


@pytest.mark.parametrize("client", CLIENTS)
def test_a_client_reads_live_data_while_ingest_runs(pg: Served, client: str) -> None:
    stop = threading.Event()
    committed = [0]  # rows of this client's key acknowledged so far (the writer's own count)

    def writer() -> None:
        while not stop.is_set():
            pg.db.insert("live", [{"k": client, "v": i} for i in range(20)])
            committed[0] += 20

    thread = threading.Thread(target=writer, name=f"pg-test-writer-{client}")
    seen: list[int] = []
    with pgclients.connect(client, pg.port, READ) as conn:
        thread.start()
        try:
            for _ in range(500):
                floor = committed[0]
                count = conn.query(f"SELECT count(*) FROM live WHERE k = '{client}'")[0][0]
                assert count >= floor, "an acknowledged row was not visible"
                seen.append(count)
                if len(set(seen)) >= 4:
                    break
        finally:
            stop.set()
            thread.join(30)
    assert seen == sorted(seen) and len(set(seen)) >= 4, seen


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(
    ("token", "sql"),
    [
        (READ, "DROP TABLE events"),
        (READ, "INSERT INTO events VALUES ('x', 1)"),
        (READ, "SELECT * FROM read_csv('/etc/passwd')"),
        (WRITE, "DELETE FROM events"),
        (WRITE, "INSERT INTO events VALUES ('x', 1) RETURNING *"),
    ],
)
def test_refused_statements_are_clean_errors_and_the_connection_goes_on(
    pg: Served, client: str, token: str, sql: str
) -> None:
    before = pg.db.execute("SELECT count(*) FROM events").fetchone()
    with pgclients.connect(client, pg.port, token) as conn:
        with pytest.raises(Exception, match=r"allowed|admin|write role") as refused:
            conn.query(sql)
        assert pgclients.sqlstate(refused.value) == "42501", refused.value
        assert conn.query("SELECT 1") == [(1,)]
    assert pg.db.execute("SELECT count(*) FROM events").fetchone() == before


# -- types ----------------------------------------------------------------------------------------

EXPECTED_KINDS = (
    1,
    9007199254740993,
    -7,
    1.5,
    0.25,
    decimal.Decimal("-1234.500"),
    "tab\there",
    True,
    dt.date(2024, 2, 29),
    dt.datetime(2024, 2, 29, 12, 34, 56, 789000),
    dt.datetime(2024, 2, 29, 12, 34, 56, tzinfo=dt.UTC),
    uuid.UUID("0b4b3b8e-6c4f-4f8e-9d2e-3d2f1c0b9a88"),
    b"\x00\xff",
    [1, None, 3],
    ["a b", None, 'c"d'],
)
KIND_COLUMNS = "i, big, small, f, r, d, t, b, day, ts, tz, u, bin, arr, words"


def _normal(value: Any) -> Any:
    """One spelling per value across clients (memoryview, str UUIDs, JSON text)."""
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, str) and len(value) == 36 and value.count("-") == 4:
        return uuid.UUID(value)
    return value


@pytest.mark.parametrize("client", ["psycopg", "psycopg-binary", "pg8000", "asyncpg", "adbc"])
def test_every_type_arrives_as_the_same_python_value(pg: Served, client: str) -> None:
    sql = f"SELECT {KIND_COLUMNS} FROM kinds ORDER BY i NULLS LAST"
    if client.startswith("psycopg"):
        with psycopg.connect(pgclients.dsn(pg.port, READ), autocommit=True) as conn:
            rows = conn.execute(sql, binary=client.endswith("binary")).fetchall()
    elif client == "adbc":
        with pgclients.connect(client, pg.port, READ) as adapter:
            assert isinstance(adapter, pgclients.Adbc)
            with adapter.conn.cursor() as cursor:
                cursor.execute(sql)
                table = cursor.fetch_arrow_table()
            assert str(table.schema.field("tz").type) == "timestamp[us, tz=UTC]"
            rows = [tuple(r.values()) for r in table.to_pylist()]
            # ADBC gives numeric as text (Arrow has no arbitrary-precision decimal)
            rows = [
                tuple(decimal.Decimal(v) if i == 5 and v else v for i, v in enumerate(r))
                for r in rows
            ]
    else:
        with pgclients.connect(client, pg.port, READ) as adapter:
            rows = adapter.query(sql)
    assert tuple(_normal(v) for v in rows[0]) == EXPECTED_KINDS
    assert rows[1] == (None,) * len(EXPECTED_KINDS)


@pytest.mark.parametrize("client", ["psycopg", "pg8000", "asyncpg"])
def test_intervals_and_json_arrive_as_the_clients_own_types(pg: Served, client: str) -> None:
    with pgclients.connect(client, pg.port, READ) as conn:
        interval, document = conn.query("SELECT iv, j FROM kinds WHERE i = 1")[0]
    if client == "pg8000":
        parts = (interval.months, interval.days, interval.hours, interval.minutes, interval.seconds)
        assert parts == (1, 2, 3, 4, 5)
    elif client == "psycopg":  # psycopg folds a month into 30 days, as PostgreSQL does
        assert interval == dt.timedelta(days=32, seconds=11045)
    else:
        assert interval == dt.timedelta(days=32, seconds=11045)
    assert document in ({"a": [1, 2]}, '{"a": [1, 2]}')


# -- extended protocol, parameters, COPY ----------------------------------------------------------


def test_psycopg_parameters_in_text_and_binary(pg: Served) -> None:
    with psycopg.connect(pgclients.dsn(pg.port, READ), autocommit=True) as conn:
        for binary in (False, True):
            cursor = conn.cursor(binary=binary)
            row = cursor.execute(
                "SELECT %s::INTEGER + 1, %s || '!', %s::DATE + 1, %s IS NULL, %s::DOUBLE * 2",
                [41, "hi", dt.date(2024, 1, 1), None, 1.25],
            ).fetchone()
            assert row == (42, "hi!", dt.date(2024, 1, 2), True, 2.5)
            found = cursor.execute("SELECT t FROM kinds WHERE i = %s", [1]).fetchall()
            assert found == [("tab\there",)]
        twice = "SELECT %s::INT * 2"
        prepared = [conn.execute(twice, [i], prepare=True).fetchone() for i in range(4)]
        assert prepared == [(0,), (2,), (4,), (6,)]


def test_pg8000_and_asyncpg_parameters(pg: Served) -> None:
    with pgclients.connect("pg8000", pg.port, READ) as p8:
        assert isinstance(p8, pgclients.Pg8000)
        rows = p8.conn.run("SELECT t FROM kinds WHERE i = :i AND b = :b", i=1, b=True)
        assert rows == [["tab\there"]]
    with pgclients.connect("asyncpg", pg.port, READ) as ap:
        assert isinstance(ap, pgclients.Asyncpg)
        fetch = ap.conn.fetch("SELECT $1::INTEGER * 2 AS x, $2::VARCHAR AS y -- described", 21, "z")
        assert [tuple(r) for r in ap.loop.run_until_complete(fetch)] == [(42, "z")]


def test_copy_to_stdout_in_text_csv_and_binary(pg: Served) -> None:
    with psycopg.connect(pgclients.dsn(pg.port, READ), autocommit=True) as conn:
        cursor = conn.cursor()
        with cursor.copy("COPY (SELECT i, t FROM kinds ORDER BY i NULLS LAST) TO STDOUT") as copy:
            text = b"".join(bytes(block) for block in copy)
        assert text == b"1\ttab\\there\n\\N\t\\N\n"
        with cursor.copy("COPY kinds (i) TO STDOUT WITH (FORMAT csv, HEADER)") as copy:
            assert b"".join(bytes(block) for block in copy) == b"i\n1\n\n"
        with cursor.copy("COPY (SELECT i, t FROM kinds) TO STDOUT (FORMAT csv, HEADER)") as copy:
            csv_text = b"".join(bytes(block) for block in copy).decode()
        assert csv_text.splitlines()[0] == "i,t" and "1,tab\there" in csv_text
        binary = "COPY (SELECT i, d, tz FROM kinds WHERE i = 1) TO STDOUT (FORMAT binary)"
        with cursor.copy(binary) as copy:
            copy.set_types(["int4", "numeric", "timestamptz"])
            rows = list(copy.rows())
        assert rows == [(1, decimal.Decimal("-1234.500"), EXPECTED_KINDS[10])]


def test_copy_sends_each_row_as_its_own_copydata_message(pg: Served) -> None:
    """PostgreSQL sends a COPY's rows one CopyData message each, and psycopg's
    ``Copy.rows()`` parses one row from each message: rows batched into one message
    came back as the first row of each batch, the rest silently dropped."""
    query = "SELECT range AS i, 'r' || range AS t FROM range(70000)"  # more than one batch
    with psycopg.connect(pgclients.dsn(pg.port, READ), autocommit=True) as conn:
        expected = conn.execute(query).fetchall()
        cursor = conn.cursor()
        with cursor.copy(f"COPY ({query}) TO STDOUT") as copy:
            copy.set_types(["int8", "text"])
            assert list(copy.rows()) == expected
        with cursor.copy(f"COPY ({query}) TO STDOUT (FORMAT csv, HEADER)") as copy:
            blocks = [bytes(block) for block in copy]
        assert blocks[0] == b"i,t\n"  # the header line, a message of its own
        assert blocks[1:] == [f"{i},{t}\n".encode() for i, t in expected]


def test_copy_goes_a_batch_a_message_when_the_session_asks(pg: Served) -> None:
    """``SET duckflock.copy_messages = batch``: one CopyData message a batch, so a raw
    reader's loop runs once a batch, not a row; the bytes are those sent row by row, in
    each format; another value is refused, and RESET gives one row a message back."""
    query = "SELECT range AS i, 'r' || range AS t, range % 2 = 0 AS b FROM range(15000)"
    forms = ["", "(FORMAT csv, HEADER)", "(FORMAT binary)"]
    with psycopg.connect(pgclients.dsn(pg.port, READ), autocommit=True) as conn:
        cursor = conn.cursor()

        def blocks(options: str) -> list[bytes]:
            with cursor.copy(f"COPY ({query}) TO STDOUT {options}") as copy:
                return [bytes(block) for block in copy]

        by_row = {options: blocks(options) for options in forms}
        assert [len(by_row[f]) for f in forms] == [15000, 15001, 15001]  # binary: + trailer
        conn.execute("SET duckflock.copy_messages = batch")
        assert conn.execute("SHOW duckflock.copy_messages").fetchone() == ("batch",)
        for options in forms:
            batched = blocks(options)
            assert 1 <= len(batched) <= 3, (options, len(batched))
            assert b"".join(batched) == b"".join(by_row[options]), options
        with pytest.raises(psycopg.Error, match="row, batch"):
            conn.execute("SET duckflock.copy_messages = rows")
        conn.execute("RESET duckflock.copy_messages")
        assert len(blocks("")) == 15000


# -- analyses: tables and LISTEN/NOTIFY -----------------------------------------------------------


def test_analyses_are_tables_of_the_analyses_schema(pg: Served) -> None:
    pg.db.insert("events", [{"name": "a", "n": 1}, {"name": "a", "n": 2}, {"name": "b", "n": 3}])
    latest = pg.db.refresh("per_name")
    with pgclients.connect("psycopg", pg.port, READ) as conn:
        rows = conn.query("SELECT name, n FROM analyses.per_name ORDER BY name")
        assert rows == sorted(latest.rows())
        joined = conn.query(
            "SELECT e.name, max(p.n) FROM events e JOIN analyses.per_name p USING (name) "
            "GROUP BY 1 ORDER BY 1"
        )
        assert [name for name, _ in joined] == sorted({name for name, _ in latest.rows()})
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.query("SELECT * FROM analyses.nothing_like_it")


def test_psycopg_listen_receives_each_new_version(pg: Served) -> None:
    with psycopg.connect(pgclients.dsn(pg.port, READ), autocommit=True) as conn:
        conn.execute("LISTEN per_name")
        before = pg.db.result("per_name")
        assert before is not None
        pg.db.insert("events", {"name": "listen", "n": 1})
        newer = pg.db.result("per_name", min_version=before.version + 1, timeout=10)
        assert newer is not None
        note = next(conn.notifies(timeout=10, stop_after=1))
        assert note.channel == "per_name" and int(note.payload) >= newer.version
        conn.execute("UNLISTEN *")
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("LISTEN no_such_analysis")


def test_asyncpg_and_pg8000_listen(pg: Served) -> None:
    async def listen_once() -> str:
        conn = await asyncpg.connect(host="127.0.0.1", port=pg.port, user="u", password=READ)
        got: asyncio.Queue[str] = asyncio.Queue()
        try:
            await conn.add_listener("per_name", lambda *args: got.put_nowait(args[3]))
            await asyncio.to_thread(pg.db.insert, "events", {"name": "async", "n": 1})
            return await asyncio.wait_for(got.get(), 10)
        finally:
            await conn.close()

    import asyncpg

    version = int(asyncio.run(listen_once()))
    assert version >= 2
    with pgclients.connect("pg8000", pg.port, READ) as p8:
        assert isinstance(p8, pgclients.Pg8000)
        p8.conn.run("LISTEN per_name")
        before = pg.db.result("per_name")
        assert before is not None
        pg.db.insert("events", {"name": "pg8000", "n": 1})
        pg.db.result("per_name", min_version=before.version + 1, timeout=10)
        _until(lambda: p8.conn.run("SELECT 1") and bool(p8.conn.notifications))
        _, channel, payload = p8.conn.notifications.popleft()
        assert channel == "per_name" and int(payload) > before.version


# -- write and admin roles ------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_the_write_role_inserts_through_the_writer_acknowledged_after_commit(
    pg: Served, client: str
) -> None:
    key = f"written by {client}"
    with pgclients.connect(client, pg.port, WRITE) as conn:
        conn.query(f"INSERT INTO events (name, n) VALUES ('{key}', 1), ('{key}', 2)")
        # acknowledged means committed: another cursor sees the rows at once
        assert pg.db.execute("SELECT count(*) FROM events WHERE name = ?", [key]).fetchone() == (2,)
        conn.query(f"INSERT INTO events SELECT '{key}', n * 10 FROM events WHERE name = '{key}'")
        total = pg.db.execute("SELECT sum(n) FROM events WHERE name = ?", [key]).fetchone()
        assert total == (33,)


def test_insert_tags_parameters_and_bad_rows(pg: Served) -> None:
    with psycopg.connect(pgclients.dsn(pg.port, WRITE), autocommit=False) as conn:
        cursor = conn.cursor()
        cursor.execute("INSERT INTO events (name, n) VALUES (%s, %s)", ["tagged", 7])
        assert cursor.rowcount == 1 and cursor.statusmessage == "INSERT 0 1"
        cursor.executemany("INSERT INTO events VALUES (%s, %s)", [("many", i) for i in range(5)])
        conn.commit()
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            cursor.execute("INSERT INTO events (name, n) VALUES ('bad', 'not a number')")
        conn.rollback()
        notices: list[str] = []
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        cursor.execute("INSERT INTO events (name, n) VALUES ('kept', 1)")
        conn.rollback()  # every statement committed on its own, and the client is told
        assert any("ROLLBACK undid nothing" in n for n in notices), notices
        assert cursor.execute("SELECT count(*) FROM events WHERE name = 'many'").fetchone() == (5,)
    assert pg.db.execute("SELECT count(*) FROM events WHERE name = 'bad'").fetchone() == (0,)
    assert pg.db.execute("SELECT count(*) FROM events WHERE name = 'kept'").fetchone() == (1,)
    # the port's queries and look-ups (the columns of an INSERT without a list) ran on
    # duckflock's own cursors: the served database still trusts its kept catalogue
    assert pg.db._cursors.raw_handed_out is False


def test_a_list_of_strings_inserts_into_an_array_column(pg: Served) -> None:
    """psycopg sends a ``list[str]`` parameter as text of unknown type (``{a,"b c"}``):
    bound for an array column it is read as PostgreSQL reads it there, an array."""
    pg.db.execute("CREATE TABLE tagged (name VARCHAR, tags VARCHAR[], n INTEGER[])")
    rows = [
        ("one", ["a", "b c", None, 'q"x', "{}"], [1, 2]),
        ("two", [], None),
        ("{not an array}", None, [3]),  # a plain text column keeps its braces
    ]
    with psycopg.connect(pgclients.dsn(pg.port, WRITE), autocommit=True) as conn:
        for binary in (False, True):
            cursor = conn.cursor(binary=binary)
            cursor.executemany("INSERT INTO tagged VALUES (%s, %s, %s)", rows)
            cursor.execute("INSERT INTO tagged (tags, name) VALUES (%s, 'named')", [["z"]])
    got = pg.db.execute("SELECT name, tags, n FROM tagged ORDER BY rowid").fetchall()
    assert got == [*rows, ("named", ["z"], None)] * 2


def test_a_list_of_strings_matches_with_any_and_all_as_in_postgresql(pg: Served) -> None:
    """``col = ANY(%s)`` with a ``list[str]`` (psycopg: text of unknown type) failed
    ("UNNEST not supported here"); PostgreSQL reads the parameter as an array there, as
    after ``ALL`` and ``SOME``, and as ``%s::VARCHAR[]`` does. ``col = %s`` compares
    text with the literal's text in PostgreSQL too: no row."""
    pg.db.execute("CREATE TABLE picked (name VARCHAR, tags VARCHAR[])")
    pg.db.execute("INSERT INTO picked VALUES ('a', ['x']), ('b c', ['y', 'z']), ('d', [])")
    with psycopg.connect(pgclients.dsn(pg.port, WRITE), autocommit=True) as conn:
        for binary in (False, True):
            cursor = conn.cursor(binary=binary)
            sql = "SELECT name FROM picked WHERE name {} ORDER BY name"
            assert cursor.execute(sql.format("= ANY(%s)"), [["a", "b c"]]).fetchall() == [
                ("a",),
                ("b c",),
            ]
            assert cursor.execute(sql.format("<> all (%s)"), [["a"]]).fetchall() == [
                ("b c",),
                ("d",),
            ]
            assert cursor.execute(sql.format("= SOME ( %s )"), [[]]).fetchall() == []
            assert cursor.execute(sql.format("= %s"), [["a"]]).fetchall() == []
            tags = "SELECT name FROM picked WHERE tags = %s::VARCHAR[]"
            assert cursor.execute(tags, [["y", "z"]]).fetchall() == [("b c",)]


def test_the_admin_role_runs_ddl_and_dml(pg: Served) -> None:
    with psycopg.connect(pgclients.dsn(pg.port, ADMIN), autocommit=True) as conn:
        conn.execute("CREATE TABLE scratch (x INTEGER)")
        conn.execute("INSERT INTO scratch SELECT range FROM range(5)")
        assert conn.execute("UPDATE scratch SET x = x + 1 WHERE x > 1").rowcount == 3
        assert conn.execute("DELETE FROM scratch WHERE x = 0").rowcount == 1
        assert conn.execute("SELECT sum(x) FROM scratch").fetchone() == (1 + 3 + 4 + 5,)
        conn.execute("DROP TABLE scratch")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # the lockdown holds for admin
            conn.execute("COPY events TO '/tmp/out.csv'")


# -- limits: caps, time limit, cancel, disconnects ------------------------------------------------


def test_the_row_cap_cuts_a_result_with_a_warning(pg: Served) -> None:
    notices: list[str] = []
    with psycopg.connect(pgclients.dsn(pg.port, READ), autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        rows = conn.execute("SELECT range FROM range(100000)").fetchall()
    assert len(rows) == ROW_CAP
    assert any("row cap" in n for n in notices), notices


@pytest.mark.parametrize("options", ["", "(FORMAT csv)", "(FORMAT binary)"])
def test_the_row_cap_cuts_a_copy_with_a_warning(pg: Served, options: str) -> None:
    """COPY TO STDOUT (ADBC's path) is cut at the row cap with the SELECT's warning (it
    was cut silently); a result of exactly the cap is whole, and warns of nothing."""
    notices: list[str] = []
    with psycopg.connect(pgclients.dsn(pg.port, READ), autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        for asked in (ROW_CAP + 1, ROW_CAP):
            notices.clear()
            cursor = conn.cursor()
            with cursor.copy(
                f"COPY (SELECT range FROM range({asked})) TO STDOUT {options}"
            ) as copy:
                for _ in copy:  # read to its end
                    pass
            assert cursor.rowcount == ROW_CAP
            cut = [n for n in notices if "row cap" in n]
            assert len(cut) == (asked > ROW_CAP), (asked, notices)


def test_the_time_limit_and_cancel_stop_a_query_with_57014(pg: Served) -> None:
    slow = "SELECT count(*) FROM range(100000000) a, range(1000000) b"
    with psycopg.connect(pgclients.dsn(pg.port, READ), autocommit=True) as conn:
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled, match="limit"):
            conn.execute(slow)
        assert time.monotonic() - started < 30
        # cancel_safe: the old cancel() keeps the GIL while it waits, and this server
        # runs in the same process
        canceller = threading.Thread(
            target=lambda: (_until(lambda: pg.server.guard.running > 0), conn.cancel_safe())
        )
        canceller.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled, match="user request"):
            conn.execute(slow)
        canceller.join(10)
        assert time.monotonic() - started < 4.5  # before the 5 s limit: it was the cancel
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_client_leaving_mid_result_frees_its_query(pg: Served) -> None:
    cursors = pg.db.open_cursors
    for _ in range(3):
        conn = psycopg.connect(pgclients.dsn(pg.port, READ), autocommit=True)
        stream = conn.cursor().stream("SELECT range, repeat('x', 100) FROM range(10000000)")
        next(stream)
        # the socket goes away under the client, mid-result
        under = socket.socket(fileno=conn.pgconn.socket)
        under.shutdown(socket.SHUT_RDWR)
        under.detach()  # the descriptor stays psycopg's
        with pytest.raises(psycopg.OperationalError):
            for _ in stream:
                pass
        conn.close()
    _until(lambda: pg.server.guard.running == 0 and pg.db.open_cursors <= cursors + 1)
    with pgclients.connect("psycopg", pg.port, READ) as conn:
        assert conn.query("SELECT count(*) FROM kinds") == [(2,)]


def test_protocol_garbage_and_too_many_connections(pg: Served) -> None:
    for junk in (b"\x00\x00\x00\x04", struct.pack("!i", 2**30), b"GET / HTTP/1.1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", pg.port), timeout=10) as raw:
            raw.sendall(junk)
            answer = b""
            with contextlib.suppress(ConnectionError):
                while chunk := raw.recv(4096):  # until the server closes the connection
                    answer += chunk
            assert answer == b"" or answer.startswith(b"E"), answer
    # over max_connections: refused at once with 53300, and the others go on; a broken
    # message after start-up (tokenless here: no password) is 08P01, then the end
    small = PgServer(pg.db, ServerSettings(), PgSettings(port=0, max_connections=1)).start()
    try:
        with socket.create_connection(("127.0.0.1", small.port), timeout=10) as raw:
            options = b"user\x00u\x00\x00"
            raw.sendall(struct.pack("!ii", 8 + len(options), 196608) + options)
            answer = b""
            while not answer.endswith(b"Z\x00\x00\x00\x05I"):  # ReadyForQuery
                answer += raw.recv(4096)
            raw.sendall(b"P" + struct.pack("!i", 13) + b"\x00SELECT 1")  # no end to the SQL
            answer = b""
            with contextlib.suppress(ConnectionError):
                while chunk := raw.recv(4096):
                    answer += chunk
            assert answer.startswith(b"E") and b"08P01" in answer, answer
        _until(lambda: small.connections == 0)  # its thread has ended
        with pgclients.connect("psycopg", small.port, "") as first:
            with pytest.raises(psycopg.OperationalError, match="too many connections"):
                psycopg.connect(pgclients.dsn(small.port, READ))
            assert first.query("SELECT 2") == [(2,)]
    finally:
        small.stop()
    with pgclients.connect("psycopg", pg.port, READ) as conn:
        assert conn.query("SELECT 1") == [(1,)]


def test_cleartext_needs_tls_and_settings_are_validated(tmp_path: Path) -> None:
    from duckflock.server.serve import ServeConfig

    with pytest.raises(ValueError, match="certificate"):
        PgSettings(port=0, cleartext=True)
    with pytest.raises(ValueError, match="true or false"):
        PgSettings(port=0, require_tls="yes")  # type: ignore[arg-type]
    config = tmp_path / "duckflock.toml"
    config.write_text("[pg]\nport = 5433\nsurprise = 1\n")
    with pytest.raises(ValueError, match="unknown \\[pg\\] options"):
        ServeConfig.load(config)
    config.write_text("[pg]\nport = 5433\ncertfile = 'x.pem'\n")
    assert ServeConfig.load(config).pg == {"port": 5433, "certfile": "x.pem"}
    with pytest.raises(ValueError, match="port"):
        PgSettings(port=70000)
    with pytest.raises(ValueError, match="max_connections"):
        PgSettings(port=0, max_connections=0)


# -- the HTTP suite's lockdown probes, over this port ----------------------------------------------

# tests/test_server.py and tests/test_server_hardening.py refuse these on /v1/query
LOCKDOWN_PROBES = [
    "UPDATE events SET n = 1",
    "DELETE FROM events",
    "CREATE TABLE evil (x INTEGER)",
    "DROP TABLE events",
    "ATTACH 'other.duckdb' AS other",
    "COPY events TO 'out.csv'",
    "COPY events FROM '/etc/passwd'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "PRAGMA version",
    "CALL checkpoint()",
    "EXPLAIN SELECT 1",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/passwd')",
    "SELECT * FROM read_text('pg.duckdb')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM query('SELECT 1')",
    "SELECT * FROM query_table('events')",
    "SELECT * FROM checkpoint()",
    "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))",
    "SELECT path FROM duckdb_databases()",
    "SELECT * FROM duckdb_databases",
    "SELECT * FROM pragma_database_list",
    "SELECT value FROM duckdb_settings() WHERE name = 'temp_directory'",
    "SELECT current_setting('temp_directory')",
    "SELECT * FROM duckdb_temporary_files()",
    "SELECT nextval('s')",
    "SELECT getenv('HOME')",
    "COPY (SELECT * FROM read_csv('/etc/passwd')) TO STDOUT",
    "INSERT INTO events SELECT * FROM read_csv('/etc/passwd')",
    "WITH x AS (SELECT 1) SELECT * FROM x; DROP TABLE events",
]


@pytest.mark.parametrize("sql", LOCKDOWN_PROBES)
@pytest.mark.parametrize("token", [READ, WRITE])
def test_the_http_lockdown_probes_are_refused_here_too(pg: Served, token: str, sql: str) -> None:
    before = pg.db.execute("SELECT count(*) FROM events").fetchone()
    with psycopg.connect(pgclients.dsn(pg.port, token), autocommit=True) as conn:
        for prepare in (False, True):  # the simple and the extended protocol
            with pytest.raises(psycopg.Error) as refused:
                conn.execute(sql, prepare=prepare) if prepare else conn.execute(sql)
            # refused (42501), or a prepared statement of two statements (42000)
            assert refused.value.sqlstate in ("42501", "42000"), refused.value
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pg.db.execute("SELECT count(*) FROM events").fetchone() == before
    evil = "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'evil'"
    assert pg.db.execute(evil).fetchone() == (0,)


# writes that name duckflock's own schema anywhere: POST /v1/sql refuses them
# (project.check_statement), so the Postgres port's INSERT path must too
SCHEMA_NAMING_INSERTS = [
    "INSERT INTO events SELECT name, 1 FROM duckflock.analyses",
    "INSERT INTO events SELECT 1 AS duckflock, 2",
]


def test_an_insert_naming_the_project_schema_is_refused_as_over_http(pg: Served) -> None:
    before = pg.db.execute("SELECT count(*) FROM events").fetchone()
    http = TestClient(create_app(pg.db, service=pg.server.service))  # one app per service
    for sql in SCHEMA_NAMING_INSERTS:
        answer = http.post(
            "/v1/sql", json={"sql": sql}, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert answer.status_code == 403, answer.text
        for token in (WRITE, ADMIN):
            with psycopg.connect(pgclients.dsn(pg.port, token), autocommit=True) as conn:
                for prepare in (False, True):  # the simple and the extended protocol
                    with pytest.raises(psycopg.Error) as refused:
                        conn.execute(sql, prepare=prepare) if prepare else conn.execute(sql)
                    assert refused.value.sqlstate == "42501", refused.value
                    assert answer.json()["error"]["message"] in str(refused.value)
                assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pg.db.execute("SELECT count(*) FROM events").fetchone() == before


def test_settings_and_transactions_are_the_sessions_own(pg: Served) -> None:
    threads = pg.db.execute("SELECT current_setting('threads')").fetchone()
    with psycopg.connect(pgclients.dsn(pg.port, ADMIN), autocommit=True) as conn:
        conn.execute("SET threads = 1")  # a session setting here: DuckDB's stays locked
        assert conn.execute("SHOW threads").fetchone() == ("1",)
        assert ("n", "INTEGER") in [r[:2] for r in conn.execute("SHOW events").fetchall()]
        conn.execute("RESET threads")
        with pytest.raises(psycopg.errors.UndefinedTable):  # no such setting now: a table?
            conn.execute("SHOW threads")
        conn.execute("SET application_name = 'probe'")
        assert conn.execute("SHOW application_name").fetchone() == ("probe",)
        conn.execute("SET myapp.tag TO 'x y'")  # a custom setting, as PostgreSQL keeps it
        assert conn.execute("SHOW myapp.tag").fetchone() == ("x y",)
        conn.execute("RESET myapp.tag")
        with pytest.raises(psycopg.Error):  # gone: no such setting (nor table)
            conn.execute("SHOW myapp.tag")
        assert conn.execute("SHOW TRANSACTION ISOLATION LEVEL").fetchone() == ("read committed",)
        conn.execute("BEGIN TRANSACTION")
        conn.execute("ROLLBACK")
        results = conn.execute("SELECT 1; SELECT 2")  # each statement of a query string runs
        assert results.fetchall() == [(1,)] and results.nextset() and results.fetchall() == [(2,)]
    assert pg.db.execute("SELECT current_setting('threads')").fetchone() == threads


@pytest.mark.parametrize(
    "bad",
    [
        "SELEC 1",  # DuckDB's parser
        "NOTIFY somewhere",  # refused by duckflock before DuckDB sees it
        f"SET application_name = '{'y' * 100_000}'",  # duckflock's limit on a setting
        "SELECT * FROM no_such_table",  # refused by DuckDB
    ],
    ids=["parser", "notify", "setting", "table"],
)
def test_a_failed_statement_aborts_the_transaction_until_it_ends(pg: Served, bad: str) -> None:
    """As in PostgreSQL: after any error inside BEGIN — duckflock's own checks as well
    as DuckDB's — every statement gets 25P02 until ROLLBACK (or COMMIT, which answers
    ROLLBACK); both the simple and the extended protocol."""
    with psycopg.connect(pgclients.dsn(pg.port, ADMIN)) as conn:  # psycopg sends BEGIN
        assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.Error) as failed:
            conn.execute(bad)
        assert not isinstance(failed.value, psycopg.errors.InFailedSqlTransaction)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        for extended in (False, True):
            with pytest.raises(psycopg.errors.InFailedSqlTransaction):
                conn.execute("SELECT 1", prepare=extended)
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.cursor().copy("COPY (SELECT 1) TO STDOUT").__enter__()
        conn.rollback()
        assert conn.execute("SELECT 2").fetchone() == (2,)
        with pytest.raises(psycopg.Error):
            conn.execute(bad)
        conn.commit()  # COMMIT of a failed block: PostgreSQL rolls back
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.execute("SELECT 3").fetchone() == (3,)


KILLED_CLIENT = """
import sys
sys.path.insert(0, sys.argv[1])
import pgclients
conn = pgclients.connect(sys.argv[2], int(sys.argv[3]), sys.argv[4])
print("connected", flush=True)
conn.query("SELECT range, repeat('x', 10000) AS pad FROM range(15000)")
"""


@pytest.mark.parametrize("client", CLIENTS)
def test_a_client_killed_mid_result_leaves_the_server_serving(pg: Served, client: str) -> None:
    cursors = pg.db.open_cursors
    tests = str(Path(__file__).parent)
    args = [sys.executable, "-c", KILLED_CLIENT, tests, client, str(pg.port), READ]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "connected\n"
        _until(lambda: pg.server.guard.running > 0 or child.poll() is not None)
        child.kill()  # mid-result: 150 MB the client was still reading
    finally:
        child.kill()
        child.wait(30)
        if child.stdout is not None:
            child.stdout.close()
    _until(lambda: pg.server.guard.running == 0 and pg.db.open_cursors <= cursors + 1)
    with pgclients.connect(client, pg.port, READ) as conn:
        assert conn.query("SELECT count(*) FROM kinds") == [(2,)]


def test_every_error_class_declares_a_known_sqlstate_and_the_port_sends_it() -> None:
    """The SQLSTATE lives on the error class (beside ``http_status``); the port's
    mapping reads it, and psycopg knows every code (a typo would be a made-up class)."""
    import inspect

    from duckflock import errors
    from duckflock.server.pgwire.messages import sqlstate

    classes = [
        cls
        for cls in vars(errors).values()
        if inspect.isclass(cls) and issubclass(cls, errors.DuckflockError)
    ]
    assert len(classes) > 30
    for cls in classes:
        assert psycopg.errors.lookup(cls.sqlstate).__name__, cls
        exc = cls.__new__(cls)
        if isinstance(exc, errors.RowRejectedError):
            exc.cause = None
        assert sqlstate(exc) == cls.sqlstate, cls
    assert errors.QueryTimeoutError.sqlstate == "57014"
    assert errors.ServerBusyError.sqlstate == "53300"
    rejected = errors.RowRejectedError.__new__(errors.RowRejectedError)
    rejected.cause = errors.ConversionError("bad")
    assert sqlstate(rejected) == "22P02"  # the row's own fault, not 23000


def test_rollback_to_savepoint_recovers_a_failed_block_and_keeps_it(pg: Served) -> None:
    """ROLLBACK TO SAVEPOINT is how a client recovers from an error inside BEGIN
    (psycopg's nested transaction() does it): the block goes on, it is not ended."""
    with psycopg.connect(pgclients.dsn(pg.port, ADMIN)) as conn:
        with conn.transaction():
            conn.execute("SELECT 1")
            with pytest.raises(psycopg.Error), conn.transaction():
                conn.execute("SELECT * FROM no_such_table")
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            assert conn.execute("SELECT 2").fetchone() == (2,)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        conn.execute("BEGIN")
        with pytest.raises(psycopg.Error):
            conn.execute("SELECT * FROM no_such_table")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("RELEASE SAVEPOINT nowhere")  # (PostgreSQL refuses it too)
        conn.execute("ROLLBACK TO SAVEPOINT somewhere")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.execute("ROLLBACK")
