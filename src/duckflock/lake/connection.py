"""DuckLake: one dataset written and analysed by many duckflock processes and machines.

``connect("ducklake:postgres:dbname=… host=…", data_path=…)`` opens an in-memory DuckDB,
loads the ``ducklake`` and ``postgres_scanner`` extensions from their pinned wheels (the
``duckflock[lake]`` extra: ``LOAD '<file inside the wheel>'``, never a network
``INSTALL``), attaches the lake as ``lake`` and makes it every cursor's default catalog
(``USE`` is per cursor in DuckDB, so :func:`prepare` runs on each new one). A
``ducklake:<file>`` target keeps the catalog in a DuckDB file instead: one host, one
process.

What the catalog does, checked by experiment on 1.5.5: appends from several processes
into one table all commit (DuckLake retries its metadata commit itself,
``ducklake_max_retry_count``). A catalog that cannot be reached fails a statement with
an IOException ("Failed to query most recent snapshot …", "Unable to connect to
Postgres"), and the same connection works again once PostgreSQL is back; PostgreSQL
stopped in the middle of a commit fails it with "Failed to commit: Failed to execute
query …", when it cannot be told whether the commit landed. :class:`Retry` tags each
commit so that the writer can ask, and retries the batch only if it did not. Each
commit is one snapshot; ``ducklake_current_snapshot`` reads the latest id in ~1.4 ms,
which :mod:`duckflock.lake.watch` polls.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from duckflock.core.cursors import first_row
from duckflock.errors import OpenError
from duckflock.lake.lock import CommitLock
from duckflock.sql import quote_literal

PREFIX = "ducklake:"
_SETTING = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CATALOG = "lake"  # the name the lake is attached as, and every cursor's default
EXTRA = "lake"
# (wheel module, extension): the wheels of duckdb-extension-* for DuckDB's own version
_EXTENSIONS = (
    ("duckdb_extension_ducklake", "ducklake"),
    ("duckdb_extension_postgres_scanner", "postgres_scanner"),
)
# words of an error saying the catalog is away (before or during a statement): worth
# waiting for, and a batch that failed so is retried once the catalog says it did not land
_UNREACHABLE = (
    "unable to connect to postgres",
    "failed to query most recent snapshot",
    "failed to execute query",
    "could not connect to server",
    "connection refused",
    "server closed the connection",
    "no connection to the server",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
)


@dataclass(frozen=True)
class LakeOptions:
    """How a Database uses a DuckLake (``connect(…, lake=LakeOptions(…))``).

    ``inline_rows``: commits of at most this many rows are kept in the catalog instead
    of a Parquet file each (DuckLake's data inlining; 0 turns it off).
    ``poll_interval``: seconds between looks at the catalog's latest snapshot; a change
    made by any process refreshes the ``on_change`` analyses.
    ``maintenance_interval``: seconds between maintenance runs (None: never; call
    ``db.maintain()``); each run does the steps in ``maintenance``.
    ``expire_older_than``: snapshots older than this (a DuckDB interval) are expired, and
    files scheduled for deletion that long ago are deleted.
    ``retry_seconds``: how long the writer keeps retrying a batch while the catalog
    cannot be reached, before its callers get a :class:`StorageError`.
    ``settings``: extra DuckDB settings, set at open; they override
    :data:`RETRY_SETTINGS` (how DuckLake retries a commit that lost a race).
    ``serial_commits``: seconds a commit waits for the lake's commit lock (a PostgreSQL
    advisory lock that every duckflock writer of the lake holds from the start of a
    batch's transaction to its COMMIT, :class:`CommitLock`), after which it commits
    without; None (the default): no lock, DuckLake's own retries settle the races.
    """

    inline_rows: int = 1000
    poll_interval: float = 0.5
    maintenance_interval: float | None = 60.0
    maintenance: tuple[str, ...] = ("flush", "merge", "expire", "cleanup")
    expire_older_than: str = "1 hour"
    retry_seconds: float = 30.0
    settings: dict[str, Any] = field(default_factory=dict)
    serial_commits: float | None = None

    def __post_init__(self) -> None:
        from duckflock.core.checks import count, seconds

        count(self.inline_rows, "inline_rows")
        for name in self.settings:
            if not isinstance(name, str) or not _SETTING.fullmatch(name):
                raise ValueError(f"settings: {name!r} is not a DuckDB setting name")
        seconds(self.poll_interval, "poll_interval", minimum=0.01, optional=False)
        seconds(self.maintenance_interval, "maintenance_interval", minimum=0.1)
        seconds(self.retry_seconds, "retry_seconds", optional=False)
        seconds(self.serial_commits, "serial_commits", minimum=0.001)
        if not isinstance(self.maintenance, tuple | list) or not all(
            isinstance(step, str) for step in self.maintenance
        ):
            raise TypeError(f"maintenance must be a tuple of step names, not {self.maintenance!r}")
        if not isinstance(self.expire_older_than, str):
            raise TypeError(
                "expire_older_than must be a DuckDB interval string, "
                f"not {self.expire_older_than!r}"
            )
        try:  # checked now: a bad one would fail every maintenance run, on a thread, in a log
            with duckdb.connect(":memory:") as probe:
                probe.execute("SELECT CAST(? AS INTERVAL)", [self.expire_older_than])
        except duckdb.Error:
            raise ValueError(
                f"expire_older_than must be a DuckDB interval such as '1 hour', "
                f"not {self.expire_older_than!r}"
            ) from None
        unknown = set(self.maintenance) - set(STEPS)
        if unknown:
            raise ValueError(f"maintenance steps are {sorted(STEPS)}, not {sorted(unknown)}")


# DuckLake's own retries of a commit that lost the race for the next snapshot id to
# another writer (its catalog transaction spans the Parquet write, so with 4 busy
# writers about half the commits lose once: 27-32 snapshot inserts per 20 commits,
# measured). DuckLake sleeps ``wait * uniform(0.5, 1) * backoff**i`` before retry i;
# its defaults (100 ms, 1.5, 10 tries) put 50-100 ms of sleep on each lost race, which
# small commits felt most: 4 processes of single rows went from 9-28k to 23-74k rows/s
# (benchmarks/lake.py --quick, interleaved). From 5 ms the first retries come at once
# and later ones still back off: 20 tries sleep at most ~33 s in all, more patient than
# the defaults' ~11 s. ``LakeOptions.settings`` wins.
RETRY_SETTINGS: dict[str, Any] = {
    "ducklake_retry_wait_ms": 5,
    "ducklake_retry_backoff": 1.5,
    "ducklake_max_retry_count": 20,
}

# maintenance steps and the DuckLake call each one makes (?: expire_older_than)
STEPS = {
    "flush": f"CALL ducklake_flush_inlined_data('{CATALOG}')",
    "merge": f"CALL ducklake_merge_adjacent_files('{CATALOG}')",
    "expire": (
        f"CALL ducklake_expire_snapshots('{CATALOG}', older_than => now() - CAST(? AS INTERVAL))"
    ),
    # only files scheduled for deletion that long ago: another process may still read them
    "cleanup": (
        f"CALL ducklake_cleanup_old_files('{CATALOG}', older_than => now() - CAST(? AS INTERVAL))"
    ),
}


def is_lake(target: str) -> bool:
    return target.startswith(PREFIX)


def extension_path(module: str, name: str) -> str:
    """The extension file inside its wheel; ImportError naming the extra if missing."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ImportError(
            f"a DuckLake database needs the {EXTRA!r} extra ({module} is not installed): "
            f"pip install 'duckflock[{EXTRA}]'"
        )
    path = Path(spec.origin).parent / "extensions" / f"v{duckdb.__version__}"
    found = path / f"{name}.duckdb_extension"
    if not found.is_file():
        raise ImportError(
            f"{module} has no {name} extension for DuckDB {duckdb.__version__} ({found}): "
            f"pip install 'duckflock[{EXTRA}]' to get the matching version"
        )
    return str(found)


def open_lake(
    target: str,
    *,
    data_path: str | os.PathLike[str] | None,
    options: LakeOptions,
    read_only: bool,
    config: dict[str, Any],
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the lake ``target`` attached as ``lake`` and in use."""
    paths = [extension_path(module, name) for module, name in _EXTENSIONS]
    try:
        connection = duckdb.connect(":memory:", config=config)
    except (duckdb.InvalidInputException, duckdb.ConversionException) as exc:
        raise ValueError(f"config {config!r} is refused by DuckDB: {exc}") from exc
    try:
        for path in paths:
            connection.execute(f"LOAD {quote_literal(path)}")
        for name, value in {**RETRY_SETTINGS, **options.settings}.items():
            connection.execute(f"SET {name} = {quote_literal(str(value))}")
        attach = [f"DATA_INLINING_ROW_LIMIT {int(options.inline_rows)}"]
        if data_path is not None:
            attach.append(f"DATA_PATH {quote_literal(os.fspath(data_path))}")
        if read_only:
            attach.append("READ_ONLY")
        connection.execute(f"ATTACH {quote_literal(target)} AS {CATALOG} ({', '.join(attach)})")
        connection.execute(f"USE {CATALOG}")
    except duckdb.Error as exc:
        connection.close()
        # from None: DuckDB's own error, chained as the cause, quotes the connection string
        # with its password, and every logged traceback would print it
        raise OpenError(
            f"cannot open the lake {redact(target)!r}: {redact(str(exc))}", path=redact(target)
        ) from None
    if options.serial_commits is not None and not CommitLock.possible(connection, CATALOG):
        connection.close()
        raise ValueError(
            "serial_commits needs a lake whose catalog is in PostgreSQL "
            f"('ducklake:postgres:…'), not {redact(target)!r}"
        )
    return connection


_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s\"']+)", re.IGNORECASE)
# libpq's URI spelling: postgresql://user:password@host/db
_URI_PASSWORD = re.compile(r"(\b[A-Za-z][\w+.-]*://[^\s:/@\"']*:)([^\s@\"']*)(@)")


def redact(text: str) -> str:
    """``text`` without a libpq ``password=…`` or a URI's ``user:password@`` (DuckDB's
    errors quote the whole connection string): it goes into errors, logs and the
    server's state."""
    return _URI_PASSWORD.sub(r"\1…\3", _PASSWORD.sub(r"\1…", text))


def prepare(cursor: duckdb.DuckDBPyConnection) -> None:
    """Make the lake the default catalog of a new cursor (USE is per cursor)."""
    cursor.execute(f"USE {CATALOG}")


def unreachable(exc: BaseException) -> bool:
    """True when ``exc`` says the catalog could not be reached (or went away)."""
    message = str(exc).lower()
    return isinstance(exc, duckdb.Error) and any(word in message for word in _UNREACHABLE)


class Retry:
    """How the writer commits on a lake, and when it tries a batch again.

    Each batch's commit carries a tag (DuckLake's commit message). A commit can fail
    after PostgreSQL took it -- the connection dropped before the answer came -- so
    after a storage failure :meth:`landed` asks the catalog whether the tag is there:
    if so the batch is committed, else it is tried again (nothing was). The catalog
    may be away meanwhile: up to ``seconds`` pass before the callers get a
    :class:`StorageError`. A conflict DuckLake's own retries did not resolve is tried
    again a few times, then raised as :class:`ConflictError`.
    """

    CONFLICT_ATTEMPTS = 5
    AUTHOR = "duckflock"

    def __init__(self, seconds: float, lock: CommitLock | None = None) -> None:
        self.seconds = seconds
        self.retries = 0  # batches tried again, for stats
        self.lock = lock

    @classmethod
    def of(cls, options: LakeOptions) -> Retry:
        """The writer's Retry for a lake opened with ``options``."""
        wait = options.serial_commits
        return cls(options.retry_seconds, None if wait is None else CommitLock(wait, CATALOG))

    @staticmethod
    def new_tag() -> str:
        return uuid.uuid4().hex

    @contextlib.contextmanager
    def window(self, tag: str) -> Iterator[Callable[[duckdb.DuckDBPyConnection], None]]:
        """One attempt to commit the batch tagged ``tag``: yields what runs first in its
        transaction (the commit lock, if any, then the commit message); the lock is
        let go when the attempt ends, committed or not."""

        def begin(cursor: duckdb.DuckDBPyConnection) -> None:
            if self.lock is not None:
                self.lock.acquire(cursor)
            cursor.execute(f"CALL {CATALOG}.set_commit_message(?, ?)", [self.AUTHOR, tag])

        try:
            yield begin
        finally:
            if self.lock is not None:
                self.lock.release()

    def landed(self, cursor: duckdb.DuckDBPyConnection, tag: str, started: float) -> bool | None:
        """Whether the commit tagged ``tag`` is in the lake; None when the catalog
        stayed away past the deadline (or cannot be asked)."""
        attempt = 0
        while True:
            try:
                row = first_row(
                    cursor.execute(
                        f"SELECT count(*) FROM {CATALOG}.snapshots() "
                        "WHERE author = ? AND commit_message = ?",
                        [self.AUTHOR, tag],
                    )
                )
                return bool(row and row[0])
            except duckdb.Error as exc:
                with contextlib.suppress(duckdb.Error):
                    cursor.execute("ROLLBACK")
                if not unreachable(exc) or time.monotonic() - started >= self.seconds:
                    return None
            time.sleep(min(1.0, 0.05 * 2**attempt))
            attempt += 1

    def delay(self, exc: BaseException, attempt: int, started: float) -> float | None:
        """Seconds to wait before trying again, or None to give up. ``exc`` is a
        storage failure known not to have committed, or a conflict."""
        if self.conflict(exc):
            if attempt >= self.CONFLICT_ATTEMPTS:
                return None
            self.retries += 1
            return random.uniform(0, 0.05 * 2**attempt)
        if not isinstance(exc, duckdb.Error) and exc.__cause__ is None:
            return None  # not a failure of DuckDB's: the rows' fault (a bad value)
        if isinstance(exc, duckdb.Error) and not unreachable(exc):
            return None  # the rows' fault
        if time.monotonic() - started >= self.seconds:
            return None
        self.retries += 1
        return float(min(1.0, 0.05 * 2**attempt))

    @staticmethod
    def conflict(exc: BaseException) -> bool:
        """A write-write conflict DuckLake did not resolve by its own retries."""
        return isinstance(exc, duckdb.Error) and "conflict" in str(exc).lower()


def snapshot_id(cursor: duckdb.DuckDBPyConnection) -> int | None:
    """The lake's latest snapshot id, read from the catalog now."""
    row = first_row(cursor.execute(f"SELECT id FROM ducklake_current_snapshot('{CATALOG}')"))
    return None if row is None or row[0] is None else int(row[0])


def data_files(cursor: duckdb.DuckDBPyConnection) -> int:
    """How many data files the lake's current snapshot references, over all tables."""
    tables = cursor.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ?",
        [CATALOG],
    ).fetchall()
    total = 0
    for schema, table in tables:
        with contextlib.suppress(duckdb.Error):  # a table dropped in between
            row = first_row(
                cursor.execute(
                    f"SELECT count(*) FROM ducklake_list_files('{CATALOG}', ?, schema => ?)",
                    [table, schema],
                )
            )
            total += int(row[0]) if row else 0
    return total


def allowed_directories(cursor: duckdb.DuckDBPyConnection) -> list[str]:
    """The settings that keep the lake's data path writable under ``lock_down``.

    With external access off, DuckDB allows only ``allowed_directories``, and there
    DuckLake creates one folder level, not two (checked on 1.5.5): each schema's folder
    under the data path is made now, so a table's first file can make its own.
    """
    row = first_row(
        cursor.execute(
            f"SELECT value FROM ducklake_options('{CATALOG}') WHERE option_name = 'data_path'"
        )
    )
    if row is None or not row[0]:
        return []
    data_path = str(row[0])
    if "://" not in data_path:
        schemas = cursor.execute(
            "SELECT schema_name FROM duckdb_schemas() WHERE database_name = ?", [CATALOG]
        ).fetchall()
        for (schema,) in schemas:
            os.makedirs(os.path.join(data_path, str(schema)), exist_ok=True)
    return [f"SET allowed_directories = [{quote_literal(data_path)}]"]
