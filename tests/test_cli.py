"""The CLI's query, load and status commands, on a file and against a server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

import duckflock
from conftest import ServerProcess
from duckflock.cli import cli


def make_db(path: Path) -> Path:
    with duckflock.connect(path) as db:
        db.execute("CREATE TABLE events (p INTEGER, i INTEGER, note VARCHAR)")
        db.insert("events", [{"p": 1, "i": i, "note": f"n{i}"} for i in range(3)])
    return path


def test_query_a_file_in_every_format(tmp_path: Path) -> None:
    path = make_db(tmp_path / "q.duckdb")
    sql = "SELECT i, note FROM events ORDER BY i"
    as_json = CliRunner().invoke(cli, ["query", str(path), sql, "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == [{"i": i, "note": f"n{i}"} for i in range(3)]
    as_csv = CliRunner().invoke(cli, ["query", str(path), sql, "--format", "csv"])
    assert as_csv.output.splitlines() == ['"i","note"', '0,"n0"', '1,"n1"', '2,"n2"']
    as_table = CliRunner().invoke(cli, ["query", str(path), sql])
    assert "note" in as_table.output
    assert "n2" in as_table.output


def test_query_errors_are_one_line_and_exit_1(tmp_path: Path) -> None:
    path = make_db(tmp_path / "e.duckdb")
    run = subprocess.run(
        [sys.executable, "-m", "duckflock", "query", str(path), "SELECT * FROM nowhere"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1
    assert "CatalogError" in run.stderr
    assert "Traceback" not in run.stderr


def test_load_csv_parquet_and_ndjson_into_a_file(tmp_path: Path) -> None:
    path = make_db(tmp_path / "load.duckdb")
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text("p,i,note\n" + "".join(f"2,{i},c{i}\n" for i in range(2500)))
    parquet_file = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"p": [3] * 1000, "i": list(range(1000))}), parquet_file)
    ndjson_file = tmp_path / "rows.ndjson"
    ndjson_file.write_text("".join(json.dumps({"p": 4, "i": i}) + "\n" for i in range(700)))
    for file in (csv_file, parquet_file, ndjson_file):
        result = CliRunner().invoke(
            cli, ["load", str(path), "events", str(file), "--chunk-rows", "600"]
        )
        assert result.exit_code == 0, result.output
        assert "loaded" in result.output
    with duckflock.connect(path, read_only=True) as db:
        counts = dict(db.execute("SELECT p, count(*) FROM events GROUP BY p").fetchall())
    assert counts == {1: 3, 2: 2500, 3: 1000, 4: 700}


def test_load_refuses_unknown_formats_and_reports_bad_rows(tmp_path: Path) -> None:
    path = make_db(tmp_path / "bad.duckdb")
    odd = tmp_path / "rows.xml"
    odd.write_text("<rows/>")
    result = CliRunner().invoke(cli, ["load", str(path), "events", str(odd)])
    assert result.exit_code == 2
    assert "--format" in result.output
    bad = tmp_path / "bad.csv"
    bad.write_text("p,i\n1,1\n1,one\n")
    run = subprocess.run(
        [sys.executable, "-m", "duckflock", "load", str(path), "events", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1
    assert "RowRejectedError" in run.stderr
    assert "row 1" in run.stderr


def test_query_load_and_status_against_a_server(server: ServerProcess, tmp_path: Path) -> None:
    csv_file = tmp_path / "remote.csv"
    csv_file.write_text("p,i,note\n" + "".join(f"5,{i},r{i}\n" for i in range(1200)))
    loaded = CliRunner().invoke(cli, ["load", server.url, "events", str(csv_file)])
    assert loaded.exit_code == 0, loaded.output
    queried = CliRunner().invoke(
        cli, ["query", server.url, "SELECT count(*) AS n FROM events", "--format", "json"]
    )
    assert json.loads(queried.output) == [{"n": 1200}]
    with server.client() as client:
        client.analysis("n", "SELECT count(*) AS n FROM events", every=60)
        client.result("n")
    status = CliRunner().invoke(cli, ["status", server.url])
    assert status.exit_code == 0, status.output
    assert "events" in status.output
    assert "1,200" in status.output
    assert "ingest: 1,200 rows" in status.output
