"""What ``serve`` says when it starts, and what every CLI error says to do next."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

import duckflock
from conftest import ServerProcess, free_port
from test_cli import cli_run, make_db

DUCKFLOCK = [sys.executable, "-m", "duckflock"]
ADMIN = "admin-token-admin-token"
READER = "reader-token-reader-token"


def test_the_banner_says_where_to_connect_and_what_guards_it(tmp_path: Path) -> None:
    pg_port = free_port()
    process = ServerProcess(
        tmp_path / "b.duckdb",
        "--pg-port",
        str(pg_port),
        token=ADMIN,
        env={"DUCKFLOCK_READ_TOKEN": READER},
        log_level="info",
    )
    try:
        banner = process.output()
    finally:
        assert process.stop() == 0
    assert f"HTTP       {process.url}" in banner
    assert f"dashboard  {process.url}/?access_token=<token>" in banner
    assert f"postgresql://duckflock@127.0.0.1:{pg_port}/duckflock (password: a token)" in banner
    assert "--token or $DUCKFLOCK_TOKEN (admin)" in banner
    assert "$DUCKFLOCK_READ_TOKEN (read)" in banner
    assert "read-only SELECT" in banner
    assert "100,000 rows" in banner  # the --row-cap it runs with
    assert ADMIN not in banner  # never a secret
    assert READER not in banner


def test_a_tokenless_banner_says_only_this_machine_reaches_it(tmp_path: Path) -> None:
    process = ServerProcess(tmp_path / "open.duckdb", log_level="info")
    try:
        banner = process.output()
    finally:
        assert process.stop() == 0
    assert f"dashboard  {process.url}/\n" in banner
    assert "tokens     none: only this machine can reach it" in banner
    assert "Postgres" not in banner  # no --pg-port, no DSN


def test_errors_say_what_to_do_next(tmp_path: Path) -> None:
    path = make_db(tmp_path / "e.duckdb")
    delete = cli_run("query", str(path), "DELETE FROM events")
    assert delete.returncode == 1
    assert "next: `duckflock query` runs read-only SELECTs" in delete.stderr
    assert "duckflock sql" in delete.stderr
    missing = cli_run("query", str(path), "SELECT * FROM nowhere")
    assert "next: `duckflock tables TARGET` lists the tables" in missing.stderr
    away = cli_run("tables", f"http://127.0.0.1:{free_port()}")
    assert away.returncode == 1
    assert "next: is the server running?" in away.stderr
    process = ServerProcess(
        tmp_path / "locked.duckdb", token=ADMIN, env={"DUCKFLOCK_READ_TOKEN": READER}
    )
    try:
        no_token = cli_run("tables", process.url)
        assert no_token.returncode == 1
        assert "AuthenticationError" in no_token.stderr
        assert "next: pass --token TOKEN or set $DUCKFLOCK_TOKEN" in no_token.stderr
        read_only = cli_run("sql", process.url, "CREATE TABLE t (x INTEGER)", "--token", READER)
        assert read_only.returncode == 1
        assert "ForbiddenError" in read_only.stderr
        assert "next: this token's role may not do that" in read_only.stderr
        remote_delete = cli_run("query", process.url, "DELETE FROM t", "--token", READER)
        assert "QueryRefusedError" in remote_delete.stderr
        assert "duckflock sql" in remote_delete.stderr
        for run in (no_token, read_only, remote_delete):
            assert "Traceback" not in run.stderr
    finally:
        assert process.stop() == 0


def test_a_password_in_the_url_never_reaches_an_error_or_the_screen() -> None:
    # before: `cannot reach http://user:SECRETPW@127.0.0.1:…` printed the password
    url = f"http://user:SECRETPW@127.0.0.1:{free_port()}"
    for args in (("query", url, "SELECT 1"), ("tables", url), ("status", url)):
        away = cli_run(*args)
        assert away.returncode == 1
        assert "TransportError: cannot reach http://user:…@127.0.0.1:" in away.stderr, args
        assert "SECRETPW" not in away.stdout + away.stderr, args
    client = duckflock.Client(url, timeout=5)
    try:
        assert "SECRETPW" not in repr(client)
        with pytest.raises(duckflock.TransportError) as caught:
            client.health()
        assert "SECRETPW" not in str(caught.value)
    finally:
        client.close()


def test_query_writes_arrow_and_json_as_duckdb_reads_them(tmp_path: Path) -> None:
    path = make_db(tmp_path / "types.duckdb")
    # several of DuckDB's batches: the streams must join them without a seam
    sql = (
        "SELECT range AS n, 'x' || range AS s, range / 4 AS d, [range, 1] AS l, "
        "TIMESTAMP '2024-01-01' + INTERVAL (range) SECOND AS ts FROM range(20000)"
    )
    arrow_file = tmp_path / "rows.arrow"
    with arrow_file.open("wb") as out:
        run = subprocess.run(
            [*DUCKFLOCK, "query", str(path), sql, "--format", "arrow", "--limit", "0"],
            stdout=out,
            stderr=subprocess.PIPE,
            text=False,
            timeout=60,
            check=False,
        )
    assert run.returncode == 0, run.stderr
    with pa.OSFile(str(arrow_file)) as source:
        written = pa.ipc.open_stream(source).read_all()
    truth = duckdb.sql(sql).to_arrow_table()
    assert written.equals(truth)
    as_json = cli_run("query", str(path), sql, "--format", "json", "--limit", "0")
    assert as_json.returncode == 0, as_json.stderr
    objects = duckdb.sql(f"SELECT to_json(q)::VARCHAR FROM ({sql}) q").fetchall()
    assert json.loads(as_json.stdout) == [json.loads(text) for (text,) in objects]
    assert "20,000 rows" in as_json.stderr
