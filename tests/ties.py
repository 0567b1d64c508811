"""Comparing a live result with DuckDB's full run where SQL leaves the choice open.

An aggregate whose result is one of its inputs (``min``, ``max``, ``first``, ``last``,
``arg_max``, ``any_value`` …) and a group key (one of its rows' values) may show any of
several values that DuckDB calls equal but that look different: ``-0.0`` and ``0.0``,
``INTERVAL '30 days'`` and ``'1 month'``, ``'a'`` and ``'A'`` under ``COLLATE NOCASE``,
structs or lists holding such values. SQL does not say which; DuckDB's own full run
picks by storage order, and even rewrites a stored value into an equal one of another
form when a ``CHECKPOINT`` compresses a column segment (``-0.0`` rows read back as
``0.0`` after one). The contract for such a column is DuckDB's equality
(``IS NOT DISTINCT FROM`` with the column's real type, collation included); every
other column, and every column of another type, stays bit-exact.

:func:`equal_but_for_ties` is the comparison, asked only when the bit-exact one failed:
DuckDB parses the query (which columns choose), and DuckDB compares the chosen values,
in a connection holding the query's tables (empty: only their types matter), so that
collations come back (``duckflock.live.fold.query.typed``: a union with the query's own
empty result).
"""

from __future__ import annotations

import decimal
import json
import math
from typing import Any

import duckdb
import pyarrow as pa

from duckflock.live.fold.query import typed

# aggregates whose result is one of their input values (DuckDB's names and aliases)
CHOOSING = frozenset(
    {
        "min",
        "max",
        "arg_min",
        "arg_max",
        "argmin",
        "argmax",
        "min_by",
        "max_by",
        "first",
        "last",
        "any_value",
        "arbitrary",
        "arg_min_null",
        "arg_max_null",
    }
)


def _aggregates(oracle: duckdb.DuckDBPyConnection) -> frozenset[str]:
    rows = oracle.execute(
        "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type = 'aggregate'"
    ).fetchall()
    return frozenset(str(name).lower() for (name,) in rows)


def _functions(node: Any) -> list[str]:
    """The names of every function call in a parsed expression (DuckDB's JSON)."""
    found: list[str] = []
    if isinstance(node, dict):
        if node.get("class") == "FUNCTION":
            found.append(str(node.get("function_name", "")).lower())
        for value in node.values():
            found.extend(_functions(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_functions(value))
    return found


def choosing_columns(oracle: duckdb.DuckDBPyConnection, sql: str) -> list[int]:
    """Positions of ``sql``'s result columns whose value is chosen among equal inputs:
    those calling a choosing aggregate, and the group keys (no aggregate at all) of an
    aggregating query. DuckDB's parser reads the select list; [] for anything else."""
    row = oracle.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    parsed = json.loads(row[0]) if row else {"error": True}
    if parsed.get("error") or len(parsed["statements"]) != 1:
        return []
    node = parsed["statements"][0]["node"]
    if node.get("type") != "SELECT_NODE":
        return []
    select = node["select_list"]
    if any(item.get("class") == "STAR" for item in select):
        return []
    aggregates = _aggregates(oracle)
    called = [set(_functions(item)) for item in select]
    grouping = bool(node.get("group_expressions")) or any(names & aggregates for names in called)
    return [
        index
        for index, names in enumerate(called)
        if names & CHOOSING or (grouping and not names & aggregates)
    ]


def _several_forms(kind: pa.DataType) -> bool:
    """Whether DuckDB has equal values of this (Arrow) type that look different:
    floats (-0.0), intervals, strings (collations), and nested types holding any."""
    if pa.types.is_floating(kind) or pa.types.is_interval(kind):
        return True
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return True
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_map(kind):
        return _several_forms(kind.value_type)
    if pa.types.is_struct(kind):
        return any(_several_forms(kind.field(i).type) for i in range(kind.num_fields))
    return False


def exact_value(value: Any) -> Any:
    """A Python value in a form that compares exactly (floats by their bits, NaN as
    one value, decimals by their text)."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else value.hex()
    if isinstance(value, decimal.Decimal):
        return ("dec", str(value))
    if isinstance(value, list):
        return tuple(exact_value(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, exact_value(v)) for k, v in value.items()))
    return value


def exact_column(column: pa.ChunkedArray) -> list[Any]:
    """A column's values as :func:`exact_value` (temporal ones as their integers: no
    Python datetime holds DuckDB's infinity or the year 294000)."""
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_date64(kind) or pa.types.is_time64(kind):
        return column.cast(pa.int64()).to_pylist()
    if pa.types.is_date32(kind) or pa.types.is_time32(kind):
        return column.cast(pa.int32()).to_pylist()
    if pa.types.is_duration(kind):
        return column.cast(pa.int64()).to_pylist()
    return [exact_value(v) for v in column.to_pylist()]


def equal_but_for_ties(
    oracle: duckdb.DuckDBPyConnection, sql: str, got: pa.Table, expected: pa.Table
) -> bool:
    """Whether ``got`` equals ``expected`` (both results of ``sql``, as sets of rows),
    the columns of :func:`choosing_columns` that have several forms of equal values by
    DuckDB's equality, every other column exactly. ``oracle`` holds ``sql``'s tables.
    The caller compares the column types."""
    if got.num_columns != expected.num_columns or got.num_rows != expected.num_rows:
        return False
    loose = [i for i in choosing_columns(oracle, sql) if _several_forms(got.schema.types[i])]
    if not loose:
        return False
    strict = [i for i in range(got.num_columns) if i not in loose]

    def prepared(table: pa.Table) -> pa.Table:
        exact = [exact_column(table.column(i)) for i in strict]
        keys = [repr(row) for row in zip(*exact, strict=True)] if strict else []
        columns = {f"__c{i}": table.column(i) for i in loose}
        columns["__s"] = pa.array(keys or [""] * table.num_rows, pa.string())
        return pa.table(columns)

    names = ", ".join(f"__c{i}" for i in range(got.num_columns))
    chosen = [f"__c{i}" for i in loose]
    like = f"SELECT {', '.join(chosen)}, ''::VARCHAR AS __s FROM ({sql}) AS __q({names})"
    order = ", ".join(chosen)
    same = " AND ".join(f"a.{c} IS NOT DISTINCT FROM b.{c}" for c in chosen)
    oracle.register("__got", prepared(got))
    oracle.register("__expected", prepared(expected))
    try:
        numbered = (
            "SELECT *, row_number() OVER (PARTITION BY __s ORDER BY {order}) AS __n FROM {rel}"
        )
        a = numbered.format(order=order, rel=typed("__got", [*chosen, "__s"], {}, like))
        b = numbered.format(order=order, rel=typed("__expected", [*chosen, "__s"], {}, like))
        row = oracle.execute(
            f"SELECT count(*) FROM ({a}) AS a FULL JOIN ({b}) AS b "
            "ON a.__s = b.__s AND a.__n = b.__n "
            f"WHERE a.__s IS NULL OR b.__s IS NULL OR NOT ({same})"
        ).fetchone()
    except duckdb.Error:
        return False
    finally:
        oracle.unregister("__got")
        oracle.unregister("__expected")
    return row is not None and row[0] == 0
