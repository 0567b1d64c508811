"""The queries a planned shape runs, generated once: ``build`` (the state from the
whole table), ``refresh`` (the state merged with the new rows' partials), ``finish``
(the outputs over a kept state) and the retention ``retract`` plan, each computing the
query's outputs, HAVING flag and ORDER BY rank per state row (:class:`Plan`)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import duckdb
import pyarrow as pa

from duckflock.core.names import Identity
from duckflock.live.fold import detached, sketches
from duckflock.live.fold.arrow import ArrowPlan, Output, OutputKind
from duckflock.live.fold.computed import Computed
from duckflock.live.fold.merges import ELEMENTWISE, Merge, equal_in_arrow, ordered_in_arrow
from duckflock.live.fold.query import arrow_types, lost_types, over_arrow, typed
from duckflock.live.fold.retraction import KEYS, hidden_partials, retraction
from duckflock.live.fold.states import NotIncremental, Partial, PartialKind, Slots
from duckflock.live.fold.touch import ROW
from duckflock.live.plan.arrowpath import collated, column_types
from duckflock.live.plan.computing import computed
from duckflock.live.plan.plans import DELTA, STATE, Plan
from duckflock.live.plan.trees import Renderer, plain_column

# ORDER BY terms over the given outputs, with the constant OFFSET and LIMIT
Modifiers = Callable[[list[str]], tuple[str, int, int | None]]
# the pyarrow fast path for the given OFFSET and LIMIT (None: none fits)
ArrowFor = Callable[[int, int | None], ArrowPlan | None]


class Queries:
    """Generates and probes the queries of one shape whose fact table is ``source``,
    over the FROM clause rendered over the whole table (``from_build``) and over the new
    rows (``from_delta``)."""

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        renderer: Renderer,
        *,
        source: Identity,
        from_build: str,
        from_delta: str,
        columns: tuple[str, ...],
        types: tuple[str, ...],
        own: frozenset[str] | None = None,
    ) -> None:
        self._cursor = cursor
        self._own = own  # the database's own functions (detached.settings_for)
        self._sql = renderer.sql
        self._source = source
        self._from_build = from_build
        self._from_delta = from_delta
        self._columns = columns
        self._types = types
        self._delta_build = ""  # the state and outputs of the new rows alone (to probe)
        self._no_rows: pa.Table | None = None  # none of the fact table's rows (_empty)

    def assemble(
        self,
        slots: Slots,
        *,
        joined: bool,
        where: dict[str, Any] | None,
        groups: list[dict[str, Any]],
        select: list[dict[str, Any]],
        having: dict[str, Any] | None,
        modifiers: Modifiers,
        arrow: ArrowFor,
    ) -> Plan:
        """The plan's queries: ``groups`` are the keys, ``select`` and ``having`` the
        outputs and filter rewritten over the state."""
        # retention deletes (duckflock.live.fold.retention): a hidden count(*) and a count(x)
        # beside each sum(x), when every partial can take deletes
        hidden = hidden_partials(slots.partials) if not joined else None
        for sql, merge, spec in hidden or []:
            slots.add(sql, _merged_by(merge), spec)
        partials = slots.partials
        keys_sql = [self._sql(g) for g in groups]
        keys = [f"{sql} AS __k{i}" for i, sql in enumerate(keys_sql)]
        columns = [f"{partial.sql} AS __p{i}" for i, partial in enumerate(partials)]
        where_sql = f" WHERE {self._sql(where)}" if where is not None else ""
        group_sql = " GROUP BY " + ", ".join(self._sql(g) for g in groups) if groups else ""

        def partial_over(relation: str) -> str:
            return f"SELECT {', '.join(keys + columns)} FROM {relation}{where_sql}{group_sql}"

        key_names = [f"__k{i}" for i in range(len(groups))]
        state_names = key_names + [f"__p{i}" for i in range(len(partials))]
        try:
            with self._empty_delta():
                # the state comes back from Arrow: its columns cast back to their own types
                state_types = self._cursor.sql(partial_over(self._from_delta)).types
                state_lost = lost_types(self._cursor, partial_over(self._from_delta))
        except duckdb.Error as exc:
            raise _not_running(exc) from exc
        state = typed(STATE, state_names, state_lost)
        floating = frozenset(
            i
            for i, kind in enumerate(state_types[len(key_names) :])
            if str(kind) in ("FLOAT", "DOUBLE")
        )
        merged = [
            (
                _tie_kept(i, partial.spec[0])
                if partial.spec[0] in (PartialKind.MIN, PartialKind.MAX)
                and _several_forms(str(kind))
                else partial.merge
            )
            + f" AS __p{i}"
            for (i, partial), kind in zip(
                enumerate(partials), state_types[len(key_names) :], strict=True
            )
        ]
        # a key whose equal values differ (-0.0 and 0.0, 'a' and 'A' under NOCASE): the
        # group keeps the value seen first, the state's, as a scan in order does (and a
        # delete recomputes the groups it touches: the next row's form shows)
        forms = frozenset(
            i
            for i, (kind, key) in enumerate(zip(state_types, keys_sql, strict=False))
            if _several_forms(str(kind))
            and (str(kind) != "VARCHAR" or collated(self._cursor, key, self._from_build))
        )
        shown = [
            f"arg_min({name}, __d) AS {name}" if i in forms else name
            for i, name in enumerate(key_names)
        ]
        # __d tells the kept state's row of a group (0) from the new rows' (1): merges
        # that keep a winner let the older rows win a tie, as a scan in order does
        merge_sql = (
            f"SELECT {', '.join(shown + merged)} FROM "
            f"(SELECT *, 0 AS __d FROM {state} UNION ALL "
            f"SELECT *, 1 AS __d FROM ({partial_over(self._from_delta)}))"
            + (f" GROUP BY {', '.join(key_names)}" if key_names else "")
        )
        outputs = [
            f"CAST({self._sql(expr)} AS {kind})"
            for expr, kind in zip(select, self._types, strict=True)
        ]
        extras = [f"{sql} AS __o{i}" for i, sql in enumerate(outputs)]
        if having is not None:
            extras.append(f"({self._sql(having)}) AS __keep")
        order, offset, limit = modifiers(outputs)
        if order:
            extras.append(f"row_number() OVER (ORDER BY {order}) AS __rank")

        def with_outputs(state_sql: str) -> str:
            return f"WITH __merged AS ({state_sql}) SELECT *, {', '.join(extras)} FROM __merged"

        touch = ""
        by_keys = bool(key_names) and not order and not offset and limit is None and not forms
        if by_keys and not joined:
            state_rows = typed(STATE, [*state_names, ROW], state_lost)
            new_partials = partial_over(self._from_delta)
            touch = with_outputs(_touch_sql(state_rows, new_partials, key_names, shown + merged))
        self._delta_build = with_outputs(partial_over(self._from_delta))
        typed_state = [(n, str(k)) for n, k in zip(state_names, state_types, strict=True)]
        if touch and not self._binds(touch, typed_state):
            touch = ""
        row_by_row = None
        # a join's too: its fold runs it over a copy of the dimensions (live/joins.py)
        if (touch or (joined and by_keys)) and having is None:
            row_by_row = self._merge(
                partial_over(self._from_delta),
                partials,
                len(key_names),
                state_types,
                select,
                joined=joined,
            )
        return Plan(
            table=self._source,
            pin=f"SELECT 1 FROM {self._source.sql} LIMIT 0",
            build=with_outputs(partial_over(self._from_build)),
            refresh=with_outputs(merge_sql),
            finish=with_outputs(f"SELECT {', '.join(state_names)} FROM {state}"),
            touch=touch,
            merge=row_by_row,
            partials=partial_over(self._from_delta),
            state_columns=tuple(key_names + [f"__p{i}" for i in range(len(partials))]),
            outputs=self._columns,
            filtered=having is not None,
            ordered=bool(order),
            offset=offset,
            limit=limit,
            arrow=arrow(offset, limit),
            retract=None
            if hidden is None
            else retraction(
                source_sql=self._from_build,
                keys=[self._sql(g) for g in groups],
                partials=partials,
                where_sql=where_sql,
                deleted_partials=partial_over(self._from_delta),
                state=state,
                keys_relation=typed(KEYS, key_names, state_lost),
                deltas=typed(DELTA, state_names, state_lost),
                floating=floating,
                forms=bool(forms),
                plain=_plain_columns(where, groups, partials),
            ),
        )

    def _merge(
        self,
        sql: str,
        partials: list[Partial],
        keys: int,
        state_types: list[Any],
        select: list[dict[str, Any]],
        *,
        joined: bool,
    ) -> Merge | None:
        """The row-by-row refresh (:mod:`duckflock.live.fold.merges`) of a shape whose
        partials over the new rows are ``sql``: where every key compares in Arrow as in
        DuckDB, every partial merges element-wise and every output is a key, a partial
        or a floating average of the output's own type; else None. A join's reads its
        dimensions: no detached settings nor pyarrow program of its own."""
        kinds = [str(kind) for kind in state_types]
        if not all(equal_in_arrow(kind) for kind in kinds[:keys]):
            return None
        types = kinds[keys:]
        for partial, kind in zip(partials, types, strict=True):
            what, pick = partial.spec[0], partial.pick
            if what not in ELEMENTWISE:
                return None
            if what in (PartialKind.MIN, PartialKind.MAX) and not ordered_in_arrow(kind):
                return None
            if what in (PartialKind.PICK, PartialKind.KEY) and (
                pick is None or not ordered_in_arrow(types[pick.key])
            ):
                return None
        empty = self._empty()
        schema = over_arrow(self._cursor, f"SELECT * FROM ({sql}) LIMIT 0", empty, empty).schema
        on = (
            None
            if joined
            else detached.settings_for(self._cursor, [(sql, {DELTA: empty})], self._own)
        )
        outputs, fields = [], []
        for expr, kind in zip(select, self._types, strict=True):
            text = self._sql(expr)
            column = re.fullmatch(r"__([kp])(\d+)", text)
            average = re.fullmatch(r'\(__p(\d+) / "nullif"\(__p(\d+), 0\)\)', text)
            sketch = sketches.counted(text) if kind == "BIGINT" else None
            if column is not None:
                index = int(column.group(2))
                if kinds[index if column.group(1) == "k" else keys + index] != kind:
                    return None  # a cast: DuckDB's to make
                shown = OutputKind.KEY if column.group(1) == "k" else OutputKind.PARTIAL
                outputs.append(Output(shown, index))
                fields.append(schema.field(text).type)
            elif average is not None and kind == "DOUBLE":
                total, count = int(average.group(1)), int(average.group(2))
                if types[total] not in ("FLOAT", "DOUBLE"):
                    return None
                outputs.append(Output(OutputKind.AVG, total, count))
                fields.append(pa.float64())
            elif sketch is not None and partials[sketch].spec[0] is PartialKind.SKETCH:
                outputs.append(Output(OutputKind.COUNT, sketch))
                fields.append(pa.int64())
            else:
                return None
        result = ArrowPlan(
            keys=tuple(f"__k{i}" for i in range(keys)),
            partials=(),
            outputs=tuple(outputs),
            names=self._columns,
            schema=pa.schema([pa.field(f"__o{i}", kind) for i, kind in enumerate(fields)]),
            order=(),
            offset=0,
            limit=None,
        )
        picks = tuple(partial.pick for partial in partials)
        kinds_of = tuple(partial.spec[0] for partial in partials)
        program = None if joined else self._computed(sql, schema, on)
        merge = Merge(sql, keys, kinds_of, picks, result, on, program)
        return merge if merge.admits(schema) else None

    def _computed(
        self, sql: str, schema: pa.Schema, on: detached.Settings | None
    ) -> Computed | None:
        """The partials query ``sql`` as a pyarrow program, admitted over probe rows
        against DuckDB running ``sql`` where the refresh runs it (computing.py)."""
        cursor = self._cursor

        def oracle(rows: pa.Table) -> pa.Table:
            if on is not None:
                return detached.run(on, cursor, sql, rows)
            return over_arrow(cursor, sql, rows.slice(0, 0), rows)

        source = self._empty().schema
        return computed(cursor, sql, schema, source, column_types(cursor, self._source), oracle)

    def probe(self, plan: Plan) -> detached.Settings | None:
        """Run the refresh once over no rows: SQL that binds over the table but not over
        the new rows (a column named ``schema.table.column``) or a merge DuckDB refuses
        would otherwise fail every refresh; here it makes the analysis run in full.
        Returns the settings its refresh and touch queries run detached under (None:
        on the analysis's cursor): :mod:`duckflock.live.fold.detached`."""
        cursor = self._cursor
        empty = self._empty()
        try:
            state = over_arrow(cursor, self._delta_build, empty, empty)
            state = state.select(list(plan.state_columns))
            over_arrow(cursor, plan.refresh, state, empty)
        except duckdb.Error as exc:
            raise _not_running(exc) from exc
        # the refresh and touch queries read only Arrow tables: a DuckDB of their own
        queries: list[tuple[str, dict[str, pa.Table]]] = [
            (plan.refresh, {STATE: state, DELTA: empty})
        ]
        if plan.touch:
            rows = state.append_column(ROW, pa.array([], pa.int64()))
            queries.append((plan.touch, {STATE: rows, DELTA: empty}))
        return detached.settings_for(cursor, queries, self._own)

    def _binds(self, touch: str, state: list[tuple[str, str]]) -> bool:
        """Whether the touch query binds over an empty state of the ``state`` columns
        (name, DuckDB type) and no new rows (else the whole-state refresh does every
        fold: a missed optimisation, never a wrong result). Bound, not run: its merges
        and outputs are the refresh's, which :meth:`probe` runs."""
        cursor = self._cursor
        columns = ", ".join(f"CAST(NULL AS {kind}) AS {name}" for name, kind in state)
        try:
            empty = cursor.execute(f"SELECT {columns}, CAST(NULL AS BIGINT) AS {ROW} LIMIT 0")
            rows = empty.to_arrow_table()
            arrow_types(cursor, touch, {STATE: rows, DELTA: self._empty()})  # binds it
        except duckdb.Error:
            return False
        return True

    def _empty(self) -> pa.Table:
        """None of the fact table's rows, as Arrow (read once: every probe binds over it)."""
        if self._no_rows is None:
            sql = f"SELECT * FROM {self._source.sql} LIMIT 0"
            self._no_rows = self._cursor.execute(sql).to_arrow_table()
        return self._no_rows

    @contextlib.contextmanager
    def _empty_delta(self) -> Iterator[pa.Table]:
        """The new rows registered as none of the fact table's (to bind and probe)."""
        cursor = self._cursor
        empty = self._empty()
        cursor.register(DELTA, empty)
        try:
            yield empty
        finally:
            with contextlib.suppress(duckdb.Error):
                cursor.unregister(DELTA)


def _touch_sql(state: str, delta: str, keys: list[str], merged: list[str]) -> str:
    """The merge of the groups the new rows (``delta``: their partials) land in with
    the state rows of the same keys, found by a semi join (DuckDB's key equality,
    NULL keys equal), each with the state row it replaces (``__r``, NULL: a new group);
    see :mod:`duckflock.live.fold.touch`."""
    on = " AND ".join(f"__s.{k} IS NOT DISTINCT FROM __n.{k}" for k in keys)
    return (
        f"WITH __n AS MATERIALIZED ({delta}) "
        f"SELECT {', '.join(merged)}, min({ROW}) AS {ROW} FROM ("
        f"SELECT __s.*, 0 AS __d FROM {state} AS __s SEMI JOIN __n ON {on} "
        f"UNION ALL SELECT *, CAST(NULL AS BIGINT) AS {ROW}, 1 AS __d FROM __n) "
        f"GROUP BY {', '.join(keys)}"
    )


def _plain_columns(
    where: dict[str, Any] | None, groups: list[dict[str, Any]], partials: list[Partial]
) -> tuple[tuple[str, ...], tuple[str | None, ...]] | None:
    """The source columns of the keys and of the partials (None: count(*)), when
    each is a plain column and there is no WHERE: retention's pyarrow path."""
    keys = [plain_column(g) for g in groups]
    sources = [partial.spec[1] for partial in partials]
    if where is not None or any(not isinstance(k, str) for k in keys):
        return None
    if any(s is not None and not isinstance(s, str) for s in sources):
        return None
    return tuple(str(k) for k in keys), tuple(s if isinstance(s, str) else None for s in sources)


def _several_forms(kind: str) -> bool:
    """Whether equal values of DuckDB type ``kind`` can differ in form: floating
    (-0.0 = 0.0), strings (collations) and intervals ('1 day' = '24 hours'), alone or
    nested."""
    return any(word in kind for word in ("FLOAT", "DOUBLE", "VARCHAR", "INTERVAL"))


def _tie_kept(index: int, kind: PartialKind) -> str:
    """The merge of a min/max partial whose equal values differ in form (-0.0 and 0.0,
    'a' and 'A' under NOCASE): on a tie the kept state's value stays, as the first one
    a scan in order sees does (a plain min over the union picks either)."""
    name = f"__p{index}"
    old, new = (f"{kind}({name}) FILTER (WHERE __d = {d})" for d in (0, 1))
    beats = "<" if kind is PartialKind.MIN else ">"
    return f"CASE WHEN {new} {beats} {old} THEN {new} ELSE coalesce({old}, {new}) END"


def _not_running(exc: duckdb.Error) -> NotIncremental:
    message = str(exc).splitlines()[0]
    return NotIncremental(f"its refresh over new rows does not run ({message})")


def _merged_by(aggregate: str) -> Callable[[str], str]:
    return lambda partial: f"{aggregate}({partial})"
