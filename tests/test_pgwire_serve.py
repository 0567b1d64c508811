"""The Postgres port of a real ``duckflock serve`` process: TLS, psql, HTTP beside it.

One process for the module (``--pg-port`` with a TLS certificate, tokens of each role):
psql (Debian's postgresql-client) runs ``\\dt``, ``\\d events`` and a query; psycopg
negotiates TLS and SCRAM; rows ingested over HTTP are visible and notified over the
Postgres port; SIGTERM with Postgres clients connected still exits 0. Cleartext
passwords over TLS and a TLS-only port are checked on an in-process server.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import trustme

import duckflock
import pgclients
from conftest import ServerProcess, free_port
from duckflock.server.pgwire import PgServer, PgSettings
from duckflock.server.settings import ServerSettings

READ, ADMIN = "serve-read-token-0123456789", "serve-admin-token-0123456789"
CONFIG = """
[[tables]]
sql = "CREATE TABLE IF NOT EXISTS events (p INTEGER, i INTEGER, note VARCHAR)"

[[analyses]]
name = "per_p"
sql = "SELECT p, count(*) AS n FROM events GROUP BY p"
on_change = true
min_interval = 0
"""


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 (PEM, key inside) and its CA's certificate."""
    where = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1", "localhost")
    server_pem, ca_pem = where / "server.pem", where / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    authority.cert_pem.write_to_path(str(ca_pem))
    return server_pem, ca_pem


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, tls: tuple[Path, Path]
) -> Iterator[tuple[ServerProcess, int]]:
    where = tmp_path_factory.mktemp("pgserve")
    config = where / "duckflock.toml"
    pg_port = free_port()
    config.write_text(CONFIG + f"\n[pg]\nport = {pg_port}\ncertfile = '{tls[0]}'\n")
    process = ServerProcess(
        where / "served.duckdb",
        "--config",
        str(config),
        token=ADMIN,
        env={"DUCKFLOCK_READ_TOKEN": READ},
    )
    yield process, pg_port
    process.stop()


def _psql(port: int, password: str, *commands: str) -> subprocess.CompletedProcess[str]:
    psql = shutil.which("psql")
    assert psql, "psql is missing: .ci/system-deps installs postgresql-client"
    args = [psql, "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "duckflock", "duckflock"]
    for command in commands:
        args += ["-c", command]
    env = {**os.environ, "PGPASSWORD": password, "PGSSLMODE": "require", "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, check=False)


def test_psql_lists_describes_and_queries(served: tuple[ServerProcess, int]) -> None:
    process, port = served
    with process.client() as client:
        client.insert("events", [{"p": 1, "i": 1, "note": "psql"}])
    run = _psql(port, READ, "\\dt", "\\d events", "SELECT note FROM events WHERE i = 1")
    assert run.returncode == 0, run.stderr
    assert "events" in run.stdout and "table" in run.stdout  # \dt
    assert 'Table "main.events"' in run.stdout and "integer" in run.stdout  # \d events
    assert " psql\n" in run.stdout and "(1 row)" in run.stdout
    refused = _psql(port, READ, "DROP TABLE events")
    assert refused.returncode != 0 and "admin role" in refused.stderr
    wrong = _psql(port, "not-the-right-token-at-all", "SELECT 1")
    assert wrong.returncode == 2 and "password authentication failed" in wrong.stderr


def test_tls_scram_and_live_data_beside_http(
    served: tuple[ServerProcess, int], tls: tuple[Path, Path]
) -> None:
    process, port = served
    dsn = pgclients.dsn(port, READ, sslmode="verify-full", sslrootcert=str(tls[1]))
    with psycopg.connect(dsn, autocommit=True) as conn, process.client() as client:
        assert conn.pgconn.ssl_in_use
        conn.execute("LISTEN per_p")
        before = conn.execute("SELECT count(*) FROM events").fetchone()
        assert before is not None
        client.insert("events", [{"p": 7, "i": n, "note": "http"} for n in range(5)])
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (before[0] + 5,)
        note = next(conn.notifies(timeout=15, stop_after=1))
        assert note.channel == "per_p"
        assert conn.execute("SELECT n FROM analyses.per_p WHERE p = 7").fetchone() == (5,)


def test_sigterm_with_postgres_clients_connected_exits_zero(
    tmp_path: Path, tls: tuple[Path, Path]
) -> None:
    pg_port = free_port()
    process = ServerProcess(
        tmp_path / "stop.duckdb", "--pg-port", str(pg_port), "--pg-cert", str(tls[0])
    )
    try:
        idle = psycopg.connect(pgclients.dsn(pg_port, "any-password", sslmode="require"))
        busy = psycopg.connect(pgclients.dsn(pg_port, "any-password"), autocommit=True)
        assert busy.execute("SELECT 1").fetchone() == (1,)  # tokenless on loopback: admin
        busy.execute("CREATE TABLE t AS SELECT range AS x FROM range(10)")
        process.process.send_signal(signal.SIGTERM)
        assert process.process.wait(30) == 0, process.output()
        idle.close()
        busy.close()
    finally:
        process.stop()
    with duckflock.connect(str(tmp_path / "stop.duckdb")) as db:  # committed, checkpointed
        assert db.execute("SELECT count(*) FROM t").fetchone() == (10,)


def test_cleartext_passwords_only_over_tls(tmp_path: Path, tls: tuple[Path, Path]) -> None:
    db = duckflock.connect()
    settings = ServerSettings(tokens={READ: "read"})
    pg = PgSettings(port=0, certfile=str(tls[0]), cleartext=True, require_tls=True)
    server = PgServer(db, settings, pg).start()
    try:
        with pytest.raises(psycopg.OperationalError, match="TLS connections only"):
            psycopg.connect(pgclients.dsn(server.port, READ))
        secure = pgclients.dsn(server.port, READ, sslmode="verify-ca", sslrootcert=str(tls[1]))
        with psycopg.connect(secure) as conn:
            assert conn.execute("SELECT 'over tls'").fetchone() == ("over tls",)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(secure.replace(READ, "a-wrong-token-of-length"))
        context = ssl.create_default_context(cafile=str(tls[1]))
        import pg8000.native

        conn8 = pg8000.native.Connection(
            "u", host="127.0.0.1", port=server.port, password=READ, ssl_context=context
        )
        assert conn8.run("SELECT 2") == [[2]]
        conn8.close()
    finally:
        server.stop()
        db.close()
