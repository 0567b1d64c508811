"""duckflock's own schema (``duckflock.analyses``) is written only through the analyses API.

No SQL surface writes it — ``db.execute``/``executemany``/``sql``/``insert``, the HTTP
rows route, ``POST /v1/sql`` and the Postgres port, for every role — whatever the
spelling; kept definitions record who made them; and on start a served database runs a
kept definition only after the same guard as at creation, so a row edited into the
file offline (``read_text('/etc/passwd')``) is listed as refused, never run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

import duckflock
import pgclients
from conftest import ServerProcess, free_port
from duckflock.server import ServerSettings
from duckflock.server.serve import ServeConfig, prepare

READ = "schema-read-token-0123456789"
WRITE = "schema-write-token-0123456789"
ADMIN = "schema-admin-token-0123456789"
HOSTILE = "SELECT * FROM read_text('/etc/passwd')"
PASSWD = Path("/etc/passwd").read_text().splitlines()[0]  # root:x:0:0:… (what must not leak)
ROW = "('hostile', $$" + HOSTILE + "$$, NULL, false, 0, NULL, NULL)"
COLUMNS = "(name, sql, every, on_change, min_interval, timeout, params)"


def _kept(path: Path) -> list[tuple[Any, ...]]:
    """The definitions table, read with plain DuckDB (the file must be closed)."""
    with duckdb.connect(str(path), read_only=True) as raw:
        return raw.execute(
            "SELECT name, sql, defined_by FROM duckflock.analyses ORDER BY name"
        ).fetchall()


def _edit_offline(path: Path, sql: str) -> None:
    """What someone with the file (and no duckflock) can do to it."""
    with duckdb.connect(str(path)) as raw:
        raw.execute(sql)


@pytest.fixture
def kept(tmp_path: Path) -> Iterator[duckflock.Database]:
    """A database file with one kept analysis."""
    with duckflock.connect(tmp_path / "kept.duckdb") as db:
        db.execute("CREATE TABLE t (v INTEGER)")
        db.analysis("legit", "SELECT count(*) AS n FROM t")
        yield db


# -- no SQL surface writes the schema -------------------------------------------------

REFUSED = [
    f"INSERT INTO duckflock.analyses {COLUMNS} VALUES {ROW}",
    f'INSERT INTO "duckflock"."analyses" {COLUMNS} VALUES {ROW}',
    f"INSERT INTO DUCKFLOCK.ANALYSES {COLUMNS} VALUES {ROW}",
    f'INSERT INTO "DuckFlock".analyses {COLUMNS} VALUES {ROW}',
    f"INSERT INTO kept.duckflock.analyses {COLUMNS} VALUES {ROW}",
    f"INSERT INTO duckflock/* a comment */.analyses {COLUMNS} VALUES {ROW}",
    f"INSERT INTO duckflock.analyses {COLUMNS} SELECT * FROM (VALUES {ROW})",
    f"WITH h AS (SELECT * FROM (VALUES {ROW})) INSERT INTO duckflock.analyses SELECT * FROM h",
    f"INSERT OR REPLACE INTO duckflock.analyses {COLUMNS} VALUES {ROW}",
    f"UPDATE duckflock.analyses SET sql = $${HOSTILE}$$",
    "DELETE FROM duckflock.analyses",
    "ALTER TABLE duckflock.analyses ADD COLUMN extra INTEGER",
    "ALTER TABLE duckflock.analyses RENAME TO gone",
    "DROP TABLE duckflock.analyses",
    "DROP SCHEMA duckflock CASCADE",
    "TRUNCATE duckflock.analyses",
    "COPY duckflock.analyses FROM '/dev/null'",
    "CREATE OR REPLACE TABLE duckflock.analyses AS SELECT 1 AS name",
    "CREATE TABLE duckflock.extra (x INTEGER)",
    "CREATE VIEW over_it AS SELECT * FROM duckflock.analyses",
    "USE duckflock",
    "USE kept.duckflock",
    f"PREPARE sneaky AS INSERT INTO duckflock.analyses {COLUMNS} VALUES {ROW}",
    f"SELECT 1; INSERT INTO duckflock.analyses {COLUMNS} VALUES {ROW}",
    f"SET schema = 'duck' || 'flock'; INSERT INTO analyses {COLUMNS} VALUES {ROW}",
    f"SET search_path = 'duckflock'; INSERT INTO analyses {COLUMNS} VALUES {ROW}",
    f"EXPLAIN ANALYZE INSERT INTO duckflock.analyses {COLUMNS} VALUES {ROW}",
]


def _refused(exc: pytest.ExceptionInfo[BaseException]) -> None:
    message = str(exc.value)
    assert "duckflock.analyses" in message and "analyses API" in message, message


@pytest.mark.parametrize("sql", REFUSED)
def test_no_statement_writes_the_project_schema(
    kept: duckflock.Database, sql: str, tmp_path: Path
) -> None:
    before = kept.execute("SELECT * FROM duckflock.analyses").fetchall()
    for run in (kept.execute, kept.sql):
        with pytest.raises(duckflock.QueryRefusedError) as refused:
            run(sql)
        _refused(refused)
    with pytest.raises(duckflock.QueryRefusedError):
        kept.executemany(sql, [])
    assert kept.execute("SELECT * FROM duckflock.analyses").fetchall() == before
    assert kept.execute("SELECT current_schema()").fetchone() == ("main",)
    assert [a["name"] for a in kept.analyses()] == ["legit"]


@pytest.mark.parametrize(
    "statement",
    [
        "SET schema = 'duckflock'",
        "SET schema = 'duck' || 'flock'",
        "SET search_path = 'main,duckflock'",
        "SET search_path = 'DUCK' || 'FLOCK'",
    ],
)
def test_a_write_while_the_schema_is_on_the_search_path_is_refused(
    kept: duckflock.Database, statement: str
) -> None:
    insert = f"INSERT INTO analyses {COLUMNS} VALUES {ROW}"
    for run in (kept.execute, kept.sql):
        run(statement)  # a SET writes nothing; reads may use the new path
        assert kept.execute("SELECT count(*) FROM analyses").fetchone() == (1,)
        with pytest.raises(duckflock.QueryRefusedError) as refused:
            run(insert)
        _refused(refused)
        with pytest.raises(duckflock.QueryRefusedError):
            run(insert)  # still: the path has not changed
        kept.execute("RESET search_path")
        kept.execute("RESET schema")
        with pytest.raises(duckflock.CatalogError) as missing:  # resolves as before
            run(insert)
        assert not isinstance(missing.value, duckflock.QueryRefusedError)
    assert kept.execute("SELECT count(*) FROM duckflock.analyses").fetchone() == (1,)


@pytest.mark.parametrize(
    "name", ["duckflock.analyses", '"duckflock"."analyses"', "DUCKFLOCK.Analyses"]
)
def test_insert_resolves_the_target_and_refuses_the_schema(
    kept: duckflock.Database, name: str
) -> None:
    row = {"name": "hostile", "sql": HOSTILE, "on_change": False, "min_interval": 0}
    with pytest.raises(duckflock.QueryRefusedError) as refused:
        kept.insert(name, row)
    _refused(refused)
    assert kept.execute("SELECT count(*) FROM duckflock.analyses").fetchone() == (1,)


def test_reads_strings_and_other_schemas_are_untouched(kept: duckflock.Database) -> None:
    # reading is not writing; a value or comment that spells the name is not a name
    assert kept.execute("SELECT name FROM duckflock.analyses").fetchall() == [("legit",)]
    kept.execute("CREATE TABLE notes (note VARCHAR)")
    kept.execute("INSERT INTO notes VALUES ('duckflock.analyses') -- duckflock")
    kept.execute("CREATE SCHEMA duckflock_extra")  # a longer name is another schema
    lookalike = '"duckflo\u0441k"'  # a Cyrillic es for the c: another schema
    kept.execute(f"CREATE SCHEMA {lookalike}")
    kept.execute(f"CREATE TABLE {lookalike}.analyses (x INTEGER)")
    kept.execute(f"INSERT INTO {lookalike}.analyses VALUES (1)")
    kept.insert("notes", {"note": "duckflock"})
    assert kept.execute("SELECT count(*) FROM notes").fetchone() == (2,)


# spellings of the schema: ASCII case and quotes resolve to it in DuckDB; look-alikes
# (Cyrillic, a Kelvin sign, full-width letters) are other names, for DuckDB and for us
_LETTER = {
    "d": ["d", "D", "\u0501"],
    "u": ["u", "U", "\u057d"],
    "c": ["c", "C", "\u0441", "\uff43"],
    "k": ["k", "K", "\u212a"],
    "f": ["f", "F"],
    "l": ["l", "L", "\u04cf"],
    "o": ["o", "O", "\u043e", "\uff4f"],
}


@st.composite
def _spelling(draw: st.DrawFn) -> str:
    name = "".join(draw(st.sampled_from(_LETTER[c])) for c in "duckflock")
    quoted = draw(st.booleans()) or not name.isascii()
    table = draw(st.sampled_from(["analyses", "ANALYSES", '"analyses"', '"Analyses"']))
    return f'"{name}".{table}' if quoted else f"{name}.{table}"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spelling=_spelling())
def test_a_spelling_is_refused_exactly_when_duckdb_binds_it_to_the_schema(spelling: str) -> None:
    with duckflock.connect() as db:
        raw = db.cursor()
        raw.execute("CREATE SCHEMA duckflock")
        raw.execute("CREATE TABLE duckflock.analyses (name VARCHAR, sql VARCHAR)")
        try:
            raw.execute(f"SELECT count(*) FROM {spelling}").fetchall()
            binds = True  # DuckDB, the oracle: this spelling is the table
        except duckdb.CatalogException:
            binds = False
        statement = f"INSERT INTO {spelling} VALUES ('h', 'SELECT 1')"
        if binds:
            with pytest.raises(duckflock.QueryRefusedError):
                db.execute(statement)
            with pytest.raises(duckflock.QueryRefusedError):
                db.insert(spelling, {"name": "h", "sql": "SELECT 1"})
        else:
            with pytest.raises(duckflock.CatalogError) as missing:
                db.execute(statement)
            assert not isinstance(missing.value, duckflock.QueryRefusedError)
        assert raw.execute("SELECT count(*) FROM duckflock.analyses").fetchone() == (0,)


# -- who defined it; kept definitions pass the guard on start --------------------------


def test_definitions_record_who_defined_them(tmp_path: Path) -> None:
    path = tmp_path / "who.duckdb"
    with duckflock.connect(path) as db:
        db.analysis("mine", "SELECT 1 AS one")
    db, app = prepare(str(path), ServerSettings(token=ADMIN), None, "127.0.0.1")
    with db, TestClient(app) as http:
        headers = {"Authorization": f"Bearer {ADMIN}"}
        put = http.put("/v1/analyses/theirs", json={"sql": "SELECT 2 AS two"}, headers=headers)
        assert put.status_code == 201, put.text
        listed = http.get("/v1/analyses", headers=headers).json()
        by = {a["name"]: a["defined_by"] for a in listed}
        assert by == {"mine": "library", "theirs": "admin token #1"}
    assert [(name, who) for name, _, who in _kept(path)] == [
        ("mine", "library"),
        ("theirs", "admin token #1"),
    ]


def test_a_file_from_before_provenance_restores(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    _edit_offline(
        path,
        "CREATE SCHEMA duckflock; CREATE TABLE duckflock.analyses (name VARCHAR PRIMARY "
        "KEY, sql VARCHAR NOT NULL, every DOUBLE, on_change BOOLEAN NOT NULL, min_interval "
        "DOUBLE NOT NULL, timeout DOUBLE, params JSON, defined_at TIMESTAMP DEFAULT "
        "current_timestamp); INSERT INTO duckflock.analyses (name, sql, on_change, "
        "min_interval) VALUES ('old', 'SELECT 7 AS seven', false, 0.1)",
    )
    with duckflock.connect(path) as db:
        assert db.refresh("old").rows() == [(7,)]
        assert db.analyses()[0]["defined_by"] == "unknown"
        db.analysis("new", "SELECT 8 AS eight")  # the table gains its defined_by column
    assert [(name, who) for name, _, who in _kept(path)] == [("new", "library"), ("old", None)]


def test_rows_that_are_not_definitions_are_refused_and_a_broken_table_stops_the_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "odd.duckdb"
    _edit_offline(
        path,
        "CREATE SCHEMA duckflock; CREATE TABLE duckflock.analyses (name VARCHAR, sql "
        "VARCHAR, every DOUBLE, on_change BOOLEAN, min_interval DOUBLE, timeout DOUBLE, "
        "params VARCHAR, defined_at TIMESTAMP, defined_by VARCHAR); "
        "INSERT INTO duckflock.analyses VALUES "
        "('no_sql', NULL, NULL, false, 0, NULL, NULL, NULL, 'me'), "
        "('bad_params', 'SELECT 1 AS one', NULL, false, 0, NULL, '{oops', NULL, NULL), "
        "('bad_interval', 'SELECT 1 AS one', NULL, false, -1, NULL, NULL, NULL, NULL)",
    )
    with duckflock.connect(path) as db:
        refused = {a["name"]: a["refused"] for a in db.analyses()}
        assert "not readable" in refused["no_sql"] and "not readable" in refused["bad_params"]
        assert "could not be defined again" in refused["bad_interval"]
        for name in refused:
            db.drop_analysis(name)
        assert db.analyses() == []
    _edit_offline(path, "ALTER TABLE duckflock.analyses DROP COLUMN sql")
    with pytest.raises(duckflock.OpenError, match="restore_analyses=False"):
        duckflock.connect(path)
    with duckflock.connect(path, restore_analyses=False) as db:
        assert db.analyses() == []


def test_an_offline_edited_definition_gets_no_further_than_the_guard(tmp_path: Path) -> None:
    path = tmp_path / "edited.duckdb"
    with duckflock.connect(path) as db:
        db.execute("CREATE TABLE t (v INTEGER)")
        db.analysis("legit", "SELECT count(*) AS n FROM t")
    _edit_offline(path, f"INSERT INTO duckflock.analyses {COLUMNS} VALUES {ROW}")
    settings_ = ServerSettings(tokens={READ: "read", ADMIN: "admin"})
    db, app = prepare(str(path), settings_, None, "127.0.0.1")
    with db, TestClient(app) as http:
        reader = {"Authorization": f"Bearer {READ}"}
        listed = {a["name"]: a for a in http.get("/v1/analyses", headers=reader).json()}
        assert listed["legit"]["refused"] is None
        assert listed["hostile"]["mode"] == "refused"
        assert "read_text() is not allowed" in listed["hostile"]["refused"]
        assert listed["hostile"]["version"] == 0 and listed["hostile"]["rows"] is None
        health = http.get("/v1/health").json()
        assert health["status"] == "ok"
        assert [r["name"] for r in health["refused_analyses"]] == ["hostile"]
        metrics = http.get("/metrics", headers=reader).text
        assert "duckflock_analyses_refused 1.0" in metrics
        result = http.get("/v1/analyses/hostile/result", headers=reader)
        assert result.status_code == 404
        legit = http.get("/v1/analyses/legit/result", headers=reader)
        assert legit.status_code == 200 and legit.json()["rows"] == [[0]]
        everything = [result.text, legit.text, str(listed), str(health)]
        assert not any(PASSWD in text for text in everything)
        # it stays for an admin to inspect, and dropping it through the API works
        admin = {"Authorization": f"Bearer {ADMIN}"}
        assert http.delete("/v1/analyses/hostile", headers=reader).status_code == 403
        assert http.delete("/v1/analyses/hostile", headers=admin).status_code == 204
        assert [a["name"] for a in http.get("/v1/analyses", headers=reader).json()] == ["legit"]
        assert "refused_analyses" not in http.get("/v1/health").json()
    assert [name for name, _, _ in _kept(path)] == ["legit"]


def test_a_config_analysis_passes_the_guard_before_it_runs(tmp_path: Path) -> None:
    config = tmp_path / "duckflock.toml"
    config.write_text(f'[[analyses]]\nname = "peek"\nsql = "{HOSTILE}"\n')
    path = tmp_path / "config.duckdb"
    with pytest.raises(ValueError, match=r"analyses\[0\] \('peek'\).*read_text"):
        prepare(str(path), ServerSettings(), ServeConfig.load(config), "127.0.0.1")
    with duckflock.connect(path) as db:  # closed by the failed start, nothing kept
        assert db.analyses() == []


def test_a_library_database_keeps_restoring_its_own_definitions(tmp_path: Path) -> None:
    # without a server there is no guard: the file's owner runs what it defined, and a
    # refused definition is only what a check refuses
    path = tmp_path / "lib.duckdb"
    with duckflock.connect(path) as db:
        db.analysis("answer", "SELECT 42 AS a")
    with duckflock.connect(path, restore_analyses=False) as db:

        def no_answers(sql: str) -> None:
            if "42" in sql:
                raise duckflock.QueryRefusedError("no answers here", sql=sql)

        db.restore_analyses(no_answers)
        assert db.analyses()[0]["refused"] == "refused by the statement guard: no answers here"
        db.analysis("answer", "SELECT 41 AS a")  # defined anew: no longer refused
        assert db.analyses()[0]["refused"] is None
    with duckflock.connect(path) as db:
        assert db.refresh("answer").rows() == [(41,)]


# -- a real server: HTTP and the Postgres port, every role ------------------------------


def _http(server: ServerProcess, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def _pg(port: int, token: str) -> psycopg.Connection[Any]:
    return psycopg.connect(pgclients.dsn(port, token), autocommit=True)


def _serve(path: Path, pg_port: int) -> ServerProcess:
    return ServerProcess(
        path,
        "--pg-port",
        str(pg_port),
        env={
            "DUCKFLOCK_READ_TOKEN": READ,
            "DUCKFLOCK_WRITE_TOKEN": WRITE,
            "DUCKFLOCK_ADMIN_TOKEN": ADMIN,
        },
    )


def test_a_served_database_refuses_every_role_and_runs_only_guarded_definitions(
    tmp_path: Path,
) -> None:
    path = tmp_path / "served.duckdb"
    with duckflock.connect(path) as db:
        db.execute("CREATE TABLE events (v INTEGER)")
    pg_port = free_port()
    server = _serve(path, pg_port)
    try:
        with _http(server, ADMIN) as admin:
            put = admin.put("/v1/analyses/legit", json={"sql": "SELECT count(*) AS n FROM events"})
            assert put.status_code == 201, put.text
        row = {"name": "hostile", "sql": HOSTILE, "on_change": False, "min_interval": 0}
        with _http(server, WRITE) as writer:
            for name in ("duckflock.analyses", '"DUCKFLOCK"."analyses"'):
                response = writer.post(f"/v1/tables/{name}/rows", json=[row])
                assert response.status_code == 403, response.text
                error = response.json()["error"]
                assert error["type"] == "QueryRefusedError"
                assert "duckflock.analyses" in error["message"]
        with _http(server, ADMIN) as admin:
            for sql in (f"INSERT INTO duckflock.analyses {COLUMNS} VALUES {ROW}", REFUSED[7]):
                response = admin.post("/v1/sql", json={"sql": sql})
                assert response.status_code == 403, response.text
                assert "analyses API" in response.json()["error"]["message"]
        insert = f"INSERT INTO duckflock.analyses {COLUMNS} VALUES {ROW}"
        for token in (WRITE, ADMIN):
            for sql in (insert, insert.replace("duckflock.analyses", '"DuckFlock".analyses')):
                with _pg(pg_port, token) as conn, pytest.raises(psycopg.Error) as refused:
                    conn.execute(sql)
                assert pgclients.sqlstate(refused.value) == "42501"
                assert "duckflock.analyses" in str(refused.value)
        with _pg(pg_port, ADMIN) as conn, pytest.raises(psycopg.Error):
            conn.execute("UPDATE duckflock.analyses SET sql = 'SELECT 1'")
    finally:
        assert server.stop() == 0
    assert [name for name, _, _ in _kept(path)] == ["legit"]  # nothing got in

    # what the guard could not stop at the door: the file edited offline
    _edit_offline(path, f"INSERT INTO duckflock.analyses {COLUMNS} VALUES {ROW}")
    server = _serve(path, pg_port := free_port())
    try:
        with _http(server, READ) as reader:
            listed = {a["name"]: a for a in reader.get("/v1/analyses").json()}
            assert listed["legit"]["refused"] is None
            assert listed["legit"]["defined_by"] == "admin token #3"
            assert "read_text() is not allowed" in listed["hostile"]["refused"]
            health = reader.get("/v1/health").json()
            assert [r["name"] for r in health["refused_analyses"]] == ["hostile"]
            seen = [str(listed), str(health)]
            for route in ("/v1/analyses/hostile/result", "/v1/analyses/legit/result"):
                seen.append(reader.get(route, params={"timeout": 10}).text)
            assert "[[0]]" in seen[-1].replace(" ", "")  # the legit one survived and ran
        with _pg(pg_port, READ) as conn:
            for sql in ("SELECT * FROM analyses.hostile", "SELECT * FROM read_text('/etc/passwd')"):
                with contextlib.suppress(psycopg.Error):
                    seen.append(str(conn.execute(sql).fetchall()))
        assert not any(PASSWD in text for text in seen)
        with _http(server, ADMIN) as admin:
            assert admin.delete("/v1/analyses/hostile").status_code == 204
    finally:
        assert server.stop() == 0
    assert [name for name, _, _ in _kept(path)] == ["legit"]
