"""DuckDB queries over Arrow tables that the refresh keeps in Python (no copy into DuckDB)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import duckdb
import pyarrow as pa

from duckflock.sql import quote_ident

DELTA = "__duckflock_delta"  # the newly appended rows, as the fold queries name them


def over_arrow(
    cursor: duckdb.DuckDBPyConnection,
    sql: str,
    __duckflock_state: pa.Table,
    __duckflock_delta: pa.Table | None = None,
    __duckflock_keys: pa.Table | None = None,
) -> pa.Table:
    """Run ``sql`` over the state, delta and (retention's) keys Arrow tables.

    DuckDB finds them by their names among this frame's locals (its Python replacement
    scan): 0.6 ms cheaper per query than register + unregister, which matters when the
    whole refresh takes a few milliseconds. If replacement scans are switched off in the
    database's config, registering them is the fallback.
    """
    try:
        return cursor.execute(sql).to_arrow_table()
    except duckdb.CatalogException:
        tables = {
            "__duckflock_state": __duckflock_state,
            "__duckflock_delta": __duckflock_delta,
            "__duckflock_keys": __duckflock_keys,
        }
        present = {name: table for name, table in tables.items() if table is not None}
        for name, table in present.items():
            cursor.register(name, table)
        try:
            return cursor.execute(sql).to_arrow_table()
        finally:
            for name in present:
                cursor.unregister(name)


def arrow_types(
    cursor: duckdb.DuckDBPyConnection, sql: str, tables: Mapping[str, pa.Table]
) -> list[str]:
    """The column types of ``sql`` over the named Arrow ``tables``, bound, not run.

    Tables named as :func:`over_arrow` names them are found by DuckDB's replacement
    scan among this frame's locals: a definition binds a dozen such probes, and a
    register + unregister pair costs ~1 ms of CPU each. Other names, or every table
    where replacement scans are switched off, are registered.
    """
    if set(tables) <= {"__duckflock_state", "__duckflock_delta", "__duckflock_keys"}:
        # (locals the replacement scan finds; an absent one stays unbound)
        if "__duckflock_state" in tables:
            __duckflock_state = tables["__duckflock_state"]
        if "__duckflock_delta" in tables:
            __duckflock_delta = tables["__duckflock_delta"]
        if "__duckflock_keys" in tables:
            __duckflock_keys = tables["__duckflock_keys"]
        try:
            return [str(kind) for kind in cursor.sql(sql).types]
        except duckdb.CatalogException:
            pass  # replacement scans are off: registered below
    try:
        for name, table in tables.items():
            cursor.register(name, table)
        return [str(kind) for kind in cursor.sql(sql).types]
    finally:
        for name in tables:
            with contextlib.suppress(duckdb.Error):
                cursor.unregister(name)


def lost_types(cursor: duckdb.DuckDBPyConnection, sql: str) -> dict[str, str]:
    """The columns of ``sql``'s result whose DuckDB type does not come back from a trip
    through Arrow (ENUM and structs of it read back as VARCHAR, HUGEINT as DECIMAL,
    UUID as VARCHAR, TIMETZ as TIME…), each with the type to cast it back to.

    DuckDB decides: the result's own types against those it reads from the Arrow table
    it exports. (Collations do not travel in a type name at all; a query that needs one
    gets it from a typed relation, see :func:`typed`.)
    """
    relation = cursor.sql(f"SELECT * FROM ({sql}) LIMIT 0")
    names = [str(name) for name in relation.columns]
    before = [str(kind) for kind in relation.types]
    # registered, not found by a replacement scan (a locked-down config turns those off)
    cursor.register("__duckflock_exported", relation.to_arrow_table())
    try:
        after = [str(kind) for kind in cursor.sql("SELECT * FROM __duckflock_exported").types]
    finally:
        cursor.unregister("__duckflock_exported")
    return {
        name: kind for name, kind, back in zip(names, before, after, strict=True) if kind != back
    }


# text DuckDB casts to the types whose values the trip through Arrow may lose (a TIMETZ's
# offset, a BIT's length), one at least of each such type: see kept()
_PROBES = [
    "10:00:00.5+02:30", "23:59:59-11", "0101", "1", "-1", "0", "x",
    "2020-01-01 00:00:00+02", "170141183460469231731687303715884105727",
    "0b4b3b8e-6c4f-4f8e-9d2e-3d2f1c0b9a88",
]  # fmt: skip


def kept(cursor: duckdb.DuckDBPyConnection, kind: str) -> bool:
    """Whether values of ``kind`` (a type :func:`lost_types` found) come back as they
    were from Arrow through :func:`cast_back`, not only their type: DuckDB decides over
    the probe texts that cast to it (TIMETZ exports as TIME, its offset gone; BIT as
    BLOB, read back as other bits)."""
    cast = f"TRY_CAST(p AS {kind})"
    try:
        exported = cursor.execute(
            f"SELECT {cast} AS v, CAST({cast} AS VARCHAR) AS s FROM unnest(?::VARCHAR[]) t(p)",
            [_PROBES],
        ).to_arrow_table()
        cursor.register("__duckflock_probe", exported)
        try:
            rows = cursor.execute(
                f"SELECT count(*) FROM __duckflock_probe WHERE "
                f"CAST({cast_back('v', kind)} AS VARCHAR) IS DISTINCT FROM s"
            ).fetchall()
        finally:
            cursor.unregister("__duckflock_probe")
    except duckdb.Error:
        return False
    return rows == [(0,)]


# DuckDB exports UHUGEINT as decimal128(38, 0) holding the same 128 bits (see wide.py):
# read back, a value of 2**127 or more is negative, and a plain cast to UHUGEINT fails
_HALF = 2**127


def cast_back(column: str, kind: str) -> str:
    """SQL turning ``column``, read back from Arrow, into DuckDB type ``kind`` again."""
    if kind == "UHUGEINT":
        # v < 0 stands for v + 2**128: (v + 2**127) fits a HUGEINT, then + 2**127 unsigned.
        # DuckDB evaluates both branches of a CASE, so each is clamped to its own domain
        v, lowest = f"CAST({column} AS HUGEINT)", f"CAST('-{_HALF}' AS HUGEINT)"
        wrapped = f"CAST(least({v}, -1) - {lowest} AS UHUGEINT) + CAST('{_HALF}' AS UHUGEINT)"
        # (least/greatest skip NULLs: a NULL takes neither branch and stays NULL)
        plain = f"CAST(greatest({v}, 0) AS UHUGEINT)"
        return f"CASE WHEN {v} < 0 THEN {wrapped} WHEN {v} >= 0 THEN {plain} END"
    return f"CAST({column} AS {kind})"


def typed(relation: str, columns: list[str], lost: dict[str, str], like: str = "") -> str:
    """``relation`` (Arrow input) as a query with ``columns`` of their DuckDB types: the
    ``lost`` ones cast back, and, with ``like`` (a query of the same columns over the
    original table), unioned with its empty result, whose collations the union's column
    types then keep (a VARCHAR COLLATE NOCASE key groups 'a' with 'A' again)."""
    select = ", ".join(
        f"{cast_back(quote_ident(name), lost[name])} AS {quote_ident(name)}"
        if name in lost
        else quote_ident(name)
        for name in columns
    )
    body = f"SELECT {select} FROM {relation}" if lost else f"SELECT * FROM {relation}"
    if like:
        body = f"SELECT * FROM (SELECT * FROM ({like}) LIMIT 0) UNION ALL {body}"
    return f"({body})"
