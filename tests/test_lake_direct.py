"""The lake's catalog reads over psycopg (lake/direct.py, ``Session.DIRECT``): the same
refreshes as through the postgres extension, on the same database or not at all."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import duckflock
from duckflock.lake import direct as directly
from duckflock.lake.session import Session
from test_lake_feed import Logged, _lakes, check, define

FILES = "INSERT INTO events SELECT i % 7, i, i / 3, 's' || (i % 5) FROM range({}, {}) t(i)"


@pytest.fixture
def logged(postgres: Any, tmp_path: Path) -> Iterator[Logged]:
    """test_lake_feed's lake whose catalog logs every statement."""
    lake = Logged(postgres, tmp_path)
    try:
        yield lake
    finally:
        lake.close()


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[Session]:
    """Every Session made while the test runs, reading directly."""
    made: list[Session] = []
    original = Session.__init__

    def init(self: Session, lake: str) -> None:
        original(self, lake)
        made.append(self)

    monkeypatch.setattr(Session, "__init__", init)
    monkeypatch.setattr(Session, "DIRECT", True)
    return made


def _direct_reads(sessions: list[Session]) -> int:
    return sum(session.direct_reads for session in sessions)


def _appends(logged: Logged, *starts: int) -> None:
    logged.other.run(*(FILES.format(start, start + 1_500) for start in starts))


def test_catalog_reads_go_over_psycopg_and_equal_a_full_run(
    logged: Logged, sessions: list[Session]
) -> None:
    db = logged.db
    define(db, "sums")
    check(db, "sums")
    _appends(logged, 10_000)
    check(db, "sums")  # DuckLake's read: the columns' types are learned
    for start in (20_000, 30_000):
        _appends(logged, start)
        before = _direct_reads(sessions)
        result, statements = logged.statements(lambda: db.refresh("sums"))
        check(db, "sums", result)
        assert result.mode == "incremental" and "new Parquet file" in result.reason
        assert _direct_reads(sessions) == before + 1
        # not through the extension: no COPY, no pool checks
        assert not any("COPY" in line or "SELECT 1" in line for line in statements), statements


def test_a_direct_connection_to_another_database_is_not_used(
    logged: Logged,
    sessions: list[Session],
    postgres: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A connection string that reaches another database than the extension's (as a
    secret's settings could) is refused: the reads stay the extension's, and right."""
    elsewhere = postgres.create_database(f"elsewhere_{os.getpid()}_{next(_lakes)}")
    # another lake's catalog there, with a table of the same name: reads would succeed
    options = duckflock.LakeOptions(maintenance_interval=None, poll_interval=3600)
    target, data = f"ducklake:postgres:{elsewhere}", str(tmp_path / "elsewhere")
    with duckflock.connect(target, data_path=data, lake=options) as other_lake:
        other_lake.execute("CREATE TABLE events (g INTEGER, v BIGINT, x DOUBLE, s VARCHAR)")
        for _ in range(3):
            other_lake.execute("INSERT INTO events SELECT 1, i, 0, 's' FROM range(2000) t(i)")
    sessions.clear()  # (that lake's own, which read it directly)
    monkeypatch.setattr(directly, "dsn_of", lambda cursor, lake: elsewhere)
    db = logged.db
    define(db, "sums")  # (its refreshes' Session is made here)
    check(db, "sums")
    for start in (10_000, 20_000):
        _appends(logged, start)
        result = check(db, "sums")
        assert result.mode == "incremental", result.reason
    assert "new Parquet file" in result.reason
    assert sessions and _direct_reads(sessions) == 0


def test_without_psycopg_the_extension_reads(
    logged: Logged, sessions: list[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(directly, "available", lambda: False)
    db = logged.db
    define(db, "sums")
    check(db, "sums")
    for start in (10_000, 20_000):
        _appends(logged, start)
        assert check(db, "sums").mode == "incremental"
    assert _direct_reads(sessions) == 0


def test_a_killed_direct_connection_is_read_around_then_replaced(
    logged: Logged, sessions: list[Session]
) -> None:
    """The direct connection dies (a catalog restart): that read goes through the
    extension, the next one over a new direct connection; every refresh stays right."""
    import psycopg

    db = logged.db
    define(db, "sums")
    check(db, "sums")
    _appends(logged, 10_000)
    check(db, "sums")
    _appends(logged, 20_000)
    assert "new Parquet file" in check(db, "sums").reason
    (used,) = [s for s in sessions if s._direct is not None and s.direct_reads]
    assert used._direct is not None
    pid = used._direct._connection.info.backend_pid
    with psycopg.connect(logged.dsn, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)
    before = used.direct_reads
    _appends(logged, 30_000)
    result = check(db, "sums")
    assert result.mode == "incremental" and "new Parquet file" in result.reason, result.reason
    assert used.direct_reads == before  # read through the extension
    _appends(logged, 40_000)
    result = check(db, "sums")
    assert "new Parquet file" in result.reason, result.reason
    assert used.direct_reads == before + 1 and used._direct is not None
    assert used._direct._connection.info.backend_pid != pid


def test_a_read_past_its_bound_fails_for_the_extension_to_answer(
    postgres: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A direct read that the catalog does not answer within ``READ_TIMEOUT`` fails
    (Direct.Failed: the Session reads through the extension, as after any failure)
    instead of holding the refresh: the server ends a slow statement, and the
    connection asks the kernel to end one whose server stopped answering."""
    monkeypatch.setattr(directly.Direct, "READ_TIMEOUT", 0.3)
    direct = directly.Direct(postgres.dsn)
    try:
        with pytest.raises(directly.Direct.Failed, match="QueryCanceled"):
            direct.query("SELECT pg_sleep(30)")
        assert direct.query("SELECT 1") == [(1,)]  # the connection goes on
        settings = direct.query("SELECT current_setting('statement_timeout')")
        assert settings == [("300ms",)]
        used = direct._connection.info.get_parameters()
        assert used["keepalives"] == "1" and used["tcp_user_timeout"] == "300"
    finally:
        direct.close()


def test_a_read_from_a_stopped_catalog_backend_fails_at_a_client_side_deadline(
    postgres: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGSTOPped backend ends no statement (statement_timeout is the server's) and its
    kernel still acknowledges data and answers keepalives: the read hung for good. The
    connection is cut once a read runs twice ``READ_TIMEOUT`` (Direct.Failed)."""
    import signal
    import threading

    monkeypatch.setattr(directly.Direct, "READ_TIMEOUT", 0.3)
    direct = directly.Direct(postgres.dsn)
    pid = direct.query("SELECT pg_backend_pid()")[0][0]
    failed: list[BaseException] = []

    def read() -> None:
        try:
            direct.query("SELECT 1")
        except directly.Direct.Failed as exc:
            failed.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    os.kill(pid, signal.SIGSTOP)
    try:
        reader.start()
        reader.join(10)
        assert not reader.is_alive(), "the read hung"
        assert failed
    finally:
        os.kill(pid, signal.SIGCONT)
        direct.close()
