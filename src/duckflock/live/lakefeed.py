"""Incremental analyses over a DuckLake table, refreshed from the lake's change feed.

On a lake the writer cannot hand its rows over (DuckLake refuses ``INSERT … RETURNING``)
and other processes commit without telling this one, so an incremental analysis whose
tables are all in the lake keeps, beside its state, the snapshot that state describes
(``State.snapshot``). A refresh opens one transaction and, in it:

1. lists the lake's snapshots since the state's (DuckLake fixes the transaction's
   snapshot at its first read, so the last one listed is what every later read of the
   run sees) and asks what the table gained and lost in them
   (:func:`duckflock.lake.feed.between`);
2. when nothing changed, keeps the last result as it is;
3. folds the inserted rows into the state through the same steps as the rows the writer
   hands over on a plain database (:func:`~duckflock.live.steps.fold_in`, or the join's
   refresh query), and takes the deleted ones out through the retention path
   (:func:`~duckflock.live.fold.retention.retract`), whose groups that subtraction cannot
   settle are recomputed from the table at that same snapshot.

It builds the state from the whole table instead — and ``Result.reason`` says why — on
the first run, after a taint, and where the feed cannot describe the change (a
:class:`~duckflock.lake.feed.Gap`: expired snapshots, maintenance that rewrote the
table's files, a write to a joined table, too many rows) or the shape cannot take
deleted rows out. A schema change anywhere in the lake plans the query again first.
A sliding window over a lake rebuilds whenever the lake moved.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from duckflock.core.syntax import parse, walk
from duckflock.lake import feed
from duckflock.lake import listing as catalog_tables
from duckflock.live.fold.retention import retract
from duckflock.live.pinned import FAILED, FIRST, joined_refresh
from duckflock.live.plan.incremental import Shape
from duckflock.live.plan.plans import Plan, split
from duckflock.live.record import Analysis
from duckflock.live.steps import fold_in, outputs


@dataclass(frozen=True)
class Fed:
    """One refresh from the feed: the new state and result, and what it did."""

    state: pa.Table
    table: pa.Table
    watermark: int  # the writer commits it reflects at least
    reason: str
    full: bool  # built from the whole table
    rows: list[pa.Table]  # the rows folded in and taken out (the groups they touch)


def fed(catalog: str | None, shape: Shape) -> bool:
    """Whether ``shape`` is an incremental analysis refreshed from the feed of the lake
    ``catalog`` (None: not a lake): every table it reads is in the lake."""
    plan = shape.plan
    if catalog is None or plan is None or shape.reads.any_table:
        return False
    return feed.describes(catalog, {plan.table, *plan.joined, *shape.tables})


class _Replan(Exception):
    """The lake's catalog changed: roll back, plan the query again, rebuild."""


class LakeFeed:
    """The lake side of the refresher. Stateless apart from its settings; called on the
    analysis threads, one run per analysis at a time."""

    def __init__(
        self,
        catalog: str,
        lock: threading.Lock,
        committed_seq: Callable[[], int],
        max_rows: Callable[[], int],
    ) -> None:
        self.catalog = catalog
        self._lock = lock  # the registry's: guards each analysis's Changes
        self._committed_seq = committed_seq
        self._max_rows = max_rows  # rows one refresh folds, then: rebuild (the notices')
        self.tables = catalog_tables.Catalog(catalog)  # the catalog's tables, read directly
        # (plan, the column names its query names) per plan: a new file's other columns
        # are not read (None: every column); guarded by the registry's lock
        self._named: dict[int, tuple[Plan, frozenset[str] | None]] = {}

    def describes(self, shape: Shape) -> bool:
        """Whether the feed sees every write to the tables ``shape`` reads."""
        return fed(self.catalog, shape)

    def refresh(self, analysis: Analysis, plan: Plan) -> Fed | None:
        """Bring the state to the lake's latest snapshot; None: the lake's catalog
        changed, the query is to be planned again (``reinspect`` is set) and run again.

        One transaction: its first read (the snapshots since the state's, or the
        current one for a rebuild) fixes the snapshot DuckLake reads for all the others,
        so the feed, a fold that reads the table (a join, a min/max whose extreme was
        deleted) and a rebuild all see the same data."""
        run, changes = analysis.state, analysis.changes
        with self._lock:
            why = changes.tainted
            if why is None and (run.state is None or run.snapshot is None):
                why = FIRST
            if why is not None:
                # cleared before the snapshot is taken: a taint landing after is kept
                changes.tainted = None
            changes.collecting = True
            changes.clear()  # the writer's notices carry no rows on a lake
        watermark = self._committed_seq()  # those commits are in what the run reads
        cursor = run.cursor
        try:  # a failure anywhere rebuilds next time (the taint cleared above is not lost)
            listing = quick = None
            if why is None and not plan.joined:  # a join's fold reads at the snapshot
                assert run.snapshot is not None
                listing = self.tables.listing(cursor, plan.table, run.snapshot)
                quick = self._quick(analysis, plan, listing, watermark)
                if quick is None and listing is not None:
                    why = self.tables.costly(cursor, listing, self._max_rows())
            if quick is not None:
                fed, end = quick
            else:
                cursor.execute("BEGIN TRANSACTION")
                fed, end, read = self._run(analysis, plan, why, watermark)
                cursor.execute("COMMIT")
                if listing is not None and read is not None:
                    self.tables.learn(listing, read.inserted)
                if fed.full and not plan.joined and not self.tables.knows(plan.table):
                    self._prime(analysis, plan, end)
        except BaseException as exc:
            with contextlib.suppress(duckdb.Error):
                cursor.execute("ROLLBACK")
            with self._lock:
                if isinstance(exc, _Replan):
                    changes.reinspect = True
                changes.taint(str(exc) if isinstance(exc, _Replan) else FAILED)
            if isinstance(exc, _Replan):
                return None
            raise
        run.snapshot = end
        return fed

    def _quick(
        self, analysis: Analysis, plan: Plan, listing: catalog_tables.Listing | None, watermark: int
    ) -> tuple[Fed, int] | None:
        """The refresh from one read of the catalog, without a DuckLake transaction:
        nothing new, or new Parquet files of a known schema; None: the transaction's."""
        run = analysis.state
        if listing is None:
            return None
        if listing.end == run.snapshot:
            return self._still(analysis, watermark, listing.end), listing.end
        named = self._names(analysis, plan)
        got = self.tables.appended(listing, self._max_rows(), named)
        if not isinstance(got, feed.Feed):  # (a Gap: the transaction finds it too)
            return None
        try:
            return self._fold(analysis, plan, got, watermark), got.end
        except (duckdb.BinderException, KeyError):
            if named is None:
                raise
            with self._lock:  # a column the syntax tree did not show: read them all
                self._named[id(plan)] = (plan, None)
            return None

    def _names(self, analysis: Analysis, plan: Plan) -> frozenset[str] | None:
        """The names (lower case) the analysis's query gives its columns and their
        qualifiers; None where it may read a column it does not name: ``*``,
        ``COLUMNS(…)``, a positional or whole-row reference, a view."""
        with self._lock:
            known = self._named.get(id(plan))
        if known is not None and known[0] is plan:
            return known[1]
        names: frozenset[str] | None = None
        if not analysis.state.shape.reads.views:
            tree = parse(analysis.state.cursor, analysis.spec.sql)
            nodes = list(walk(tree))
            tables = {
                str(node.get(key) or "").lower()
                for node in nodes
                if node.get("type") == "BASE_TABLE"
                for key in ("table_name", "alias")
            }
            refs = [
                [str(part).lower() for part in node.get("column_names") or ()]
                for node in nodes
                if node.get("class") == "COLUMN_REF"
            ]
            if not any(
                node.get("class") in ("STAR", "POSITIONAL_REFERENCE") for node in nodes
            ) and not any(len(ref) == 1 and ref[0] in tables for ref in refs):
                names = frozenset(part for ref in refs for part in ref)
        with self._lock:
            if len(self._named) >= 256:
                self._named.clear()
            self._named[id(plan)] = (plan, names)
        return names

    @staticmethod
    def _still(analysis: Analysis, watermark: int, snapshot: int) -> Fed:
        run = analysis.state
        assert run.state is not None and run.last_table is not None
        reason = f"incremental: the lake is still at snapshot {snapshot}"
        return Fed(run.state, run.last_table, watermark, reason, False, [])

    def _run(
        self, analysis: Analysis, plan: Plan, why: str | None, watermark: int
    ) -> tuple[Fed, int, feed.Feed | None]:
        """The refresh, in its transaction: (what it gives, the snapshot it read, the
        feed it folded)."""
        run, cursor = analysis.state, analysis.state.cursor
        if why is None:
            assert run.snapshot is not None
            found = self._read(plan, cursor, run.snapshot)
            if isinstance(found, str):
                why = found
            elif found.end == run.snapshot:
                return self._still(analysis, watermark, found.end), found.end, None
            else:
                return self._fold(analysis, plan, found, watermark), found.end, found
        end = feed.current(cursor, self.catalog)  # the first read: the snapshot is fixed
        analysis.check()
        state, table = split(plan, cursor.execute(plan.build).to_arrow_table())
        return Fed(state, table, watermark, f"full: {why}", True, []), end, None

    def _prime(self, analysis: Analysis, plan: Plan, end: int) -> None:
        """After a build at snapshot ``end``: what the next refresh's quick path
        (:meth:`_quick`) would otherwise pay for first -- the catalog located and its
        connection opened, the table found, the feed's columns learned for the schema
        version (read after the build, kept where the lake is still at ``end`` after
        the read: then they were read there), the repeated listing prepared, the
        query's column names read -- so that the first refresh after a definition
        costs what later ones do. A failure leaves it to that refresh."""
        cursor = analysis.state.cursor
        with contextlib.suppress(duckdb.Error):
            if self.tables.listing(cursor, plan.table, end) is None:
                return  # (not a PostgreSQL catalog: no quick path)
            columns = feed.inserted_columns(cursor, plan.table, end)
            listing = self.tables.listing(cursor, plan.table, end)  # (now prepared)
            if listing is not None and listing.end == end:  # (so the columns' snapshot)
                self.tables.learn(listing, columns.empty_table())
            self._names(analysis, plan)

    def _read(self, plan: Plan, cursor: duckdb.DuckDBPyConnection, start: int) -> feed.Feed | str:
        """The feed from ``start`` to the transaction's snapshot, or why it cannot be
        folded; raises :class:`_Replan` when the lake's catalog changed."""
        found = feed.between(cursor, plan.table, plan.joined, start, None, self._max_rows())
        if isinstance(found, feed.Gap):
            if found.replan:
                raise _Replan(found.reason)
            return found.reason
        if found.deleted.num_rows and (plan.retract is None or plan.joined):
            return (
                f"rows were deleted from {plan.table.display()} in the lake, "
                "which this query cannot take out one by one"
            )
        return found

    def _fold(self, analysis: Analysis, plan: Plan, got: feed.Feed, watermark: int) -> Fed:
        """The feed's rows in and out of the state, in the transaction that reads the
        table at the feed's end (a join's fold and min/max settling read it)."""
        run = analysis.state
        state, table = run.state, run.last_table
        assert state is not None and table is not None
        inserted, deleted = got.inserted, got.deleted
        if inserted.num_rows:
            if plan.joined:
                state, table = joined_refresh(run.cursor, plan, state, inserted)
            else:
                state, table = fold_in(analysis, plan, state, inserted)
        if deleted.num_rows:
            assert plan.retract is not None
            analysis.check()
            arrow = plan.arrow if run.fast else None
            state = retract(run.cursor, plan.retract, state, deleted, arrow)
            table = outputs(analysis, plan, state, deleted.slice(0, 0))
        reason = (
            f"incremental: snapshots {got.start}→{got.end} of the lake: folded in "
            f"{inserted.num_rows:,} rows, took out {deleted.num_rows:,} deleted "
            f"({got.source})"
        )
        return Fed(state, table, watermark, reason, False, [inserted, deleted])

    def window(self, analysis: Analysis) -> None:
        """Before a sliding window's run: rebuild it if the lake moved since its state."""
        run = analysis.state
        now = feed.current(run.cursor, self.catalog)
        if now != run.snapshot:
            with self._lock:
                if run.state is not None:
                    analysis.changes.taint(f"the lake moved to snapshot {now}: windows rebuild")
            # read before the rebuild: at worst the next run rebuilds once more
            run.snapshot = now
