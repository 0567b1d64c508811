"""SQL text from DuckDB's syntax trees, and the small readings the planner makes of them.

DuckDB serialises a query to JSON (``json_serialize_sql``) and renders JSON back to SQL
(``json_deserialize_sql``): the planner rewrites the tree and has DuckDB write the text,
so no SQL is assembled from hand-split pieces of the user's query.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb

from duckflock.core.cursors import first_row
from duckflock.core.syntax import parse
from duckflock.errors import BindError
from duckflock.live.fold.states import NotIncremental


def canonical(node: Any) -> str:
    """A node's identity as text: equal for the same expression however it is aliased
    or wherever it stands in the query."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("alias", "query_location")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return json.dumps(strip(node), sort_keys=True)


def column_ref(name: str) -> dict[str, Any]:
    """A syntax-tree node naming the column ``name`` (unqualified)."""
    return {
        "class": "COLUMN_REF",
        "type": "COLUMN_REF",
        "alias": "",
        "query_location": 0,
        "column_names": [name],
    }


def constant(expr: dict[str, Any], what: str) -> int:
    """The whole number a CONSTANT node holds (``GROUP BY 1``, ``LIMIT 10``); raise
    NotIncremental naming ``what`` for anything else."""
    value = (expr.get("value") or {}).get("value") if expr.get("class") == "CONSTANT" else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise NotIncremental(f"{what} is not a constant whole number")
    return value


def plain_column(expr: dict[str, Any]) -> str | bool:
    """The column an expression names, or False when it is anything more."""
    if expr.get("class") == "COLUMN_REF" and expr.get("column_names"):
        return str(expr["column_names"][-1])
    return False


class Renderer:
    """Parses expressions and renders syntax trees as SQL, through one cursor."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self._cursor = cursor
        self._template: dict[str, Any] | None = None  # the tree of ``SELECT 1``, parsed once
        self._rendered: dict[str, str] = {}  # a tree's JSON -> DuckDB's SQL text of it

    def parse_expr(self, sql: str) -> dict[str, Any]:
        """The syntax tree of the expression ``sql``."""
        tree = parse(self._cursor, f"SELECT {sql}")
        expr: dict[str, Any] = tree["statements"][0]["node"]["select_list"][0]
        return expr

    def sql(self, expr: dict[str, Any]) -> str:
        """SQL text of the expression node ``expr`` (its alias left out)."""
        if self._template is None:
            self._template = parse(self._cursor, "SELECT 1")
        node = dict(self._template["statements"][0]["node"], select_list=[dict(expr, alias="")])
        template = dict(
            self._template, statements=[dict(self._template["statements"][0], node=node)]
        )
        return self.render(template, "SELECT ")

    def render(self, tree: dict[str, Any], prefix: str) -> str:
        """SQL text of a syntax tree, less ``prefix`` (which it must start with)."""
        text = json.dumps(tree)
        found = self._rendered.get(text)
        if found is None:  # (a plan renders its keys several times: once each here)
            row = first_row(self._cursor.execute("SELECT json_deserialize_sql(?::JSON)", [text]))
            if not row or not isinstance(row[0], str):
                raise BindError("cannot render an expression of the analysis")
            found = self._rendered[text] = row[0]
        if not found.startswith(prefix):
            raise BindError("cannot render an expression of the analysis")
        return found[len(prefix) :]
