"""The CLI's query, load and status commands, on a file and against a server."""

from __future__ import annotations

import json
import os
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
    assert json.loads(as_json.stdout) == [{"i": i, "note": f"n{i}"} for i in range(3)]
    as_csv = CliRunner().invoke(cli, ["query", str(path), sql, "--format", "csv"])
    assert as_csv.stdout.splitlines() == ['"i","note"', '0,"n0"', '1,"n1"', '2,"n2"']
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
    # the file's line (header, 1,1, then 1,one) and column, with DuckDB's reason
    assert "bad.csv, line 3, column i: ConversionError" in run.stderr
    assert "nothing was loaded: events is as it was" in run.stderr
    assert "Traceback" not in run.stderr


def test_query_load_and_status_against_a_server(server: ServerProcess, tmp_path: Path) -> None:
    csv_file = tmp_path / "remote.csv"
    csv_file.write_text("p,i,note\n" + "".join(f"5,{i},r{i}\n" for i in range(1200)))
    loaded = CliRunner().invoke(cli, ["load", server.url, "events", str(csv_file)])
    assert loaded.exit_code == 0, loaded.output
    queried = CliRunner().invoke(
        cli, ["query", server.url, "SELECT count(*) AS n FROM events", "--format", "json"]
    )
    assert json.loads(queried.stdout) == [{"n": 1200}]
    with server.client() as client:
        client.analysis("n", "SELECT count(*) AS n FROM events", every=60)
        client.result("n")
    status = CliRunner().invoke(cli, ["status", server.url])
    assert status.exit_code == 0, status.output
    assert "events" in status.output
    assert "1,200" in status.output
    assert "ingest: 1,200 rows" in status.output


def cli_run(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """The real console entry point in a subprocess: exit codes and stderr as users see."""
    return subprocess.run(
        [sys.executable, "-m", "duckflock", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        input=stdin,
        check=False,
    )


def write_compressed(path: Path, text: str, codec: str) -> Path:
    with pa.CompressedOutputStream(str(path), codec) as out:
        out.write(text.encode())
    return path


def test_load_creates_the_table_from_the_files_inferred_schema(tmp_path: Path) -> None:
    path = tmp_path / "new.duckdb"  # neither the file nor the table exists yet
    rows = "".join(f"{i},s{i % 3},{i / 4},2024-01-{1 + i % 28:02d}\n" for i in range(250))
    gz = write_compressed(tmp_path / "readings.csv.gz", "id,sensor,value,day\n" + rows, "gzip")
    result = CliRunner().invoke(
        cli, ["load", str(path), "readings", str(gz), "--pk", "id", "--chunk-rows", "40"]
    )
    assert result.exit_code == 0, result.output
    with duckflock.connect(path, read_only=True) as db:
        (table,) = db.tables()
        assert table["rows"] == 250
        assert [(c["name"], c["type"]) for c in table["columns"]] == [
            ("id", "BIGINT"),
            ("sensor", "VARCHAR"),
            ("value", "DOUBLE"),
            ("day", "DATE"),
        ]
        assert db.execute("SELECT sum(value) FROM readings").fetchone() == (sum(range(250)) / 4,)
    # the primary key was declared: loading the same ids again fails on the first line
    again = cli_run("load", str(path), "readings", str(gz))
    assert again.returncode == 1
    assert "line 2, column id: ConstraintError" in again.stderr
    assert "nothing was loaded: readings is as it was" in again.stderr
    assert "--replace" not in again.stderr  # the table was not created by this load
    assert "Traceback" not in again.stderr


def test_load_reads_zstd_ndjson_and_replaces_on_request(tmp_path: Path) -> None:
    path = make_db(tmp_path / "z.duckdb")
    lines = "".join(json.dumps({"k": f"k{i}", "n": i}) + "\n" for i in range(30))
    zst = write_compressed(tmp_path / "rows.ndjson.zst", lines, "zstd")
    created = CliRunner().invoke(cli, ["load", str(path), "kv", str(zst)])
    assert created.exit_code == 0, created.output
    # --replace: the table takes the new file's columns and only its rows
    csv_file = tmp_path / "kv.csv"
    csv_file.write_text("k,flag\na,true\nb,false\n")
    replaced = CliRunner().invoke(cli, ["load", str(path), "kv", str(csv_file), "--replace"])
    assert replaced.exit_code == 0, replaced.output
    with duckflock.connect(path, read_only=True) as db:
        assert db.execute("SELECT * FROM kv ORDER BY k").fetchall() == [("a", True), ("b", False)]
        assert db.execute("SELECT count(*) FROM events").fetchone() == (3,)  # untouched


def test_load_is_all_or_nothing_and_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = make_db(tmp_path / "line.duckdb")
    body = [f"7,{i},ok" for i in range(100)]
    body[55] = "7,fifty-five,bad"  # data row 56: line 57 of the file (line 1 is the header)
    bad = tmp_path / "rows.csv"
    bad.write_text("p,i,note\n" + "\n".join(body) + "\n")
    run = cli_run("load", str(path), "events", str(bad), "--chunk-rows", "10")
    assert run.returncode == 1, run.stderr
    assert "rows.csv, line 57, column i: ConversionError" in run.stderr
    assert "fifty-five" in run.stderr
    assert "nothing was loaded: events is as it was" in run.stderr
    assert "--rejects" in run.stderr  # what to do next
    with duckflock.connect(path, read_only=True) as db:  # five good chunks, none kept
        assert db.execute("SELECT count(*) FROM events WHERE p = 7").fetchone() == (0,)
    # --chunked: chunk by chunk, as before; the error says what was committed
    chunked = cli_run("load", str(path), "events", str(bad), "--chunk-rows", "10", "--chunked")
    assert chunked.returncode == 1
    assert "line 57" in chunked.stderr
    assert "50 rows of the file were committed" in chunked.stderr  # five whole chunks
    with duckflock.connect(path, read_only=True) as db:
        assert db.execute("SELECT count(*) FROM events WHERE p = 7").fetchone() == (50,)


def test_load_keeps_non_iso_csv_dates_as_text_instead_of_failing_every_row(
    tmp_path: Path,
) -> None:
    path = tmp_path / "dates.duckdb"
    csv_file = tmp_path / "eu.csv"
    csv_file.write_text("day,n\n31/01/2024,1\n29/02/2024,2\n")
    result = CliRunner().invoke(cli, ["load", str(path), "days", str(csv_file)])
    assert result.exit_code == 0, result.output
    assert "day kept as VARCHAR" in result.output
    with duckflock.connect(path, read_only=True) as db:
        rows = db.execute("SELECT strptime(day, '%d/%m/%Y')::DATE, n FROM days ORDER BY n")
        assert [(d.isoformat(), n) for d, n in rows.fetchall()] == [
            ("2024-01-31", 1),
            ("2024-02-29", 2),
        ]


def test_load_refuses_a_missing_table_with_no_create_and_a_pk_on_an_existing_one(
    tmp_path: Path,
) -> None:
    path = make_db(tmp_path / "refuse.duckdb")
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text("p,i\n1,2\n")
    missing = CliRunner().invoke(cli, ["load", str(path), "nope", str(csv_file), "--no-create"])
    assert missing.exit_code == 2
    assert "does not exist" in missing.output
    pk = CliRunner().invoke(cli, ["load", str(path), "events", str(csv_file), "--pk", "p"])
    assert pk.exit_code == 2
    assert "--replace" in pk.output
    unknown = CliRunner().invoke(cli, ["load", str(path), "fresh", str(csv_file), "--pk", "zz"])
    assert unknown.exit_code == 2
    assert "'zz' is not a column" in unknown.output


def test_bad_flags_are_click_errors_not_tracebacks(tmp_path: Path) -> None:
    path = make_db(tmp_path / "flags.duckdb")
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text("p,i\n1,2\n")
    for args in (
        ["load", str(path), "events", str(csv_file), "--chunk-rows", "0"],
        ["load", str(path), "events", str(csv_file), "--chunk-rows", "many"],
        ["query", str(path), "SELECT 1", "--limit", "-1"],
        ["query", str(tmp_path / "absent.duckdb"), "SELECT 1"],
        ["serve", str(path), "--row-cap", "0"],
        ["serve", str(path), "--query-timeout", "0"],
    ):
        run = cli_run(*args)
        assert run.returncode == 2, (args, run.stderr)
        assert "Traceback" not in run.stderr
        assert "Error:" in run.stderr


def test_query_streams_with_a_default_limit_and_a_footer(tmp_path: Path) -> None:
    path = make_db(tmp_path / "big.duckdb")
    # ten billion rows: only streaming (stopping at the limit) can answer this in time
    endless = "SELECT range AS n FROM range(10000000000)"
    run = cli_run("query", str(path), endless, "--format", "csv")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == '"n"'
    assert lines[1:] == [str(n) for n in range(1000)]  # the default --limit
    assert "1,000 rows in" in run.stderr
    assert "--limit 0 reads all" in run.stderr
    # --limit 0 in a table: only what fits the terminal is drawn, the rest is counted
    everything = cli_run(
        "query", str(path), "SELECT * FROM range(250000)", "--limit", "0", env={"LINES": "30"}
    )
    assert everything.returncode == 0
    assert "250,000 rows in" in everything.stderr
    cells = [line.strip("│ ") for line in everything.stdout.splitlines() if line.startswith("│")]
    assert cells == [str(n) for n in range(24)]  # 30 lines less borders, header and footer
    assert "249,976 not drawn" in everything.stderr
    assert "--format csv, json or arrow" in everything.stderr
    assert "more rows" not in everything.stderr
    as_json = cli_run("query", str(path), "SELECT i FROM events WHERE false", "--format", "json")
    assert json.loads(as_json.stdout) == []


def test_tables_do_not_wrap_at_80_columns(tmp_path: Path) -> None:
    path = tmp_path / "wide.duckdb"
    with duckflock.connect(path) as db:
        db.execute("CREATE TABLE wide AS SELECT repeat('x', 150) AS long_text, 42 AS answer")
    result = CliRunner().invoke(cli, ["query", str(path), "SELECT * FROM wide"])
    assert result.exit_code == 0, result.output
    (row,) = [line for line in result.output.splitlines() if "xxxx" in line]
    assert "x" * 150 in row
    assert "42" in row  # the whole row on one line


def test_sql_on_a_file_creates_it_and_runs_ddl_and_dml(tmp_path: Path) -> None:
    path = tmp_path / "fresh.duckdb"
    created = CliRunner().invoke(
        cli, ["sql", str(path), "CREATE TABLE notes (id INTEGER PRIMARY KEY, body VARCHAR)"]
    )
    assert created.exit_code == 0, created.output
    assert created.stderr.startswith("CREATE done in ")  # one line, no empty Count table
    assert created.stdout == ""
    dropped = cli_run("sql", str(path), "DROP TABLE IF EXISTS absent")
    assert dropped.stdout == ""
    assert dropped.stderr.startswith("DROP done in "), dropped.stderr
    inserted = CliRunner().invoke(
        cli, ["sql", str(path), "INSERT INTO notes VALUES (1, 'a'), (2, 'b')", "--format", "json"]
    )
    assert inserted.exit_code == 0, inserted.output
    assert json.loads(inserted.stdout) == [{"Count": 2}]
    listed = CliRunner().invoke(cli, ["tables", str(path)])
    assert "notes" in listed.output
    assert "id INTEGER, body VARCHAR" in listed.output
    status = CliRunner().invoke(cli, ["status", str(path)])
    assert status.exit_code == 0, status.output
    assert "database file" in status.output
    assert "notes" in status.output
    failed = cli_run("sql", str(path), "INSERT INTO notes VALUES (1, 'again')")
    assert failed.returncode == 1
    assert "ConstraintError" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_sql_tables_and_load_against_a_server(server: ServerProcess, tmp_path: Path) -> None:
    ddl = CliRunner().invoke(cli, ["sql", server.url, "CREATE TABLE kv (k VARCHAR, v INTEGER)"])
    assert ddl.exit_code == 0, ddl.output
    assert ddl.stderr.startswith("CREATE done in "), ddl.output
    assert "Count" not in ddl.output
    dml = CliRunner().invoke(
        cli, ["sql", server.url, "INSERT INTO kv VALUES ('a', 1), ('b', 2)", "--format", "json"]
    )
    assert json.loads(dml.stdout) == [{"Count": 2}]
    ndjson = tmp_path / "more.ndjson"
    ndjson.write_text("".join(json.dumps({"k": f"n{i}", "n": i}) + "\n" for i in range(40)))
    created = CliRunner().invoke(cli, ["load", server.url, "numbers", str(ndjson)])
    assert created.exit_code == 0, created.output
    listed = CliRunner().invoke(cli, ["tables", server.url])
    assert "kv" in listed.output
    assert "numbers" in listed.output
    with server.client() as client:
        assert client.execute("SELECT sum(v) FROM kv").fetchone() == (3,)
        assert client.execute("SELECT count(*), sum(n) FROM numbers").fetchone() == (40, 780)
        assert client.run("UPDATE kv SET v = v + 1").fetchone() == (2,)


def test_sql_against_a_server_needs_its_token(tmp_path: Path) -> None:
    process = ServerProcess(tmp_path / "locked.duckdb", token="s3cret-s3cret-s3cret")
    try:
        refused = cli_run("sql", process.url, "CREATE TABLE t (x INTEGER)")
        assert refused.returncode == 1
        assert "AuthenticationError" in refused.stderr
        allowed = cli_run(
            "sql", process.url, "CREATE TABLE t (x INTEGER)", "--token", "s3cret-s3cret-s3cret"
        )
        assert allowed.returncode == 0, allowed.stderr
    finally:
        assert process.stop() == 0


def test_a_file_held_by_a_server_points_to_the_url(server: ServerProcess) -> None:
    for command in ("query", "tables", "status", "sql"):
        args = [command, str(server.database)]
        if command in ("query", "sql"):
            args.append("SELECT 1")
        run = cli_run(*args)
        assert run.returncode == 1, (command, run.stderr)
        assert "duckflock serve" in run.stderr
        assert "URL" in run.stderr
        assert "Traceback" not in run.stderr


def test_a_failed_load_into_a_table_it_creates_leaves_no_table(tmp_path: Path) -> None:
    path = tmp_path / "over.duckdb"
    csv_file = tmp_path / "dupes.csv"
    csv_file.write_text("id,v\n1,a\n2,b\n1,c\n")
    # all or nothing: the CREATE TABLE is part of the load, so it goes too
    run = cli_run("load", str(path), "items", str(csv_file), "--pk", "id", "--chunk-rows", "2")
    assert run.returncode == 1
    # the duplicate is in a later chunk than the key it repeats: its lines are named
    assert "dupes.csv, line 4 (they go in alone: together with the earlier" in run.stderr
    assert 'UNIQUE constraint violation: duplicate key "1"' in run.stderr
    with duckflock.connect(path, read_only=True) as db:
        assert db.tables() == []
    # --chunked: the table stays with the chunks before the failure, and says so
    run = cli_run(
        "load", str(path), "items", str(csv_file), "--pk", "id", "--chunk-rows", "2", "--chunked"
    )
    assert run.returncode == 1
    assert "line 4" in run.stderr
    assert "2 rows of the file were committed" in run.stderr
    assert "This load created items: --replace starts it over." in run.stderr
    fixed = tmp_path / "fixed.csv"
    fixed.write_text("id,v\n1,a\n2,b\n3,c\n")
    again = cli_run("load", str(path), "items", str(fixed), "--pk", "id", "--replace")
    assert again.returncode == 0, again.stderr
    with duckflock.connect(path, read_only=True) as db:
        assert db.execute("SELECT count(*) FROM items").fetchone() == (3,)


def test_load_takes_schema_qualified_and_quoted_table_names(tmp_path: Path) -> None:
    path = tmp_path / "names.duckdb"
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text("a,b\n1,x\n2,y\n")
    schema = CliRunner().invoke(cli, ["sql", str(path), "CREATE SCHEMA staging"])
    assert schema.exit_code == 0, schema.output
    for name in ("staging.readings", '"my table"'):
        for _ in range(2):  # created, then found again and appended to
            result = CliRunner().invoke(cli, ["load", str(path), name, str(csv_file)])
            assert result.exit_code == 0, result.output
    with duckflock.connect(path, read_only=True) as db:
        assert db.execute("SELECT count(*) FROM staging.readings").fetchone() == (4,)
        assert db.execute('SELECT count(*) FROM "my table"').fetchone() == (4,)
    # a name that is not one is refused before any SQL is built
    bad = CliRunner().invoke(cli, ["load", str(path), 'x"; DROP TABLE t; --', str(csv_file)])
    assert bad.exit_code == 2
    assert "TABLE" in bad.output


def test_wide_integers_are_shown_right_from_a_file(tmp_path: Path) -> None:
    # DuckDB exports UHUGEINT as decimal128: 2^128 - 1 was shown as -1; BIGNUM as bytes
    path = tmp_path / "wide.duckdb"
    top, big = 2**128 - 1, "-12345678901234567890123456789012345678901"
    with duckflock.connect(path) as db:
        db.execute(f"CREATE TABLE t AS SELECT {top}::UHUGEINT AS u, '{big}'::VARINT AS v")
        kept = db.execute("SELECT u, v FROM t")
        db.execute("SELECT 1")  # the first result is kept as Arrow, and was wrapped there
        assert kept.fetchall() == [(top, big)]
    for command in ("query", "sql"):
        shown = CliRunner().invoke(
            cli, [command, str(path), "SELECT u, v FROM t", "--format", "json"]
        )
        assert shown.exit_code == 0, shown.output
        row = json.loads(shown.stdout)[0]
        assert (int(row["u"]), row["v"]) == (top, big), command


def test_csv_writes_lists_structs_and_maps_as_json(tmp_path: Path) -> None:
    path = tmp_path / "nested.duckdb"
    with duckflock.connect(str(path)) as db:
        db.execute(
            "CREATE TABLE t AS SELECT 1 AS i, [1, 2] AS l, {'a': 'x'} AS s, MAP {'k': 3} AS m "
            "UNION ALL SELECT 2, NULL, NULL, NULL"
        )
    sql = "SELECT * FROM t ORDER BY i"
    result = CliRunner().invoke(cli, ["query", str(path), sql, "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        '"i","l","s","m"',
        '1,"[1, 2]","{""a"": ""x""}","{""k"": 3}"',
        "2,,,",
    ]


def test_arguments_that_are_not_utf8_are_one_line_errors(tmp_path: Path) -> None:
    path = make_db(tmp_path / "a.duckdb")
    ab = tmp_path / "ab.csv"
    ab.write_text("p,i,note\n1,2,x\n")
    odd_file = tmp_path / os.fsdecode(b"f\xff.csv")  # a legal file name, not UTF-8
    odd_file.write_text("p,i,note\n1,2,x\n")
    # Python reads each byte that is not UTF-8 as a lone surrogate ('\udcff' for 0xff)
    for args in (
        ("analysis", "define", str(path), "q7\udcff", "SELECT 1"),
        ("load", str(path), "t\udcff", str(ab)),
        ("load", str(path), "events", str(odd_file)),
        ("query", str(path), "SELECT '\udcff'"),
    ):
        run = cli_run(*args)
        assert run.returncode == 2, (args, run.stderr)
        assert "Traceback" not in run.stderr
        [line] = run.stderr.strip().splitlines()
        assert "is not UTF-8: byte 0xff" in line
        assert "\\xff" in line  # the argument shown, its bad byte escaped
    with duckflock.connect(path, read_only=True, restore_analyses=False) as db:
        assert db.execute("SELECT count(*) FROM events").fetchall() == [(3,)]
