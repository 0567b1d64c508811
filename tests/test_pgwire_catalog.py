"""The Postgres catalog as psql and BI tools read it, with real PostgreSQL as the oracle.

The same tables are created in a duckflock database (served on the Postgres port, in
this process, with a read-role token) and in a real PostgreSQL (tests/pgcluster.py): what
the real ``psql`` binary prints for ``\\d table``, what ``information_schema.columns``
says and what SQLAlchemy reflects must be what PostgreSQL itself answers. Each of psql's
listing commands is run once, and duckflock's own schema must not show anywhere.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import psycopg
import pytest
from starlette.testclient import TestClient

import duckflock
import pgclients
from duckflock.server.pgwire import PgServer, PgSettings, catalog, types
from duckflock.server.serve import prepare
from duckflock.server.settings import ServerSettings

READ = "catalog-read-token-0123456789"
# spelled so that DuckDB and PostgreSQL both take it, with the same meaning
SCHEMA = [
    "CREATE TABLE events (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
    "value DOUBLE PRECISION, small SMALLINT, big BIGINT, ratio REAL, ok BOOLEAN, day DATE, "
    "at_time TIME, ts TIMESTAMP, tz TIMESTAMPTZ, span INTERVAL, price NUMERIC(10,2), "
    "tags VARCHAR[], counts INTEGER[], uid UUID, raw BYTEA, doc JSON)",
    "CREATE SCHEMA sales",
    "CREATE TABLE sales.orders (order_id BIGINT UNIQUE, customer VARCHAR NOT NULL, "
    "amount NUMERIC(12,3))",
    "CREATE VIEW big_events AS SELECT id, value FROM events WHERE value > 10",
    "CREATE TABLE sales.lines (order_id BIGINT REFERENCES sales.orders(order_id), "
    "qty INTEGER CHECK (qty > 0))",
]
ROWS = [
    "INSERT INTO events (id, name, value, price, tags) VALUES "
    "(1, 'a', 1.5, 2.25, ['x']), (2, 'b', 20.0, NULL, NULL)",
    "INSERT INTO sales.orders VALUES (7, 'c', 3.125)",
]


@dataclass
class Served:
    db: duckflock.Database
    port: int
    postgres: str  # a libpq DSN of the real PostgreSQL database with the same tables
    socket_dir: str
    database: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, postgres: Any) -> Iterator[Served]:
    db = duckflock.connect(str(tmp_path_factory.mktemp("catalog") / "catalog.duckdb"))
    for statement in [*SCHEMA, *ROWS]:
        db.execute(statement)
    db.execute("CREATE MACRO twice(x) AS x * 2")
    db.analysis("per_name", "SELECT name, count(*) AS n FROM events GROUP BY 1")
    db.refresh("per_name")
    db.lock_down()
    dsn = postgres.create_database("catalog_oracle")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in [*SCHEMA, *ROWS]:
            conn.execute(statement.replace("['x']", "ARRAY['x']"))
    server = PgServer(db, ServerSettings(tokens={READ: "read"}), PgSettings(port=0)).start()
    yield Served(db, server.port, dsn, str(postgres.socket_dir), "catalog_oracle")
    server.stop()
    db.close()


def _psql(args: list[str], *commands: str, password: str = "") -> str:
    psql = shutil.which("psql")
    assert psql, "psql is missing: .ci/system-deps installs postgresql-client"
    command = [psql, "-X", "-v", "ON_ERROR_STOP=1", *args]
    for text in commands:
        command += ["-c", text]
    env = {**os.environ, "PGPASSWORD": password, "PGSSLMODE": "disable", "PGCONNECT_TIMEOUT": "10"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not done.stderr, done.stderr
    return done.stdout


def duckflock_psql(served: Served, *commands: str) -> str:
    where = ["-h", "127.0.0.1", "-p", str(served.port), "-U", "duckflock", "duckflock"]
    return _psql(where, *commands, password=READ)


def postgres_psql(served: Served, *commands: str) -> str:
    where = ["-h", served.socket_dir, "-U", "postgres", served.database]
    return _psql(where, *commands)


def _cells(output: str) -> list[tuple[str, ...]]:
    """The rows of psql's aligned tables in ``output`` (headers and rows, not rules)."""
    return [
        tuple(cell.strip() for cell in line.split("|"))
        for line in output.splitlines()
        if "|" in line
    ]


def _section(output: str, title: str) -> list[str]:
    """The lines of a ``\\d`` footer section (``Indexes:``), stripped."""
    lines = output.splitlines()
    if f"{title}:" not in lines:
        return []
    start = lines.index(f"{title}:") + 1
    found = []
    for line in lines[start:]:
        if not line.startswith("    "):
            break
        found.append(line.strip())
    return found


# -- \d table: what PostgreSQL itself prints ----------------------------------------------------


@pytest.mark.parametrize("table", ["events", "sales.orders", "big_events"])
def test_describe_table_prints_what_postgresql_prints(served: Served, table: str) -> None:
    ours, theirs = duckflock_psql(served, f"\\d {table}"), postgres_psql(served, f"\\d {table}")
    assert _cells(ours) == _cells(theirs)  # names, types, collation, nullable, default
    assert ours.split('"')[0].strip() == theirs.split('"')[0].strip()  # Table, View


def test_describe_plus_shows_the_columns_and_a_views_definition(served: Served) -> None:
    ours, theirs = duckflock_psql(served, "\\d+ events"), postgres_psql(served, "\\d+ events")
    assert _cells(ours)[0] == _cells(theirs)[0]  # the same headings
    assert [row[:4] for row in _cells(ours)] == [row[:4] for row in _cells(theirs)]
    view = duckflock_psql(served, "\\d+ big_events")
    assert "View definition:" in view and "value" in view.split("View definition:")[1]


def test_describe_table_shows_primary_keys_and_unique_constraints(served: Served) -> None:
    events = _section(duckflock_psql(served, "\\d events"), "Indexes")
    assert events == ['"events_id_pkey" PRIMARY KEY, art (id)']
    orders = _section(duckflock_psql(served, "\\d sales.orders"), "Indexes")
    assert orders == ['"orders_order_id_key" UNIQUE CONSTRAINT, art (order_id)']
    # PostgreSQL names them its own way, but says the same of them
    assert [line.split(" ", 1)[1].split(",")[0] for line in events] == [
        line.split(" ", 1)[1].split(",")[0]
        for line in _section(postgres_psql(served, "\\d events"), "Indexes")
    ]


def test_describe_table_shows_foreign_keys_and_checks_as_postgresql_does(served: Served) -> None:
    for table in ("sales.lines", "sales.orders"):
        ours, theirs = duckflock_psql(served, f"\\d {table}"), postgres_psql(served, f"\\d {table}")
        for title in ("Check constraints", "Foreign-key constraints", "Referenced by"):
            assert len(_section(ours, title)) == len(_section(theirs, title)), (table, title)
    lines = duckflock_psql(served, "\\d sales.lines")
    assert _section(lines, "Foreign-key constraints") == [
        '"lines_order_id_order_id_fkey" FOREIGN KEY (order_id) REFERENCES sales.orders(order_id)'
    ]
    assert _section(duckflock_psql(served, "\\d sales.orders"), "Referenced by") == [
        'TABLE "lines" CONSTRAINT "lines_order_id_order_id_fkey" FOREIGN KEY (order_id) '
        "REFERENCES sales.orders(order_id)"
    ]


def test_describe_an_analysis_shows_its_results_columns(served: Served) -> None:
    output = duckflock_psql(served, "\\d analyses.per_name")
    assert 'Table "analyses.per_name"' in output
    result = served.db.result("per_name")
    assert result is not None
    names = [row[0] for row in _cells(output)[1:]]
    assert names == result.table.column_names
    assert _cells(output)[1:][1][1] == "bigint"  # count(*)


# -- psql's listing commands ---------------------------------------------------------------------


def test_list_databases(served: Served) -> None:
    rows = _cells(duckflock_psql(served, "\\l"))
    assert rows[0][:3] == ("Name", "Owner", "Encoding")
    (name, owner, encoding, collate, *_), *more = rows[1:]
    assert not more
    assert name == served.db.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    assert (owner, encoding, collate) == ("duckflock", "UTF8", "C")


def test_list_tables_in_the_search_path_as_postgresql_does(served: Served) -> None:
    ours = _cells(duckflock_psql(served, "\\dt"))
    theirs = _cells(postgres_psql(served, "\\dt"))
    assert [row[1:3] for row in ours] == [row[1:3] for row in theirs]  # events, table
    everything = _cells(duckflock_psql(served, "\\dt *.*"))
    assert ("analyses", "per_name", "table", "duckflock") in everything
    assert ("sales", "orders", "table", "duckflock") in everything
    assert not [row for row in everything if row[0] == "duckflock"]  # its own schema


def test_list_tables_with_details(served: Served) -> None:
    rows = _cells(duckflock_psql(served, "\\dt+"))
    header = rows[0]
    assert header[:2] == ("Schema", "Name") and "Access method" in header and "Size" in header
    assert [row[1] for row in rows[1:]] == ["events"]
    assert rows[1][header.index("Persistence")] == "permanent"


def test_list_relations_and_views(served: Served) -> None:
    relations = {row[1]: row[2] for row in _cells(duckflock_psql(served, "\\d"))[1:]}
    theirs = {row[1]: row[2] for row in _cells(postgres_psql(served, "\\d"))[1:]}
    assert relations == theirs == {"events": "table", "big_events": "view"}
    views = _cells(duckflock_psql(served, "\\dv"))[1:]
    assert [row[1:3] for row in views] == [("big_events", "view")]


def test_list_schemas_without_duckflocks_own(served: Served) -> None:
    names = [row[0] for row in _cells(duckflock_psql(served, "\\dn"))[1:]]
    assert names == ["analyses", "main", "sales"]


def test_list_functions(served: Served) -> None:
    rows = _cells(duckflock_psql(served, "\\df"))
    assert rows[0] == ("Schema", "Name", "Result data type", "Argument data types", "Type")
    assert [(row[0], row[1], row[3], row[4]) for row in rows[1:]] == [
        ("main", "twice", "x", "func")
    ]


# -- information_schema and pg_catalog -----------------------------------------------------------


COLUMNS = (
    "SELECT table_name, column_name, ordinal_position, is_nullable, data_type, udt_name "
    "FROM information_schema.columns WHERE table_schema = %s ORDER BY table_name, "
    "ordinal_position"
)


def _by_oid(
    conn: psycopg.Connection[Any], select: str, where: str = "", params: Any = None
) -> dict[int, tuple[Any, ...]]:
    """pg_type's rows, by OID."""
    rows = conn.execute(select + " FROM pg_catalog.pg_type" + where, params).fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


@pytest.mark.parametrize("schema", ["main", "sales"])
def test_information_schema_names_types_as_postgresql_does(served: Served, schema: str) -> None:
    with psycopg.connect(pgclients.dsn(served.port, READ), autocommit=True) as conn:
        ours = conn.execute(COLUMNS, [schema]).fetchall()
        tables = conn.execute(
            "SELECT table_schema, table_name, table_type FROM information_schema.tables "
            "ORDER BY 1, 2"
        ).fetchall()
        formatted = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid WHERE c.relname = 'events' ORDER BY a.attnum"
        ).fetchall()
        typenames = _by_oid(conn, "SELECT oid, typname, typreceive, typarray, typcategory")
    with psycopg.connect(served.postgres, autocommit=True) as conn:
        pg_schema = "public" if schema == "main" else schema
        theirs = conn.execute(COLUMNS, [pg_schema]).fetchall()
        pg_formatted = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = 'events'::regclass AND a.attnum > 0 ORDER BY a.attnum"
        ).fetchall()
        pg_typenames = _by_oid(
            conn,
            "SELECT oid::INTEGER, typname::TEXT, typreceive::TEXT, typarray::INTEGER, "
            "typcategory::TEXT",
            " WHERE oid = ANY(%s)",
            [list(typenames)],
        )
    assert ours and ours == theirs
    assert formatted == pg_formatted
    # every type duckflock lists (types.PG_TYPES, and their arrays), as PostgreSQL lists it
    assert typenames == pg_typenames
    assert ("analyses", "per_name", "BASE TABLE") in tables
    assert not [t for t in tables if t[0] == "duckflock"]


KEYS = [
    "SELECT table_name, constraint_type FROM information_schema.table_constraints "
    "WHERE table_schema = %s AND constraint_type <> 'CHECK' ORDER BY 1, 2",
    "SELECT table_name, column_name, ordinal_position FROM information_schema.key_column_usage "
    "WHERE table_schema = %s ORDER BY 1, 2",
    "SELECT tablename, hasindexes FROM pg_tables WHERE schemaname = %s ORDER BY 1",
    "SELECT viewname FROM pg_views WHERE schemaname = %s",
    "SELECT table_name FROM information_schema.views WHERE table_schema = %s",
    "SELECT tablename FROM pg_indexes WHERE schemaname = %s ORDER BY 1",
]


@pytest.mark.parametrize("sql", KEYS)
@pytest.mark.parametrize("schema", ["main", "sales"])
def test_keys_tables_and_views_are_listed_as_postgresql_lists_them(
    served: Served, schema: str, sql: str
) -> None:
    with psycopg.connect(pgclients.dsn(served.port, READ), autocommit=True) as conn:
        ours = conn.execute(sql, [schema]).fetchall()
        hidden = conn.execute(sql, ["duckflock"]).fetchall()
    with psycopg.connect(served.postgres, autocommit=True) as conn:
        theirs = conn.execute(sql, ["public" if schema == "main" else schema]).fetchall()
    assert ours == theirs
    assert not hidden  # duckflock's own schema: its table has a primary key


def test_analysis_oids_are_stable_and_distinct() -> None:
    names = [hashlib.sha256(str(i).encode()).hexdigest()[:12] for i in range(50_000)]
    hashes = [zlib.crc32(name.encode()) % 2**27 for name in names]
    assert len(set(hashes)) < len(names)  # some of them hash alike
    oids = catalog.analysis_oids(names)
    assert len(set(oids.values())) == len(names)
    assert catalog.analysis_oids(list(reversed(names))) == oids  # any order: the same
    assert all(0 < oid < 2**31 for oid in oids.values())  # clients read OIDs as int4


def test_a_refused_analysis_is_left_out_of_every_listing(tmp_path: Any) -> None:
    # a definition edited into the file offline is refused by the guard at start: it
    # has no table to list, and listing it must not break the catalog for everyone
    import sqlalchemy as sa

    path = tmp_path / "refused.duckdb"
    with duckflock.connect(path) as db:
        db.execute("CREATE TABLE t (v INTEGER)")
        db.analysis("legit", "SELECT count(*) AS n FROM t")
    with duckdb.connect(str(path)) as raw:
        raw.execute(
            "INSERT INTO duckflock.analyses (name, sql, on_change, min_interval) "
            "VALUES ('evil', $$SELECT * FROM read_text('/etc/passwd')$$, false, 0)"
        )
    settings = ServerSettings(tokens={READ: "read"})
    db, app = prepare(str(path), settings, None, "127.0.0.1", pg=PgSettings(port=0))
    with db, TestClient(app):
        assert db.result("legit", min_version=1, timeout=30) is not None
        assert {a["name"]: a["mode"] for a in db.analyses()}["evil"] == "refused"
        port = app.state.pg.port
        where = ["-h", "127.0.0.1", "-p", str(port), "-U", "duckflock", "duckflock"]
        listed = [row[:2] for row in _cells(_psql(where, "\\dt *.*", password=READ))]
        assert ("analyses", "legit") in listed and ("analyses", "evil") not in listed
        with psycopg.connect(pgclients.dsn(port, READ), autocommit=True) as conn:
            relations = conn.execute("SELECT relname FROM pg_catalog.pg_class").fetchall()
            tables = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                ["analyses"],
            ).fetchall()
        assert ("legit",) in relations and ("evil",) not in relations
        assert tables == [("legit",)]
        engine = sa.create_engine(
            f"postgresql+psycopg://duckflock:{READ}@127.0.0.1:{port}/duckflock",
            poolclass=sa.pool.NullPool,
        )
        try:
            assert sa.inspect(engine).get_table_names(schema="analyses") == ["legit"]
        finally:
            engine.dispose()


def test_every_type_a_result_column_can_hold_has_its_array_type() -> None:
    dumped = {oid for oid, adapter in types.ADAPTERS.items() if adapter.dump_text}
    assert set(types.ARRAY_OF) == dumped
    assert all(types.PG_TYPES[oid].array == types.ARRAY_OF[oid] for oid in dumped)
    assert {types.column_type(t).oid for t in ("INTEGER[]", "DATE[]", "UUID[]")} == {
        types.ARRAY_OF[types.Oid.INT4],
        types.ARRAY_OF[types.Oid.DATE],
        types.ARRAY_OF[types.Oid.UUID],
    }


def test_analysis_columns_are_in_information_schema(served: Served) -> None:
    with psycopg.connect(pgclients.dsn(served.port, READ), autocommit=True) as conn:
        rows = conn.execute(COLUMNS, ["analyses"]).fetchall()
    assert [(r[0], r[1], r[4]) for r in rows] == [
        ("per_name", "name", "character varying"),
        ("per_name", "n", "bigint"),
    ]


# -- a BI-style client: SQLAlchemy reflection and pandas ----------------------------------------


def _reflected(engine: Any, schema: str | None) -> dict[str, Any]:
    import sqlalchemy as sa

    inspector = sa.inspect(engine)
    found = {}
    for name in inspector.get_table_names(schema=schema):
        table = sa.Table(name, sa.MetaData(), autoload_with=engine, schema=schema)
        found[name] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"])
                for c in inspector.get_columns(name, schema=schema)
            ],
            "pk": inspector.get_pk_constraint(name, schema=schema)["constrained_columns"],
            "fk": [
                (
                    k["constrained_columns"],
                    k["referred_schema"],
                    k["referred_table"],
                    k["referred_columns"],
                )
                for k in inspector.get_foreign_keys(name, schema=schema)
            ],
            "unique": [
                u["column_names"] for u in inspector.get_unique_constraints(name, schema=schema)
            ],
            "table": [(c.name, str(c.type), c.primary_key) for c in table.columns],
        }
    return found


def test_sqlalchemy_reflects_every_table_as_from_postgresql(served: Served) -> None:
    import pandas as pd
    import sqlalchemy as sa

    ours = sa.create_engine(
        f"postgresql+psycopg://duckflock:{READ}@127.0.0.1:{served.port}/duckflock",
        poolclass=sa.pool.NullPool,
    )
    theirs = sa.create_engine(
        sa.engine.URL.create(
            "postgresql+psycopg",
            username="postgres",
            database=served.database,
            query={"host": served.socket_dir},
        ),
        poolclass=sa.pool.NullPool,
    )
    try:
        for schema, pg_schema in ((None, None), ("sales", "sales")):
            assert _reflected(ours, schema) == _reflected(theirs, pg_schema)
        assert set(sa.inspect(ours).get_schema_names()) >= {"main", "sales", "analyses"}
        assert "duckflock" not in sa.inspect(ours).get_schema_names()
        analyses = _reflected(ours, "analyses")
        assert analyses["per_name"]["columns"] == [("name", "VARCHAR", True), ("n", "BIGINT", True)]
        # every table, read whole with pandas, is what DuckDB holds
        for schema in ("main", "sales", "analyses"):
            for name in sa.inspect(ours).get_table_names(schema=schema):
                table = sa.Table(name, sa.MetaData(), autoload_with=ours, schema=schema)
                frame = pd.read_sql(sa.select(table), ours)
                if schema == "analyses":
                    result = served.db.result(name)
                    assert result is not None
                    expected = result.table.num_rows
                else:
                    row = served.db.execute(f'SELECT count(*) FROM {schema}."{name}"').fetchone()
                    expected = row[0] if row else -1
                assert len(frame) == expected and list(frame.columns) == [
                    c.name for c in table.columns
                ]
    finally:
        ours.dispose()
        theirs.dispose()
