"""The Postgres port against a hostile or careless client: its bounds (one start-up
deadline, query slots given back by suspended portals and by clients that stop reading,
the byte cap on COPY), and values PostgreSQL spells its own way (infinite dates, booleans,
literals the catalog rewrites must leave alone)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import duckflock
import pgclients
from duckflock.server.pgwire import PgServer, PgSettings, types
from duckflock.server.pgwire.compat import rewrite, split
from duckflock.server.pgwire.scram import ScramKeys
from duckflock.server.settings import ServerSettings


@pytest.fixture
def db(tmp_path: Path) -> Iterator[duckflock.Database]:
    database = duckflock.connect(str(tmp_path / "limits.duckdb"))
    database.lock_down()
    yield database
    database.close()


def _message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _read_until(sock: socket.socket, end: bytes) -> bytes:
    answer = b""
    while not answer.endswith(end):
        chunk = sock.recv(4096)
        assert chunk, f"the server closed the connection: {answer!r}"
        answer += chunk
    return answer


def test_a_start_up_packet_trickled_byte_by_byte_is_cut_at_the_startup_timeout(
    db: duckflock.Database,
) -> None:
    server = PgServer(db, ServerSettings(), PgSettings(port=0, startup_timeout=1.0)).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            raw.sendall(struct.pack("!i", 1000))  # a start-up packet that never ends
            started, closed = time.monotonic(), False
            pace = threading.Event()
            while time.monotonic() - started < 8:  # one byte every 0.2 s: each recv is quick
                try:
                    raw.sendall(b"\x01")
                except OSError:
                    closed = True
                    break
                pace.wait(0.2)  # the attacker's pace, not a synchronisation
            assert closed, "a client trickling its start-up packet kept its connection"
            assert time.monotonic() - started < 5  # the 1 s deadline, with a wide margin
        deadline = time.monotonic() + 10
        while server.connections and time.monotonic() < deadline:
            pace.wait(0.01)
        assert server.connections == 0
    finally:
        server.stop()


def test_a_suspended_portal_gives_its_query_slot_back_at_the_time_limit(
    db: duckflock.Database,
) -> None:
    settings = ServerSettings(query_timeout=1.0, concurrency=1, queue_timeout=8.0)
    server = PgServer(db, settings, PgSettings(port=0)).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            options = b"user\x00u\x00\x00"
            raw.sendall(struct.pack("!ii", 8 + len(options), 196608) + options)
            _read_until(raw, b"Z\x00\x00\x00\x05I")
            # one row of a long result, then neither Sync nor Close: the portal stays open
            raw.sendall(
                _message(b"P", b"s\x00SELECT * FROM range(1000000)\x00\x00\x00")
                + _message(b"B", b"p\x00s\x00\x00\x00\x00\x00\x00\x00")
                + _message(b"E", b"p\x00\x00\x00\x00\x01")
                + _message(b"H")
            )
            _read_until(raw, b"s\x00\x00\x00\x04")  # PortalSuspended
            # the only slot is the portal's until its 1 s limit, then another client's
            started = time.monotonic()
            with pgclients.connect("psycopg", server.port, "") as other:
                assert other.query("SELECT 2") == [(2,)]
            assert time.monotonic() - started < 6
            # the expired portal says so when the client comes back to it
            raw.sendall(_message(b"E", b"p\x00\x00\x00\x00\x01") + _message(b"S"))
            answer = _read_until(raw, b"Z\x00\x00\x00\x05I")
            assert answer.startswith(b"E") and b"57014" in answer, answer
    finally:
        server.stop()


def test_psycopg_still_reads_a_result_in_pieces(db: duckflock.Database) -> None:
    settings = ServerSettings(query_timeout=5.0, concurrency=1)
    server = PgServer(db, settings, PgSettings(port=0)).start()
    try:
        with psycopg.connect(pgclients.dsn(server.port, ""), autocommit=True) as conn:
            rows = conn.execute("SELECT * FROM range(50000)").fetchall()
            assert len(rows) == 50000
    finally:
        server.stop()


def test_execute_with_a_negative_row_limit_sends_every_row(db: duckflock.Database) -> None:
    server = PgServer(db, ServerSettings(), PgSettings(port=0)).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            options = b"user\x00u\x00\x00"
            raw.sendall(struct.pack("!ii", 8 + len(options), 196608) + options)
            _read_until(raw, b"Z\x00\x00\x00\x05I")
            raw.sendall(  # PostgreSQL reads a max_rows of 0 or less as "no limit"
                _message(b"P", b"s\x00SELECT * FROM range(3)\x00\x00\x00")
                + _message(b"B", b"p\x00s\x00\x00\x00\x00\x00\x00\x00")
                + _message(b"E", b"p\x00" + struct.pack("!i", -1))
                + _message(b"S")
            )
            answer = _read_until(raw, b"Z\x00\x00\x00\x05I")
            assert b"SELECT 3\x00" in answer and b"E\x00" not in answer, answer
    finally:
        server.stop()


def test_copy_to_stdout_is_cut_at_the_byte_cap(db: duckflock.Database) -> None:
    settings = ServerSettings(query_byte_cap=1_000_000)
    server = PgServer(db, settings, PgSettings(port=0)).start()
    try:
        with psycopg.connect(pgclients.dsn(server.port, ""), autocommit=True) as conn:
            notes: list[str] = []
            conn.add_notice_handler(lambda diag: notes.append(diag.message_primary or ""))
            copied = 0
            sql = "COPY (SELECT repeat('x', 1000) FROM range(50000)) TO STDOUT"
            with conn.cursor().copy(sql) as copy:
                for chunk in copy:
                    copied += len(chunk)
            # 50 MB asked for: a few batches past the 1 MB cap at most (2,048 rows a batch)
            assert 1_000_000 < copied < 10_000_000
            assert any("byte cap" in note for note in notes), notes
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()


def test_one_connection_holds_at_most_per_client_suspended_results(
    db: duckflock.Database,
) -> None:
    settings = ServerSettings(concurrency=3, per_client=2, queue_timeout=8.0)
    server = PgServer(db, settings, PgSettings(port=0)).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            options = b"user\x00u\x00\x00"
            raw.sendall(struct.pack("!ii", 8 + len(options), 196608) + options)
            _read_until(raw, b"Z\x00\x00\x00\x05I")
            parse = _message(b"P", b"s\x00SELECT * FROM range(1000000)\x00\x00\x00")
            raw.sendall(parse)
            for portal in (b"p1", b"p2"):
                raw.sendall(
                    _message(b"B", portal + b"\x00s\x00\x00\x00\x00\x00\x00\x00")
                    + _message(b"E", portal + b"\x00\x00\x00\x00\x01")
                    + _message(b"H")
                )
                _read_until(raw, b"s\x00\x00\x00\x04")  # PortalSuspended
            raw.sendall(
                _message(b"B", b"p3\x00s\x00\x00\x00\x00\x00\x00\x00")
                + _message(b"E", b"p3\x00\x00\x00\x00\x01")
                + _message(b"H")
            )
            answer = b""
            while b"53300" not in answer:
                chunk = raw.recv(4096)
                assert chunk, answer
                answer += chunk
            # the third slot is left for everyone else, at once
            started = time.monotonic()
            with pgclients.connect("psycopg", server.port, "") as other:
                assert other.query("SELECT 2") == [(2,)]
            assert time.monotonic() - started < 4
    finally:
        server.stop()


def test_a_client_that_stops_reading_gives_its_slot_back_at_the_time_limit(
    db: duckflock.Database,
) -> None:
    settings = ServerSettings(query_timeout=1.0, concurrency=1, queue_timeout=8.0)
    server = PgServer(db, settings, PgSettings(port=0)).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            options = b"user\x00u\x00\x00"
            raw.sendall(struct.pack("!ii", 8 + len(options), 196608) + options)
            _read_until(raw, b"Z\x00\x00\x00\x05I")
            # ~100 MB asked for, and never read: the server's sendall fills the buffers
            raw.sendall(_message(b"Q", b"SELECT repeat('x', 1000) FROM range(100000)\x00"))
            started = time.monotonic()
            with pgclients.connect("psycopg", server.port, "") as other:
                assert other.query("SELECT 2") == [(2,)]
            assert time.monotonic() - started < 6
    finally:
        server.stop()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'version()' AS s",
        "SELECT 'OPERATOR(pg_catalog.~)' AS s",
        'SELECT 1 AS "pg_get_userbyid(x)"',
        "SELECT 'x::regclass' AS s",
        "CALL pragma_version()",
    ],
)
def test_catalog_rewrites_leave_literals_names_and_other_functions_alone(sql: str) -> None:
    assert rewrite(sql) == sql


def test_catalog_rewrites_still_apply_to_client_queries() -> None:
    assert "duckflock" in rewrite("SELECT version()")
    # PostgreSQL's ~ finds its pattern anywhere: DuckDB's ~ must match all of the text
    assert rewrite("SELECT c.relname OPERATOR(pg_catalog.~) '^(x)$' COLLATE \"default\"") == (
        "SELECT c.relname ~ '(?s).*(?:^(x)$).*'"
    )


def test_a_semicolon_inside_quotes_does_not_split_a_set_or_listen() -> None:
    assert split("SET application_name = 'a;b'") == ["SET application_name = 'a;b'"]
    assert split("LISTEN \"x;y\"; SELECT ';'") == ['LISTEN "x;y"', " SELECT ';'"]
    assert split("SET a = 1; SET b = 2;") == ["SET a = 1", " SET b = 2"]


def _rows(answer: bytes) -> list[list[bytes | None]]:
    """The DataRow messages of a reply, as raw field values."""
    rows, at = [], 0
    while at < len(answer):
        kind, size = answer[at : at + 1], struct.unpack("!i", answer[at + 1 : at + 5])[0]
        body, at = answer[at + 5 : at + 1 + size], at + 1 + size
        if kind == b"D":
            fields, pos = [], 2
            for _ in range(struct.unpack("!h", body[:2])[0]):
                length = struct.unpack("!i", body[pos : pos + 4])[0]
                pos += 4
                fields.append(None if length < 0 else body[pos : pos + length])
                pos += max(length, 0)
            rows.append(fields)
    return rows


def test_infinite_and_far_dates_and_timestamps_arrive_as_postgresql_sends_them(
    db: duckflock.Database,
) -> None:
    sql = (
        b"SELECT d, t, tz, tn FROM (VALUES "
        b"('infinity'::DATE, 'infinity'::TIMESTAMP, 'infinity'::TIMESTAMPTZ, "
        b"'infinity'::TIMESTAMP_NS), "
        b"('-infinity', '-infinity', '-infinity', '-infinity'), "
        b"('10000-01-01', '10000-01-01', '2024-01-01 00:00:00+00', '2024-01-01'), "
        b"(NULL, NULL, NULL, NULL)) AS v(d, t, tz, tn)"
    )
    server = PgServer(db, ServerSettings(), PgSettings(port=0)).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            options = b"user\x00u\x00\x00"
            raw.sendall(struct.pack("!ii", 8 + len(options), 196608) + options)
            _read_until(raw, b"Z\x00\x00\x00\x05I")
            raw.sendall(_message(b"Q", sql + b"\x00"))
            text = _rows(_read_until(raw, b"Z\x00\x00\x00\x05I"))
            assert text[0] == [b"infinity"] * 4
            assert text[1] == [b"-infinity"] * 4
            assert text[2][:2] == [b"10000-01-01", b"10000-01-01 00:00:00"]
            assert text[3] == [None] * 4
            raw.sendall(  # binary: PostgreSQL's infinities are the integer type's extremes
                _message(b"P", b"\x00" + sql + b"\x00\x00\x00")
                + _message(b"B", b"\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01")
                + _message(b"E", b"\x00\x00\x00\x00\x00")
                + _message(b"S")
            )
            binary = _rows(_read_until(raw, b"Z\x00\x00\x00\x05I"))
            assert binary[0] == [struct.pack("!i", 2**31 - 1)] + [struct.pack("!q", 2**63 - 1)] * 3
            assert binary[1] == [struct.pack("!i", -(2**31))] + [struct.pack("!q", -(2**63))] * 3
            assert binary[2][0] == struct.pack("!i", 2932897 - 10957)  # 10000-01-01
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("oid", "binary", "value", "expected"),
    [
        (16, False, b"maybe", None),  # not a boolean: refused, not false
        (16, False, b" Of ", False),
        (16, False, b"ye", True),
        (1082, True, struct.pack("!i", 2**31 - 1), "infinity"),
        (1082, True, struct.pack("!i", -(2**31)), "-infinity"),
        (1114, True, struct.pack("!q", 2**63 - 1), "infinity"),
        (1184, True, struct.pack("!q", -(2**63)), "-infinity"),
    ],
)
def test_parameters_postgresql_spells_its_own_way(
    oid: int, binary: bool, value: bytes, expected: object
) -> None:
    if expected is None:
        with pytest.raises(ValueError, match="boolean"):
            types.decode_param(oid, binary, value)
    else:
        assert types.decode_param(oid, binary, value) == expected


@pytest.mark.parametrize("final", [b"\xff\xfe", b"p=AAAA,r={nonce}", b"r={nonce}"])
def test_a_garbled_scram_final_message_is_a_failed_login(final: bytes) -> None:
    exchange = ScramKeys({"read-token-0123456789": "read"}).exchange()
    server_first = exchange.server_first(b"n,,n=,r=abcdefgh").decode()
    nonce = server_first.split(",")[0][2:]
    assert exchange.server_final(final.replace(b"{nonce}", nonce.encode())) is None


def _until(condition: Any, timeout: float = 10.0) -> None:
    """Wait (bounded) for a condition the server's threads bring about."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        threading.Event().wait(0.01)


def test_connections_in_start_up_have_their_own_budget(db: duckflock.Database) -> None:
    # sockets that never start up counted against max_connections: a few re-opened every
    # startup_timeout locked out every login; and 53300 was sent before the client's first
    # packet was read (psycopg: "server sent an error response during SSL exchange")
    settings = PgSettings(port=0, max_connections=2, max_startups=3, max_startups_per_peer=3)
    server = PgServer(db, ServerSettings(), settings).start()
    silent: list[socket.socket] = []
    try:
        for _ in range(2):
            silent.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        _until(lambda: server.connections == 2)
        dsn = pgclients.dsn(server.port, "x", sslmode="prefer")  # asks for TLS first
        with psycopg.connect(dsn) as first:  # was refused: 2 sockets open, max_connections 2
            assert first.execute("SELECT 1").fetchone() == (1,)
            silent.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
            _until(lambda: server.connections == 4)
            with pytest.raises(psycopg.OperationalError) as refused:
                psycopg.connect(dsn)  # the start-up budget is full
            assert "too many connections starting up" in str(refused.value)
            assert "SSL" not in str(refused.value)
            silent.pop().close()
            _until(lambda: server.connections == 3)
            with psycopg.connect(dsn) as second:
                assert second.execute("SELECT 2").fetchone() == (2,)
                with pytest.raises(psycopg.OperationalError, match="too many connections to"):
                    psycopg.connect(dsn)  # max_connections
            assert first.execute("SELECT 3").fetchone() == (3,)
    finally:
        for sock in silent:
            sock.close()
        server.stop()


def test_one_peer_cannot_take_the_whole_start_up_budget(db: duckflock.Database) -> None:
    settings = PgSettings(port=0, max_startups=4, max_startups_per_peer=2)
    server = PgServer(db, ServerSettings(), settings).start()
    silent = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(2)]
    try:
        _until(lambda: server.connections == 2)
        with pytest.raises(psycopg.OperationalError, match="starting up"):
            psycopg.connect(pgclients.dsn(server.port, "x"))
        # another loopback address is another peer: it still starts up (tokenless: no password)
        with socket.create_connection(("127.0.0.1", server.port), 10, ("127.0.0.2", 0)) as other:
            options = b"user\x00u\x00\x00"
            other.sendall(struct.pack("!ii", 8 + len(options), 196608) + options)
            assert _read_until(other, b"Z\x00\x00\x00\x05I").startswith(b"R")
    finally:
        for sock in silent:
            sock.close()
        server.stop()


def test_per_connection_caps_error_echo_and_command_tags(db: duckflock.Database) -> None:
    from duckflock.server.pgwire.session import MAX_PORTALS, MAX_PREPARED

    server = PgServer(db, ServerSettings(), PgSettings(port=0)).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            options = b"user\x00u\x00\x00"
            raw.sendall(struct.pack("!ii", 8 + len(options), 196608) + options)
            _read_until(raw, b"Z\x00\x00\x00\x05I")
            # prepared statements without end were kept: the cap is 54000, then Sync goes on
            parses = b"".join(
                _message(b"P", f"s{i}\x00SELECT 1\x00".encode() + b"\x00\x00")
                for i in range(MAX_PREPARED + 1)
            )
            raw.sendall(parses + _message(b"S"))
            answer = _read_until(raw, b"Z\x00\x00\x00\x05I")
            assert answer.count(b"1\x00\x00\x00\x04") == MAX_PREPARED
            assert b"54000" in answer and b"prepared statements" in answer
            binds = b"".join(
                _message(b"B", f"p{i}\x00s0\x00".encode() + b"\x00\x00\x00\x00\x00\x00")
                for i in range(MAX_PORTALS + 1)
            )
            raw.sendall(binds + _message(b"S"))
            answer = _read_until(raw, b"Z\x00\x00\x00\x05I")
            assert answer.count(b"2\x00\x00\x00\x04") == MAX_PORTALS
            assert b"54000" in answer and b"portals" in answer
        with psycopg.connect(pgclients.dsn(server.port, "x"), autocommit=True) as conn:
            huge = "x" * 1_000_000  # echoed whole in the error before
            with pytest.raises(psycopg.DataError) as bad:
                conn.execute("SELECT %s::FLOAT8", [huge], binary=False, prepare=False)
            assert len(str(bad.value)) < 10_000 and "characters cut" in str(bad.value)
            tags = {}
            for sql in ("CHECKPOINT", "CREATE OR REPLACE TABLE tagged (a INT)", "ANALYZE"):
                tags[sql] = conn.execute(sql).statusmessage
            tags["as"] = conn.execute("CREATE TABLE t2 AS SELECT 1 AS a").statusmessage
            assert tags == {
                "CHECKPOINT": "CHECKPOINT",
                "CREATE OR REPLACE TABLE tagged (a INT)": "CREATE TABLE",
                "ANALYZE": "ANALYZE",
                "as": "SELECT 1",
            }
    finally:
        server.stop()


@pytest.mark.parametrize("how", ["select", "copy"])
def test_wide_rows_are_cut_at_the_row_that_crosses_the_byte_cap(
    db: duckflock.Database, how: str
) -> None:
    # 300 values of 100 KB arrive from DuckDB as one batch: the cap was checked only
    # after the whole batch was encoded and sent (300 values of 1 MB: 300 MB sent past a
    # 64 MiB cap, 1.1 GB more memory in the server)
    settings = ServerSettings(query_byte_cap=1_000_000)
    server = PgServer(db, settings, PgSettings(port=0)).start()
    query = "SELECT repeat('x', 100000) AS v FROM range(300)"
    try:
        with psycopg.connect(pgclients.dsn(server.port, ""), autocommit=True) as conn:
            notes: list[str] = []
            conn.add_notice_handler(lambda diag: notes.append(diag.message_primary or ""))
            if how == "select":
                received = [len(v) for (v,) in conn.execute(query).fetchall()]
            else:
                with conn.cursor().copy(f"COPY ({query}) TO STDOUT") as copy:
                    received = [len(line) for line in b"".join(copy).splitlines()]
            # whole rows, the one that crossed 1 MB the last
            assert received == [100_000] * len(received)
            assert 10 <= len(received) <= 11, len(received)
            assert any("byte cap" in note for note in notes), notes
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()


def test_malformed_text_over_the_wire_gets_a_precise_error(db: duckflock.Database) -> None:
    """Quoted names and array parameters that are not well formed, and bytes that are not
    UTF-8: each an error naming the problem and where, and the session goes on; a query
    string that is not UTF-8 too (PostgreSQL's 22021: the message's bounds were read)."""
    server = PgServer(db, ServerSettings(), PgSettings(port=0)).start()
    ready = b"Z\x00\x00\x00\x05I"
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            options = b"user\x00u\x00\x00"
            raw.sendall(struct.pack("!ii", 8 + len(options), 196608) + options)
            _read_until(raw, ready)

            def array_parameter(value: bytes) -> bytes:
                raw.sendall(
                    _message(
                        b"P", b"\x00SELECT $1::VARCHAR[]\x00\x00\x01" + struct.pack("!i", 1009)
                    )
                    + _message(
                        b"B",
                        b"\x00\x00\x00\x00\x00\x01"
                        + struct.pack("!i", len(value))
                        + value
                        + b"\x00\x00",
                    )
                    + _message(b"E", b"\x00\x00\x00\x00\x00")
                    + _message(b"S")
                )
                return _read_until(raw, ready)

            def query(sql: bytes) -> bytes:
                raw.sendall(_message(b"Q", sql + b"\x00"))
                return _read_until(raw, ready)

            assert b'{"a\\"b",NULL}' in array_parameter(b'{"a\\"b",NULL}')
            assert b"unclosed quoted array element at position 1" in array_parameter(b'{"open')
            assert b"empty array element at position 3" in array_parameter(b"{a,,b}")
            answer = array_parameter(b'{"\xff"}')  # 22021 too, and named the same way
            assert b"C22021" in answer and b"byte 0xff at byte 3 of the parameter" in answer
            # a lone surrogate has no UTF-8 form: its would-be bytes are not UTF-8
            assert b"byte 0xed at byte 3 of the parameter" in array_parameter(b'{"\xed\xa0\x80"}')
            assert b"empty quoted name at position 0" in query(b'LISTEN ""')
            assert b"unclosed quoted identifier at position 7" in query(b'LISTEN "open')
            assert b"unclosed quoted identifier at position 4" in query(b'SET "x = 1')
            assert b"unclosed quoted string at position 8" in query(b"SET x = 'open")
            assert b"no analysis named 'a\"b'" in query(b'LISTEN "a""b"')
            answer = query(b"SELECT '\xff'")
            assert b"ERROR" in answer and b"C22021" in answer, answer
            assert b"not UTF-8: byte 0xff at byte 9 of the field" in answer, answer
            # in the extended protocol too, skipping to the Sync; then the session goes on
            raw.sendall(_message(b"P", b"\x00SELECT '\xfe'\x00\x00\x00") + _message(b"S"))
            answer = _read_until(raw, ready)
            assert b"C22021" in answer and b"byte 0xfe at byte 9" in answer, answer
            assert b"42" in query(b"SELECT 42")
    finally:
        server.stop()
