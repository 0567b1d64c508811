"""Opening a database file, with errors that say what went wrong and what to do."""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

import duckdb

from duckflock.core.lifecycle import CLOSE_SECONDS, Lifecycle
from duckflock.errors import AlreadyOpenError, DatabaseDamagedError, OpenError

# the open Databases by the key DuckDB's instance cache shares an instance by: a second
# Database on the same file would share the first one's data but not its notices
_HOLDERS: weakref.WeakValueDictionary[object, Any] = weakref.WeakValueDictionary()
_HOLDERS_LOCK = threading.Lock()  # guards _HOLDERS


def _shared_keys(path: str) -> tuple[object, ...]:
    """What DuckDB shares one instance of per process for ``path`` (none: a private
    in-memory database). A named in-memory database (``:memory:name``) is shared too; a
    file is known by its real path and, once it exists, by its device and inode (a hard
    link is another path to it, on which DuckDB would open a second instance)."""
    if path in ("", ":memory:"):
        return ()
    if path.startswith(":memory:"):
        return (path,)
    real = os.path.realpath(path)
    try:
        found = os.stat(real)
    except OSError:  # not made yet: DuckDB creates it
        return (real,)
    return (real, (found.st_dev, found.st_ino))


def claim(path: str, holder: object, shown: str) -> None:
    """Record that ``holder`` (a Database's :class:`Lifecycle`) opens ``path``;
    :class:`AlreadyOpenError` if another open one has it. One dropped unclosed holds it
    until the reaper has closed its writer (waited for, ``CLOSE_SECONDS`` at most):
    its commits would be unseen by the new one. Called again once the file is open, it
    adds the file's inode to what ``holder`` holds."""
    keys = _shared_keys(path)
    while True:
        with _HOLDERS_LOCK:
            others = [_HOLDERS.get(key) for key in keys]
            other = next((o for o in others if o is not None and o is not holder), None)
            if other is None:
                for key in keys:
                    _HOLDERS[key] = holder
                return
        if not isinstance(other, Lifecycle) or other.holds(CLOSE_SECONDS):
            raise AlreadyOpenError(
                f"cannot open database {shown!r}: {other!r} of this process has it "
                "open. DuckDB would share that one's data, but each Database sees only "
                "its own commits and DDL, so the analyses and caches of both would go "
                "stale: use that Database from every thread (it is made for that), or "
                "close it first",
                path=path,
            )
        with _HOLDERS_LOCK:  # its closers ran: it holds nothing (it may be alive still)
            for key in [key for key, held in _HOLDERS.items() if held is other]:
                del _HOLDERS[key]


def release(holder: object) -> None:
    """``holder`` closed: another Database may open its file. What it holds is let go
    as it was claimed (its path may lead elsewhere by now: a relative path read from
    another working directory, a retargeted symlink)."""
    with _HOLDERS_LOCK:
        for key in [key for key, held in _HOLDERS.items() if held is holder]:
            del _HOLDERS[key]


def open_connection(
    path: str, *, read_only: bool, config: dict[str, Any]
) -> duckdb.DuckDBPyConnection:
    """DuckDB's connection to ``path``; a damaged file or WAL, a file that cannot be
    opened, or a refused ``config`` get an error saying why."""
    try:
        return duckdb.connect(path, read_only=read_only, config=config)
    except (duckdb.InvalidInputException, duckdb.ConversionException) as exc:
        # a setting DuckDB does not know, or a value it cannot take: the caller's config
        raise ValueError(f"config {config!r} is refused by DuckDB: {exc}") from exc
    except duckdb.Error as exc:
        damaged = _damaged(path, exc)
        if damaged is not None:
            raise damaged from exc
        raise _open_error(path, exc) from exc


def _damaged(path: str, exc: duckdb.Error) -> DatabaseDamagedError | None:
    """The error for a database that DuckDB cannot open because a file is damaged."""
    message = str(exc)
    lowered = message.lower()
    if not isinstance(exc, duckdb.IOException | duckdb.SerializationException) or not any(
        word in lowered for word in ("corrupt", "checksum", "replaying wal", "damaged")
    ):
        return None
    wal = path + ".wal"
    if "wal" in lowered:
        advice = (
            f"cannot open {path!r}: its write-ahead log {wal!r} is damaged ({message}). "
            f"It holds the commits made since the last checkpoint. To open the database "
            f"as of that checkpoint, move the log aside (mv {wal!r} {wal + '.damaged'!r}) "
            f"and keep it for inspection, or restore both files from a backup."
        )
    else:
        advice = (
            f"cannot open {path!r}: the database file is damaged ({message}). Restore it "
            f"(and {wal!r}) from a backup."
        )
    return DatabaseDamagedError(advice, path=path, wal=wal)


def _open_error(path: str, exc: duckdb.Error) -> OpenError:
    """Why ``path`` could not be opened, in the user's terms."""
    text = str(exc)
    if "lock" in text.lower():
        why = (
            "another process holds it (DuckDB lets one process open a file for writing; if "
            "it is a running `duckflock serve`, go through its URL)"
        )
    elif "No such file or directory" in text:
        why = "its folder does not exist"
    elif "Permission denied" in text:
        why = "permission denied"
    else:
        why = text
    return OpenError(f"cannot open database {path!r}: {why}\n({text})", path=path)
