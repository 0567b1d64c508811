"""A DuckDB of its own for the fold queries that read only Arrow tables.

A fold query of a planned shape (:mod:`duckflock.live.fold.merges`: the new rows' keys
and partials) reads nothing of the database but the Arrow tables handed to it. On the
database's own instance each such query pays for its worker threads (hand-offs of a
10,000-row scan) and shares that instance's scheduler with the writer and every other
query: ~2.4 ms where the same query costs ~1.3 ms on an in-memory instance with
``threads = 1`` (the calling thread runs it).

So such a query runs on a *detached* in-memory instance — one per distinct set of
result-changing settings (:data:`duckflock.core.effects.SETTINGS`, ``RESULTS``), each
with the database's values of those settings set once when it is opened and
``threads = 1`` — on a cursor of the calling thread's own. The planner
(:func:`settings_for`) detaches a query only where that cannot change its answer:

- no function it calls is one of the database's own (a macro, possibly shadowing a
  built-in such as ``date_trunc``; a Python UDF does not bind on the instance at all);
- it binds on the detached instance and gives the same column types as on the
  database's.

A change of a ``RESULTS`` setting or of the catalog makes every analysis plan again
(:mod:`duckflock.core.effects`), so the settings a plan took stay the database's. A fold
of more than :data:`BYTES` of new rows runs on the analysis's cursor, which the scheduler's
time limit interrupts.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Protocol

import duckdb
import pyarrow as pa

from duckflock.core.effects import values
from duckflock.core.syntax import parse, walk
from duckflock.errors import QueryError
from duckflock.live.fold.query import arrow_types, over_arrow
from duckflock.sql import quote_ident, quote_literal

Settings = tuple[tuple[str, str], ...]  # (name, value): the RESULTS settings to set

# bytes of Arrow input at most per detached query: the scheduler interrupts a run past
# its time limit through the analysis's cursor, not this one, so a detached query stays
# short (milliseconds: 10,000 new rows of six columns are ~0.4 MB); more input runs on
# the analysis's cursor (and the database's threads)
BYTES = 8 << 20
_INSTANCES = 8  # distinct settings at most (past it, fold queries stay on the database)
_lock = threading.Lock()  # guards _instances and _users
_instances: dict[Settings, duckdb.DuckDBPyConnection] = {}
_local = threading.local()  # per thread: {settings: (instance, cursor)}


class User(Protocol):
    """A database's runner of fold queries (its scheduler), between :func:`attach` and
    :func:`detach`: it says which settings its plans run fold queries under."""

    def detached_settings(self) -> set[Settings]: ...


# the open databases' users of the instances: when one detaches, every instance that
# none of the others' plans runs under is closed (its memory given back)
_users: weakref.WeakSet[User] = weakref.WeakSet()


def attach(user: User) -> None:
    """``user`` (a database's scheduler) may run fold queries here from now on."""
    with _lock:
        _users.add(user)


def detach(user: User) -> None:
    """``user`` is closing: close the instances no other user's plans run under. An
    instance closed under a plan made meanwhile is opened again on its next use."""
    with _lock:
        _users.discard(user)
        others = list(_users)
    wanted: set[Settings] = set()
    for other in others:  # (outside _lock: each takes its own registry's lock)
        wanted |= other.detached_settings()
    with _lock:
        closing = [settings for settings in _instances if settings not in wanted]
        instances = [_instances.pop(settings) for settings in closing]
    for con in instances:  # its cursors, each thread's, close with it
        with contextlib.suppress(duckdb.Error):
            con.close()


def in_use() -> tuple[int, int]:
    """How many databases use the detached instances, and how many are open now."""
    with _lock:
        return len(_users), len(_instances)


@functools.cache
def _defaults() -> dict[str, str]:
    """The result settings' values on a new instance: read once a process (an instance
    opened for it cost about as much as the rest of :func:`settings_for`)."""
    fresh = duckdb.connect(":memory:")
    try:
        return values(fresh)
    finally:
        fresh.close()


def _instance(settings: Settings) -> duckdb.DuckDBPyConnection | None:
    """The detached instance for ``settings`` (opened on first use); None past
    :data:`_INSTANCES` or where DuckDB refuses one of the settings."""
    with _lock:
        found = _instances.get(settings)
        if found is not None or len(_instances) >= _INSTANCES:
            return found
        con = duckdb.connect(":memory:", config={"threads": 1})
        try:
            # a hash join pushes its build side's min/max and IN filters into an Arrow
            # scan, which pyarrow evaluates with its own semantics (NaN compares unequal
            # and above no bound, -0.0 is not in [0.0]; a VARINT key is refused): a join
            # of Arrow tables here (joins.py's fold) lost rows a full run joins
            con.execute("SET GLOBAL disabled_optimizers = 'join_filter_pushdown'")
            for name, value in settings:
                con.execute(f"SET GLOBAL {quote_ident(name)} = {quote_literal(value)}")
            if dict(settings) != {k: v for k, v in values(con).items() if k in dict(settings)}:
                con.close()
                return None
        except duckdb.Error:
            con.close()
            return None
        _instances[settings] = con
        return con


def cursor(settings: Settings) -> duckdb.DuckDBPyConnection | None:
    """The calling thread's cursor on the detached instance for ``settings``."""
    mine: dict[Settings, tuple[duckdb.DuckDBPyConnection, duckdb.DuckDBPyConnection]] | None
    mine = getattr(_local, "cursors", None)
    if mine is None:
        mine = _local.cursors = {}
    found = mine.get(settings)
    # (one read of the dict: a cursor of an instance closed since (detach) is dropped)
    if found is None or _instances.get(settings) is not found[0]:
        instance = _instance(settings)
        if instance is None:
            mine.pop(settings, None)
            return None
        found = mine[settings] = (instance, instance.cursor())
    return found[1]


def settings_for(
    database: duckdb.DuckDBPyConnection,
    queries: Sequence[tuple[str, Mapping[str, pa.Table]]],
    own: frozenset[str] | None = None,
) -> Settings | None:
    """The settings under which every query of ``queries`` (SQL over the named Arrow
    tables, here empty) may run detached; None where one may not (above). ``own``: the
    lower-case names of the database's own functions (not built in), when the caller
    read them already (a scan of ``duckdb_functions()`` costs ~17 ms)."""
    try:
        if own is None:
            own = frozenset(
                str(name).lower()
                for (name,) in database.execute(
                    "SELECT DISTINCT function_name FROM duckdb_functions() WHERE NOT internal"
                ).fetchall()
            )
        if own:  # (none: no query can call one, and parsing them costs ~1 ms each)
            called = {
                str(node.get("function_name", "")).lower()
                for sql, _ in queries
                for node in walk(parse(database, sql))
                if node.get("class") == "FUNCTION"
            }
            if own & called:
                return None
        defaults = _defaults()
        wanted = values(database)
        settings = tuple(
            sorted((name, value) for name, value in wanted.items() if defaults.get(name) != value)
        )
        detached = cursor(settings)
        if detached is None:
            return None
        for sql, tables in queries:
            if arrow_types(detached, sql, tables) != arrow_types(database, sql, tables):
                return None
    except (duckdb.Error, QueryError):  # (a query json_serialize_sql cannot write out)
        return None
    return settings


def fitting(
    settings: Settings | None, fallback: duckdb.DuckDBPyConnection, *tables: pa.Table
) -> duckdb.DuckDBPyConnection:
    """The cursor a fold query over ``tables`` runs on: the detached instance's for
    ``settings`` (None: not detachable), unless the tables hold more than :data:`BYTES`
    (then ``fallback``, the analysis's cursor, which the time limit interrupts)."""
    if settings is None or sum(table.nbytes for table in tables) > BYTES:
        return fallback
    found = cursor(settings)
    return found if found is not None else fallback


def run(
    settings: Settings, fallback: duckdb.DuckDBPyConnection, sql: str, delta: pa.Table
) -> pa.Table:
    """``sql`` over the new rows ``delta`` on the detached instance (:func:`fitting`)."""
    return over_arrow(fitting(settings, fallback, delta), sql, delta.slice(0, 0), delta)
