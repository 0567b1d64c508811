"""Change notices: what a write means for each analysis, through one fan-out.

The Database tells the scheduler about every change it sees — rows committed by the
writer (with the rows it stored for the capture set), rows deleted through
``db.execute`` (with the rows, when they could be captured), a lost notice, a reopen,
DDL, and any other write. Each notice is one call of :meth:`Notices.fan_out`: for every
analysis the change concerns, mark it dirty (an ``on_change`` analysis becomes due) and
apply the notice's effect on its :class:`~duckflock.live.record.Changes` (hand over rows,
taint, plan again), all under the registry's lock, then wake the scheduler thread.

Called on the writer's thread under its commit lock (commits, deletes) or on the
caller's thread (DDL, raw writes, reopen).
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb
import pyarrow as pa

from duckflock.core.names import Identity
from duckflock.live.clock import Clock
from duckflock.live.fold.retraction import Retraction
from duckflock.live.lakefeed import fed
from duckflock.live.plan.functions import Catalogue
from duckflock.live.record import Analysis
from duckflock.live.registry import Registry

Effect = Callable[[Analysis], None]


def _every(analysis: Analysis) -> bool:
    return True


class Notices:
    """The change notices of one scheduler. Stateless apart from its settings; any
    thread calls it (each notice takes the registry's lock)."""

    def __init__(
        self,
        registry: Registry,
        clock: Clock,
        new_cursor: Callable[[], duckdb.DuckDBPyConnection],
        max_delta_rows: int,
        lake: str | None = None,
        raw_handed_out: Callable[[], bool] = lambda: False,
    ) -> None:
        # the lake's catalog (None: not a lake): its analyses' rows come from its feed
        self.lake = lake
        self._registry = registry
        self._clock = clock
        self._new_cursor = new_cursor
        self.max_delta_rows = max_delta_rows  # rows kept between refreshes, then: rebuild
        # the function catalogue kept between definitions; ``raw_handed_out`` is the
        # Database's CursorPool.raw_handed_out (DDL may run where no notice sees it)
        self.catalogue = Catalogue(raw_handed_out)

    def fan_out(self, which: Callable[[Analysis], bool], effect: Effect) -> None:
        """The one notification loop: each analysis ``which`` selects becomes dirty and
        gets ``effect`` (under the lock); then the scheduler thread looks again, if an
        ``on_change`` analysis became due."""
        now = self._clock.monotonic()
        registry = self._registry
        with registry.lock:
            due = False  # an on_change analysis became due: the scheduler thread looks
            for analysis in registry:
                if not which(analysis):
                    continue
                analysis.schedule.mark_dirty(analysis.spec, now)
                due = due or analysis.spec.on_change
                effect(analysis)
            if due:  # (no other analysis's due time moved: waking it would cost a switch)
                registry.wake.notify()

    def _bounded(self, analysis: Analysis) -> None:
        changes, limit = analysis.changes, self.max_delta_rows
        if changes.delta_rows + changes.removed_rows > limit:
            changes.taint(f"over {limit:,} rows between refreshes")

    def commit(
        self, seq: int, tables: set[Identity], stored: list[tuple[Identity, pa.Table]]
    ) -> None:
        """The writer committed rows into ``tables`` (``stored``: those it captured)."""

        def hand_over(analysis: Analysis) -> None:
            plan, changes = analysis.state.shape.plan, analysis.changes
            if plan is None or not changes.collecting or changes.tainted:
                return
            if fed(self.lake, analysis.state.shape):
                return  # the lake's feed has the rows: its next refresh reads them
            if not plan.joined.isdisjoint(tables):
                # new dimension rows would join the fact rows already folded in
                changed = sorted(t.display() for t in plan.joined & tables)
                changes.taint(f"a write to the joined {', '.join(changed)}")
                return
            handed = False
            for table, rows in stored:
                if table == plan.table:
                    changes.deltas.append(rows)
                    changes.delta_rows += rows.num_rows
                    handed = True
            if plan.table in tables and not handed:
                # rows landed in its table but the writer did not capture them
                changes.taint("a commit's rows were not handed over")
                return
            changes.delta_watermark = seq
            if changes.delta_rows > self.max_delta_rows:
                changes.taint(f"over {self.max_delta_rows:,} rows between refreshes")

        self.fan_out(lambda a: a.state.shape.reads.touches(tables), hand_over)

    def delete(self, table: Identity, rows: pa.Table | None) -> None:
        """A DELETE committed ``rows`` out of ``table`` (None: they were not captured)."""

        def take_out(analysis: Analysis) -> None:
            plan, changes = analysis.state.shape.plan, analysis.changes
            if plan is None or not changes.collecting or changes.tainted:
                return
            if rows is None or plan.retract is None or plan.table != table:
                changes.taint("a DELETE whose rows could not be taken out one by one")
                return
            if rows.num_rows:
                changes.removed.append(rows)
                changes.removed_rows += rows.num_rows
            self._bounded(analysis)

        self.fan_out(lambda a: a.state.shape.reads.touches({table}), take_out)

    def lost(self) -> None:
        """A commit notice could not be handled: no incremental state can be trusted."""
        self.fan_out(_every, self._tainting("a commit notice was lost"))

    def reopen(self) -> None:
        """The database was reopened: every cursor belonged to the old instance, and
        rows captured for incremental states may be lost with it."""

        self.catalogue.changed()

        def renew(analysis: Analysis) -> None:
            analysis.changes.reinspect = True
            if analysis.schedule.running:
                analysis.schedule.stale_cursor = True  # swapped when the run ends
            else:
                analysis.state.cursor = self._new_cursor()
            self._tainting("the database was reopened")(analysis)

        self.fan_out(_every, renew)

    def catalog_change(self, changed: frozenset[Identity], why: str) -> None:
        """DDL created, dropped or redefined ``changed``: the analyses that read one of
        them, or a name one of them has (a new object may shadow what they read), or call
        a function of such a name (a macro may shadow it), plan again and rebuild; the
        others keep their states."""
        self.catalogue.changed()
        names = {identity.name.lower() for identity in changed}

        def reads_it(analysis: Analysis) -> bool:
            reads = analysis.state.shape.reads
            objects = reads.tables | reads.views
            return (
                reads.any_table
                or not objects.isdisjoint(changed)
                or not names.isdisjoint(o.name.lower() for o in objects)
                or not names.isdisjoint(reads.called)  # a macro that shadows a function it calls
            )

        self.fan_out(reads_it, self._replanning(why))

    def raw_write(self, why: str, *, replan: bool) -> None:
        """A write that did not go through db.insert: every incremental state is stale;
        ``replan``: it may have changed the catalog, so each analysis plans again. (Rows
        written into a lake are in its feed: those analyses' states are not stale.)"""
        if replan:
            self.catalogue.changed()
            self.fan_out(_every, self._replanning(why))
            return
        taint = self._tainting(why)

        def unless_fed(analysis: Analysis) -> None:
            if not fed(self.lake, analysis.state.shape):
                taint(analysis)

        self.fan_out(_every, unless_fed)

    def lake_moved(self) -> None:
        """The lake's snapshot moved (any process committed): every analysis may be
        stale; those the feed describes read what changed at their next refresh, the
        others plan again and rebuild."""
        self.catalogue.changed()
        replan = self._replanning("a process committed into the lake")

        def moved(analysis: Analysis) -> None:
            if not fed(self.lake, analysis.state.shape):
                replan(analysis)

        self.fan_out(_every, moved)

    @staticmethod
    def _tainting(why: str) -> Effect:
        def taint(analysis: Analysis) -> None:
            if analysis.state.shape.plan is not None:
                analysis.changes.taint(why)

        return taint

    @classmethod
    def _replanning(cls, why: str) -> Effect:
        taint = cls._tainting(why)

        def replan(analysis: Analysis) -> None:
            analysis.changes.reinspect = True
            taint(analysis)

        return replan

    def retractions(self, table: Identity) -> list[Retraction]:
        """The retraction plans of the incremental analyses that read ``table``."""
        with self._registry.lock:
            return [
                a.state.shape.plan.retract
                for a in self._registry
                if a.state.shape.plan is not None
                and a.state.shape.plan.table == table
                and a.state.shape.plan.retract is not None
            ]

    def retains(self, table: Identity) -> bool:
        """Whether an incremental analysis reads ``table`` (its deletes are worth capturing)."""
        with self._registry.lock:
            return any(
                a.state.shape.plan is not None and a.state.shape.plan.table == table
                for a in self._registry
            )
