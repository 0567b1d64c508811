"""``duckflock load``: all or nothing, --rejects, stdin, on a file and a server."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import duckdb
import httpx
import pytest

import duckflock
from conftest import ServerProcess
from duckflock.ingest import files as loading
from duckflock.ingest.loads import insert_all
from test_cli import cli_run, make_db

# line 1 header; 4: too few fields; 5-6: one record over two lines; 7: too many fields;
# 3: a value that is no INTEGER; 8: a key that repeats line 2's
MESSY = 'id,n,s\n1,1,a\n2,x,b\n3\n4,4,"two\nlines"\n5,5,e,extra\n1,6,dup\n7,7,g\n'


def rows_of(path: Path, sql: str) -> list[tuple[object, ...]]:
    with duckflock.connect(path, read_only=True, restore_analyses=False) as db:
        return db.execute(sql).fetchall()


def rejects_of(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_a_bad_line_leaves_the_table_as_it_was_and_names_the_line(tmp_path: Path) -> None:
    path = make_db(tmp_path / "t.duckdb")
    before = rows_of(path, "SELECT * FROM events ORDER BY i")
    short = tmp_path / "short.csv"  # line 3 has too few fields: pyarrow said only ArrowInvalid
    short.write_text("p,i,note\n9,1,a\n9\n9,3,c\n")
    run = cli_run("load", str(path), "events", str(short))
    assert run.returncode == 1
    assert "short.csv, line 3: expected 3 fields (as the header has), found 1" in run.stderr
    assert "nothing was loaded: events is as it was" in run.stderr
    assert "Traceback" not in run.stderr
    bad_json = tmp_path / "rows.ndjson"
    bad_json.write_text('{"p": 9, "i": 1}\n{"p": 9, "i": 2}\n{"p": 9, i: 3}\n')
    run = cli_run("load", str(path), "events", str(bad_json))
    assert run.returncode == 1
    assert "rows.ndjson, line 3: not JSON" in run.stderr
    # many chunks went in before the bad one, inside the transaction: none stays
    big = tmp_path / "big.csv"
    big.write_text("p,i,note\n" + "".join(f"9,{i},x\n" for i in range(5000)) + "9,oops,x\n")
    run = cli_run("load", str(path), "events", str(big), "--chunk-rows", "100")
    assert run.returncode == 1
    assert "big.csv, line 5002, column i: ConversionError" in run.stderr
    assert rows_of(path, "SELECT * FROM events ORDER BY i") == before


def test_rejects_keep_the_good_rows_and_write_each_bad_line_with_its_reason(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r.duckdb"
    messy = tmp_path / "messy.csv"
    messy.write_text(MESSY)
    rejects = tmp_path / "bad-lines.csv"
    run = cli_run("load", str(path), "t", str(messy), "--pk", "id", "--rejects", str(rejects))
    assert run.returncode == 0, run.stderr
    assert "3 bad lines written to" in run.stderr
    written = rejects_of(rejects)
    assert [(r["line"], r["text"]) for r in written] == [
        ("4", "3"),
        ("7", "5,5,e,extra"),
        ("8", "1,6,dup"),
    ]
    assert "expected 3 fields" in written[0]["reason"]
    assert "ConstraintError" in written[2]["reason"]
    assert rows_of(path, "SELECT id, s FROM t ORDER BY id") == [
        (1, "a"),
        (2, "b"),  # n is inferred as text (its 'x'): a good row
        (4, "two\nlines"),
        (7, "g"),
    ]
    # into an existing INTEGER column the 'x' is a bad row, named with its column
    typed = tmp_path / "typed.duckdb"
    with duckflock.connect(typed) as db:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, s VARCHAR)")
    run = cli_run("load", str(typed), "t", str(messy), "--rejects", str(rejects))
    assert run.returncode == 0, run.stderr
    written = rejects_of(rejects)
    assert [r["line"] for r in written] == ["3", "4", "7", "8"]
    assert written[0]["reason"].startswith("column n: ConversionError")
    assert rows_of(typed, "SELECT id FROM t ORDER BY id") == [(1,), (4,), (7,)]


def test_stdin_is_read_with_a_format(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    lines = "".join(json.dumps({"k": f"k{i}", "v": i}) + "\n" for i in range(50))
    run = cli_run("load", str(path), "kv", "-", "--format", "ndjson", stdin=lines)
    assert run.returncode == 0, run.stderr
    assert "loaded 50 rows from stdin into kv" in run.stderr
    assert rows_of(path, "SELECT count(*), sum(v) FROM kv") == [(50, sum(range(50)))]
    unsaid = cli_run("load", str(path), "kv", "-", stdin=lines)
    assert unsaid.returncode == 2
    assert "pass --format" in unsaid.stderr
    bad = cli_run("load", str(path), "kv", "-", "--format", "csv", stdin="k,v\nz,one\n")
    assert bad.returncode == 1
    assert "stdin, line 2, column v: ConversionError" in bad.stderr


def test_load_on_a_server_is_one_atomic_request(server: ServerProcess, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("p,i,note\n" + "".join(f"1,{i},g\n" for i in range(300)))
    run = cli_run("load", server.url, "events", str(good), "--chunk-rows", "50")
    assert run.returncode == 0, run.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("p,i,note\n" + "".join(f"2,{i},b\n" for i in range(300)) + "2,two,b\n")
    run = cli_run("load", server.url, "events", str(bad), "--chunk-rows", "50")
    assert run.returncode == 1
    assert "bad.csv, line 302, column i: ConversionError" in run.stderr
    assert "nothing was loaded" in run.stderr
    with server.client() as client:  # none of the 300 good rows before it went in
        assert client.execute("SELECT p, count(*) FROM events GROUP BY p").fetchall() == [(1, 300)]
    # a table this load creates is gone again when the load fails
    dupes = tmp_path / "dupes.csv"
    dupes.write_text("p,i,note\n3,1,a\n3,2,b\n3,1,c\n")
    run = cli_run("load", server.url, "fresh", str(dupes), "--pk", "i")
    assert run.returncode == 1
    assert "dupes.csv, line 4" in run.stderr
    assert "ConstraintError" in run.stderr
    with server.client() as client:
        assert "fresh" not in [t["name"] for t in client.tables()]
    rejects = tmp_path / "rejects.csv"
    run = cli_run("load", server.url, "events", str(bad), "--rejects", str(rejects))
    assert run.returncode == 0, run.stderr
    assert [(r["line"], r["text"]) for r in rejects_of(rejects)] == [("302", "2,two,b")]
    with server.client() as client:
        assert client.execute("SELECT count(*) FROM events WHERE p = 2").fetchone() == (300,)


# the spellings pyarrow reads as NULL by default, and values DuckDB reads as floats
NULLISH = (
    'id,name,v\n1,NULL,NaN\n2,nan,nan\n3,N/A,inf\n4,"",-Infinity\n5,,\n6,null,"NaN"\n'
    "7,#N/A,-inf\n8, ,1.5\n"
)
SEEN = "SELECT id, name, name IS NULL, v::VARCHAR, v IS NULL FROM {} ORDER BY id"


def test_csv_values_are_null_only_where_duckdbs_read_csv_says(
    server: ServerProcess, tmp_path: Path
) -> None:
    nullish = tmp_path / "nullish.csv"
    nullish.write_text(NULLISH)
    with duckdb.connect() as con:  # the oracle: DuckDB reading the file by itself
        expected = con.execute(SEEN.format("read_csv(?)"), [str(nullish)]).fetchall()
    path = tmp_path / "n.duckdb"
    assert cli_run("load", str(path), "t", str(nullish)).returncode == 0
    assert rows_of(path, SEEN.format("t")) == expected
    rejects = tmp_path / "rejects.csv"  # read record by record by Python's csv module
    run = cli_run("load", str(path), "kept", str(nullish), "--rejects", str(rejects))
    assert run.returncode == 0, run.stderr
    assert rows_of(path, SEEN.format("kept")) == expected
    run = cli_run("load", server.url, "t", str(nullish))  # to a server, as Arrow
    assert run.returncode == 0, run.stderr
    with server.client() as client:
        assert client.execute(SEEN.format("t")).fetchall() == expected
        client.run("CREATE TABLE posted AS FROM t LIMIT 0")
    posted = httpx.post(  # the rows route reads a CSV body itself
        f"{server.url}/v1/tables/posted/rows",
        content=NULLISH.encode(),
        headers={"Content-Type": "text/csv"},
        timeout=30,
    )
    assert posted.status_code == 200, posted.text
    with server.client() as client:
        assert client.execute(SEEN.format("posted")).fetchall() == expected


def test_load_never_writes_duckflocks_own_schema(tmp_path: Path) -> None:
    path = tmp_path / "own.duckdb"
    with duckflock.connect(path) as db:
        db.analysis("q", "SELECT 1 AS x")  # makes duckflock.analyses
    before = rows_of(path, "SELECT * FROM duckflock.analyses")
    ab = tmp_path / "ab.csv"
    ab.write_text("a,b\n1,2\n")
    for table in ("duckflock.evil", '"DuckFlock".x', "DUCKFLOCK.analyses", "own.duckflock.y"):
        for extra in ((), ("--rejects", str(tmp_path / "r.csv")), ("--chunked",)):
            run = cli_run("load", str(path), table, str(ab), *extra)
            assert run.returncode == 2, (table, extra, run.stderr)
            assert "duckflock's own schema" in run.stderr
            assert "Traceback" not in run.stderr
    schemas = "SELECT DISTINCT table_schema, table_name FROM information_schema.tables"
    assert rows_of(path, schemas) == [("duckflock", "analyses")]
    assert rows_of(path, "SELECT * FROM duckflock.analyses") == before
    # the library's all-or-nothing insert asks the same rule, for a table that exists too
    with duckflock.connect(path) as db:
        chunk = next(loading.chunks_of(str(ab), "csv", 10))
        for create in ('CREATE TABLE "duckflock"."z" (a BIGINT, b BIGINT)', None):
            with pytest.raises(duckflock.QueryRefusedError, match="duckflock's own"):
                insert_all(db, '"duckflock"."analyses"', [chunk], create=create)
    assert rows_of(path, "SELECT * FROM duckflock.analyses") == before


def test_a_line_that_is_not_utf8_is_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "u.duckdb"
    with duckflock.connect(path) as db:
        db.execute("CREATE TABLE t (id INTEGER, name VARCHAR, v DOUBLE)")
    bad = tmp_path / "badutf.csv"
    bad.write_bytes(b"id,name,v\n3,c\xff\xfe,1\n4,d,2\n")
    bad_json = tmp_path / "badutf.ndjson"  # pyarrow's JSON reader took such bytes as text
    bad_json.write_bytes(b'{"id": 4, "name": "d", "v": 2}\n{"id": 3, "name": "c\xff"}\n')
    for source in (bad, bad_json):
        run = cli_run("load", str(path), "t", str(source))  # all or nothing: names the line
        assert run.returncode == 1
        assert f"{source.name}, line 2: not UTF-8: byte 0xff" in run.stderr
        assert "Traceback" not in run.stderr
        assert rows_of(path, "SELECT count(*) FROM t") == [(0,)]
        rejects = tmp_path / f"{source.name}.rejects"
        run = cli_run("load", str(path), "t", str(source), "--rejects", str(rejects))
        assert run.returncode == 0, run.stderr
        written = rejects_of(rejects)
        assert [r["line"] for r in written] == ["2"]
        assert written[0]["reason"].startswith("not UTF-8: byte 0xff")
        assert "\\xff" in written[0]["text"]  # the bad byte shown, the file still UTF-8
        assert rows_of(path, "SELECT id, name FROM t") == [(4, "d")]  # not 'c\ufffd\ufffd'
        with duckflock.connect(path) as db:
            db.execute("DELETE FROM t")


def test_loading_the_same_file_again_into_a_database_file_writes_nothing(tmp_path: Path) -> None:
    """An all-or-nothing load records its key (the file's hash, format, table and chunk
    size) in the same transaction as its rows, as the server path and --chunked do: run
    again, it finds the key and writes nothing; another file loads."""
    path = make_db(tmp_path / "again.duckdb")
    part = tmp_path / "part.csv"
    part.write_text("p,i,note\n8,1,a\n8,2,b\n8,3,c\n")
    count = "SELECT count(*) FROM events WHERE p = 8"
    for _ in range(2):
        run = cli_run("load", str(path), "events", str(part))
        assert run.returncode == 0, run.stderr
        assert rows_of(path, count) == [(3,)]
    other = tmp_path / "other.csv"
    other.write_text("p,i,note\n8,4,d\n")
    assert cli_run("load", str(path), "events", str(other)).returncode == 0
    assert rows_of(path, count) == [(4,)]
    assert cli_run("load", str(path), "events", str(part), "--again").returncode == 0
    assert rows_of(path, count) == [(7,)]
