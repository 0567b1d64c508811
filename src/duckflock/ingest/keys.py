"""Idempotency keys: an insert that names its batch is written at most once.

``db.insert(table, rows, idempotency_key="…")`` (and ``Idempotency-Key`` over HTTP) ties
the call to a key. The writer records the key in ``duckflock.batches`` (duckflock's own
schema, :mod:`duckflock.core.project`) **in the same commit as the rows**, so either both
are durable or neither is. Before committing a batch the writer looks its keys up
(:meth:`KeyBook.screen`):

- a key already committed: the call writes nothing and takes the first call's facts
  (rows, table, when it committed) — a *replay*;
- a key met earlier in the same batch, or queued earlier (the one writer commits in
  order, so a repeat queued while the first is in flight is screened after it): the
  repeat has the first call's outcome;
- the same key with other content: :class:`~duckflock.errors.KeyReusedError`.

"Same content" is a SHA-256 digest (:func:`digest`) of the target table and the rows as
the insert received them: the column names with the Python values of each row (their
``repr``), or an Arrow table's IPC bytes once its chunks are combined. The same request
body, or the same Python values, give the same digest; equal rows spelt differently (a
dict row against a tuple row, ints against floats) are other content.

Keys are kept at least ``window`` seconds after their commit (default a day), and at
most ``max_keys`` of them: after a batch that recorded keys, the oldest past either
bound are deleted, at most :data:`PRUNE_BATCH` at a time (:meth:`KeyBook.prune`: the
window is looked at once per :data:`PRUNE_EVERY` seconds, the count as soon as it may be
over), so the table stays bounded and no commit waits long for the pruning. A key
pruned is forgotten: sent again, its rows are written again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from duckflock.core.checks import count, seconds
from duckflock.core.project import BATCHES, SCHEMA
from duckflock.errors import KeyReusedError
from duckflock.sql import quote_ident, quote_qualified

if TYPE_CHECKING:
    from duckflock.ingest.receipts import Call

MAX_KEY_CHARS = 200
HEADER = "Idempotency-Key"  # the HTTP request header that carries a key
REPLAYED = "Idempotent-Replayed"  # the reply header that marks a repeat's answer
DEFAULT_WINDOW = 86_400.0  # a day
MAX_WINDOW = 30 * 86_400.0
DEFAULT_MAX_KEYS = 1_000_000
PRUNE_BATCH = 10_000  # keys deleted per pruning, at most
PRUNE_EVERY = 1.0  # seconds between looks for keys past the window
TABLE = quote_qualified((SCHEMA, BATCHES))

_log = logging.getLogger("duckflock")


def check_key(key: object, name: str = "idempotency_key") -> str | None:
    """``key`` if it is a valid idempotency key (or None); TypeError or ValueError
    saying what is wrong: a str of 1 to 200 characters, no NUL, valid text."""
    if key is None:
        return None
    if not isinstance(key, str):
        raise TypeError(f"{name} must be a str, not {type(key).__name__}")
    if not 1 <= len(key) <= MAX_KEY_CHARS:
        raise ValueError(f"{name} must be 1 to {MAX_KEY_CHARS} characters, not {len(key)}")
    if "\x00" in key:
        raise ValueError(f"{name} holds a NUL character (at index {key.index(chr(0))})")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{name} holds a lone surrogate ({key[exc.start]!r} at index {exc.start}): "
            "it is not valid text"
        ) from None
    return key


def check_header_key(key: object, name: str = "idempotency_key") -> str | None:
    """:func:`check_key`, and what an HTTP header can carry unchanged: printable ASCII
    without leading or trailing spaces (HTTP reads other bytes as Latin-1, so 'clé' sent
    as UTF-8 would arrive as another key)."""
    checked = check_key(key, name)
    if checked is None:
        return None
    bad = next((c for c in checked if not (c.isascii() and c.isprintable())), None)
    if bad is not None:
        raise ValueError(
            f"{name} holds {bad!r} (at index {checked.index(bad)}): over HTTP a key is "
            "printable ASCII"
        )
    if checked != checked.strip():
        raise ValueError(f"{name} starts or ends with a space, which HTTP drops")
    return checked


def check_window(window: object) -> float:
    """How long keys are kept, in seconds: 1 s to 30 days."""
    checked = seconds(window, "idempotency_window", minimum=1.0, maximum=MAX_WINDOW, optional=False)
    assert checked is not None
    return checked


def check_max_keys(value: object) -> int:
    """How many keys are kept at most: at least 1,000."""
    return count(value, "max_idempotency_keys", minimum=1_000)


def digest(call: Call) -> str:
    """The SHA-256 of ``call``'s table and rows as received (see the module's text)."""
    target = call.target
    assert target is not None
    h = hashlib.sha256()
    h.update(repr(target.key).encode())
    # a single row digests as the one-row part it is when its columns are not cached
    # yet (Intake.single): the same row under the same key is the same content whichever
    # way it went, and a server's one-object body keeps the digest it always had
    for part in call.all_parts():
        h.update(repr(part.columns).encode("utf-8", "surrogatepass"))
        if part.rows is not None:
            h.update(b"rows")
            h.update(repr(part.rows).encode("utf-8", "surrogatepass"))
        else:
            assert part.arrow is not None
            h.update(b"arrow")
            sink = pa.BufferOutputStream()
            table = part.arrow.combine_chunks()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            h.update(sink.getvalue())
    return h.hexdigest()


def earlier_digest(call: Call) -> str | None:
    """The digest a call of one row got on the single-row path before it digested as its
    one-row part (the repr of its columns and row, issue 21 round 4): keys recorded so
    are kept a day by default, and a retry of that row after an upgrade is the same
    content, not a KeyReusedError. None: ``call`` is not one row of Python values."""
    parts = call.all_parts()
    if len(parts) != 1 or parts[0].rows is None or len(parts[0].rows) != 1:
        return None
    target = call.target
    assert target is not None
    h = hashlib.sha256()
    h.update(repr(target.key).encode())
    h.update(repr((parts[0].columns, parts[0].rows[0])).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


@dataclass(frozen=True)
class Recorded:
    """A committed key's facts: what its replays answer."""

    table: str
    rows: int
    digest: str
    committed_at: dt.datetime


ENSURE_TRIES = 5  # creating the table, against other processes on one lake


def ensure_table(cursor: duckdb.DuckDBPyConnection, lake: bool = False, tries: int = 1) -> None:
    """Create the keys' table when missing (DuckLake has no PRIMARY KEY). In autocommit
    mode ``tries`` > 1 tries again after a write conflict: two processes on one lake
    creating it at the same moment (the loser's CREATE fails, and then finds it made)."""
    key = "key VARCHAR NOT NULL" if lake else "key VARCHAR PRIMARY KEY"
    for attempt in range(1, tries + 1):
        try:
            cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(SCHEMA)}")
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} ({key}, table_name VARCHAR NOT NULL, "
                "rows BIGINT NOT NULL, digest VARCHAR NOT NULL, "
                "committed_at TIMESTAMP WITH TIME ZONE NOT NULL)"
            )
            return
        except duckdb.TransactionException:
            if attempt == tries:
                raise


def loaded(cursor: duckdb.DuckDBPyConnection, key: str) -> int | None:
    """Inside a load's transaction: the rows of the load ``key`` names if it committed
    already (None: it did not). A file load's key already says what was loaded (the
    file's hash, format, table and chunk size), so it is its own digest."""
    ensure_table(cursor)
    rows = cursor.execute(f"SELECT rows FROM {TABLE} WHERE key = ?", [key]).fetchall()
    return int(rows[0][0]) if rows else None


def record_load(cursor: duckdb.DuckDBPyConnection, key: str, table: str, rows: int) -> None:
    """Inside a load's transaction: record ``key`` with the rows it loaded."""
    at = dt.datetime.now(dt.UTC)
    cursor.execute(f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?)", [key, table, rows, key, at])


class KeyBook:
    """The writer's idempotency keys: screened before each commit, recorded in it,
    pruned after it. Used by the writer thread only (its cursor)."""

    def __init__(
        self,
        *,
        window: float = DEFAULT_WINDOW,
        max_keys: int = DEFAULT_MAX_KEYS,
        lake: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window = window
        self.max_keys = max_keys
        self.lake = lake  # DuckLake has no PRIMARY KEY
        # the wall clock keys are stamped and expired by: a test's seam
        self.clock = clock
        self._ready = False
        # how many keys the table may hold now (None: not counted yet), and when the
        # window is next looked at (by ``clock``): pruning costs a scan, so it runs when
        # the count may be over ``max_keys``, or once per PRUNE_EVERY seconds
        self._count: int | None = None
        self._next_look = 0.0

    def ensure(self, cursor: duckdb.DuckDBPyConnection) -> None:
        """Create the table on first use."""
        if self._ready:
            return
        ensure_table(cursor, self.lake, tries=ENSURE_TRIES)
        self._ready = True

    def lookup(self, cursor: duckdb.DuckDBPyConnection, keys: list[str]) -> dict[str, Recorded]:
        """The committed facts of those of ``keys`` that are recorded."""
        self.ensure(cursor)
        found: dict[str, Recorded] = {}
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            marks = ", ".join("?" * len(chunk))
            rows = cursor.execute(
                f"SELECT key, table_name, rows, digest, committed_at FROM {TABLE} "
                f"WHERE key IN ({marks})",
                chunk,
            ).fetchall()
            for key, table, nrows, sha, at in rows:
                found[key] = Recorded(table, int(nrows), sha, at.astimezone(dt.UTC))
        return found

    def screen(
        self, cursor: duckdb.DuckDBPyConnection, calls: list[Call]
    ) -> tuple[list[Call], list[tuple[Call, Call]]]:
        """Split a batch: the calls to write, and the repeats of a call of this batch
        (``(repeat, first)``, settled by :meth:`settle` after the commit). Calls whose
        key is committed are replays, marked committed here; a key with other content
        gets its :class:`KeyReusedError`. A batch without keys comes back as it is
        (the same list)."""
        keys = [call.key for call in calls if call.key is not None]
        if not keys:
            return calls, []
        known = self.lookup(cursor, keys)
        writing: list[Call] = []
        repeats: list[tuple[Call, Call]] = []
        first: dict[str, Call] = {}
        for call in calls:
            key = call.key
            if key is None:
                writing.append(call)
                continue
            recorded, earlier = known.get(key), first.get(key)
            seen = recorded.digest if recorded else earlier.digest if earlier else None
            if seen is None:
                first[key] = call
                writing.append(call)
            elif seen != call.digest and (recorded is None or seen != earlier_digest(call)):
                call.failure = reused(key, call.table)
            elif recorded is not None:
                call.replay(recorded.rows, recorded.committed_at)
            else:
                assert earlier is not None
                repeats.append((call, earlier))
        return writing, repeats

    @staticmethod
    def settle(repeats: list[tuple[Call, Call]]) -> None:
        """Give each repeat its first call's outcome."""
        for repeat, earlier in repeats:
            if earlier.committed:
                repeat.replay(earlier.nrows, earlier.committed_at)
            else:
                repeat.failure = earlier.failure

    def recorder(self, calls: list[Call]) -> Callable[[duckdb.DuckDBPyConnection], None] | None:
        """What records ``calls``' keys inside their commit (None: no keys)."""
        keyed = [call for call in calls if call.key is not None]
        if not keyed:
            return None

        def record(cursor: duckdb.DuckDBPyConnection) -> None:
            now = self.clock()
            at = dt.datetime.fromtimestamp(now, dt.UTC)
            values: list[object] = []
            for call in keyed:
                call.committed_at = at
                values.extend((call.key, call.table, call.nrows, call.digest, at))
            marks = ", ".join(["(?, ?, ?, ?, ?)"] * len(keyed))
            cursor.execute(f"INSERT INTO {TABLE} VALUES {marks}", values)
            if self._count is not None:
                self._count += len(keyed)

        return record

    def prune(self, cursor: duckdb.DuckDBPyConnection) -> int:
        """Delete at most :data:`PRUNE_BATCH` keys past the window or the count; how
        many went. Looks only when the count may be over ``max_keys`` or
        :data:`PRUNE_EVERY` seconds passed (by ``clock``). A failure is logged: a later
        batch tries again."""
        if not self._ready:
            return 0
        now = self.clock()
        over = self._count is None or self._count > self.max_keys
        if not over and now < self._next_look:
            return 0
        self._next_look = now + PRUNE_EVERY
        try:
            cutoff = dt.datetime.fromtimestamp(now - self.window, dt.UTC)
            # fetchall, not fetchone: a result left unread keeps the writer's cursor in
            # a transaction while it idles, and DuckDB then refuses every CHECKPOINT
            # once another connection changed the catalog ("other write transactions")
            (row,) = cursor.execute(
                f"SELECT count(*), count(*) FILTER (WHERE committed_at < ?) FROM {TABLE}",
                [cutoff],
            ).fetchall()
            total, expired = int(row[0]), int(row[1])
            doomed = min(PRUNE_BATCH, max(expired, total - self.max_keys))
            self._count = total - max(doomed, 0)
            if doomed <= 0:
                return 0
            cursor.execute(
                f"DELETE FROM {TABLE} WHERE key IN (SELECT key FROM {TABLE} "
                f"ORDER BY committed_at LIMIT {doomed})"
            )
            return doomed
        except duckdb.Error:
            self._count = None  # not known: counted again next time
            _log.warning("pruning idempotency keys failed", exc_info=True)
            return 0


def reused(key: str, table: str) -> KeyReusedError:
    return KeyReusedError(
        f"idempotency key {key!r} was used before with other rows (or another table) "
        f"than this insert into {table!r}: a key names one batch; nothing was written",
        key=key,
        table=table,
    )
