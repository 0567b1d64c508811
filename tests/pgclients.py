"""The real PostgreSQL clients the Postgres port is tested with, behind one small face.

Each adapter connects with a token as the password and runs one statement, returning
rows as tuples; :func:`sqlstate` reads the SQLSTATE out of any client's error.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

# each client is imported when first used: a child process that runs one client
# (test_a_client_killed_mid_result_leaves_the_server_serving) starts faster

CLIENTS = ["psycopg", "pg8000", "asyncpg", "sqlalchemy", "adbc"]


class Client:
    name = ""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Psycopg(Client):
    name = "psycopg"

    def __init__(self, port: int, token: str) -> None:
        super().__init__(port, token)
        psycopg = importlib.import_module("psycopg")
        self.conn = psycopg.connect(dsn(port, token), autocommit=True)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        cursor = self.conn.execute(sql)
        return list(cursor.fetchall()) if cursor.description is not None else []

    def close(self) -> None:
        self.conn.close()


class Pg8000(Client):
    name = "pg8000"

    def __init__(self, port: int, token: str) -> None:
        super().__init__(port, token)
        pg8000 = importlib.import_module("pg8000.native")
        self.conn = pg8000.Connection(
            "duckflock", host="127.0.0.1", port=port, password=token, timeout=30
        )

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.conn.run(sql) or []]

    def close(self) -> None:
        self.conn.close()


class Asyncpg(Client):
    name = "asyncpg"

    def __init__(self, port: int, token: str) -> None:
        super().__init__(port, token)
        asyncpg = importlib.import_module("asyncpg")
        self.loop = asyncio.new_event_loop()
        try:
            self.conn = self.loop.run_until_complete(
                asyncpg.connect(
                    host="127.0.0.1", port=port, user="duckflock", password=token, timeout=30
                )
            )
        except BaseException:
            self.loop.close()
            raise

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        rows = self.loop.run_until_complete(self.conn.fetch(sql))
        return [tuple(row) for row in rows]

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.conn.close(timeout=10))
        finally:
            self.loop.close()


class Sqlalchemy(Client):
    name = "sqlalchemy"

    def __init__(self, port: int, token: str) -> None:
        super().__init__(port, token)
        self.sa = sa = importlib.import_module("sqlalchemy")
        url = f"postgresql+psycopg://duckflock:{token}@127.0.0.1:{port}/duckflock"
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            self.conn = self.engine.connect()
        except BaseException:
            self.engine.dispose()
            raise

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            result = self.conn.execute(self.sa.text(sql))
            rows = [tuple(row) for row in result] if result.returns_rows else []
            self.conn.commit()
            return rows
        except BaseException:
            self.conn.rollback()
            raise

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()


class Adbc(Client):
    name = "adbc"

    def __init__(self, port: int, token: str) -> None:
        super().__init__(port, token)
        uri = f"postgresql://duckflock:{token}@127.0.0.1:{port}/duckflock?sslmode=disable"
        adbc = importlib.import_module("adbc_driver_postgresql.dbapi")
        self.conn = adbc.connect(uri, autocommit=True)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cursor:
            cursor.execute(sql)
            if cursor.description is None:
                return []
            return [tuple(row) for row in cursor.fetchall()]

    def close(self) -> None:
        self.conn.close()


ADAPTERS: dict[str, type[Client]] = {
    c.name: c for c in (Psycopg, Pg8000, Asyncpg, Sqlalchemy, Adbc)
}


def connect(name: str, port: int, token: str) -> Client:
    return ADAPTERS[name](port, token)


def dsn(port: int, token: str, **extra: str) -> str:
    options = {
        "host": "127.0.0.1",
        "port": str(port),
        "user": "duckflock",
        "password": token,
        "dbname": "duckflock",
        "sslmode": "disable",
        "connect_timeout": "10",
        **extra,
    }
    return " ".join(f"{k}={v}" for k, v in options.items())


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE in any of the clients' errors (None when it carries none)."""
    seen: BaseException | None = exc
    while seen is not None:
        code = getattr(seen, "sqlstate", None)
        if isinstance(code, str) and code:
            return code
        args = getattr(seen, "args", ())
        if args and isinstance(args[0], dict) and "C" in args[0]:  # pg8000
            return str(args[0]["C"])
        seen = getattr(seen, "orig", None) or seen.__cause__
    return None


def message(exc: BaseException) -> str:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], dict) and "M" in args[0]:  # pg8000
        return str(args[0]["M"])
    return str(exc)
