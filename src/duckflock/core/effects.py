"""What a statement run through the Database changed that analyses depend on.

Analyses run on cursors of their own, so a caller's session (``SET TimeZone``,
``USE``) never reaches them; what does is DuckDB's *global* configuration and the
catalog. Two questions, both answered by asking DuckDB on a cursor of this module's own
(no caller's session setting shows through it) before and after the statement:

- :data:`SETTINGS` — every setting DuckDB 1.5.5 lists in ``duckdb_settings()``, with a
  decision: does it change what a query returns (:attr:`Effect.RESULTS`: time zone,
  calendar, collation, ordering defaults, casting and division rules, Arrow export
  types, file lookup) or only how it runs (:attr:`Effect.NONE`: memory, threads,
  storage, logging, extensions, security)? A change of a ``RESULTS`` setting's global
  value makes every analysis run again and rebuild its incremental state. A DuckDB
  upgrade that adds a setting fails ``tests/test_effects.py`` until it is decided here.
- :class:`Epoch` — a count the Database moves around every statement that may change a
  setting, so that what an analysis read of the settings (a window's time zone, the
  values a state was built under) is read again only when it moved.
- :func:`Watch.catalog` — the tables, views and macros, each by identity with its oid
  and definition: DDL rebuilds only the analyses that read what changed (or a new
  object of the same name, which may shadow it).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Any

import duckdb

from duckflock.core.names import Identity


class Effect(StrEnum):
    """What a setting does to the analyses' results."""

    RESULTS = "results"  # a query may return other values or types: rebuild
    NONE = "none"  # only how (or whether) a query runs: nothing to redo


_RESULTS = {
    # time and text semantics
    "Calendar", "TimeZone", "default_collation", "disable_timestamptz_casts",
    # ordering, arithmetic, casting, binding
    "default_null_order", "null_order", "default_order", "integer_division",
    "ieee_floating_point_ops", "old_implicit_casting", "order_by_non_integer_literal",
    "scalar_subquery_error_on_multiple_rows", "preserve_identifier_case", "lambda_syntax",
    "deprecated_using_key_syntax", "errors_as_json", "search_path", "schema",
    # the Arrow types results come back in
    "arrow_large_buffer_size", "arrow_lossless_conversion", "arrow_output_list_view",
    "arrow_output_version", "produce_arrow_string_view",
    # which files, and how their values read
    "file_search_path", "home_directory", "binary_as_string", "enable_geoparquet_conversion",
    "__delta_only_variant_encoding_enabled",
}  # fmt: skip
_NONE = {
    "access_mode", "allocator_background_threads", "allocator_bulk_deallocation_flush_threshold",
    "allocator_flush_threshold", "allow_community_extensions",
    "allow_extensions_metadata_mismatch", "allow_parser_override_extension",
    "allow_persistent_secrets", "allow_unredacted_secrets", "allow_unsigned_extensions",
    "allowed_configs", "allowed_directories", "allowed_paths", "asof_loop_join_threshold",
    "auto_checkpoint_skip_wal_threshold", "autoinstall_extension_repository",
    "autoinstall_known_extensions", "autoload_known_extensions", "block_allocator_memory",
    "catalog_error_max_schemas", "checkpoint_threshold",
    "current_transaction_invalidation_policy", "custom_extension_repository",
    "custom_profiling_settings", "custom_user_agent", "debug_asof_iejoin",
    "debug_checkpoint_abort", "debug_checkpoint_sleep_ms",
    "debug_eviction_queue_sleep_micro_seconds", "debug_force_external",
    "debug_force_no_cross_product", "debug_physical_table_scan_execution_strategy",
    "debug_skip_checkpoint_on_commit", "debug_verify_blocks", "debug_verify_vector",
    "debug_window_mode", "default_block_size", "default_secret_storage",
    "disable_database_invalidation", "disable_parquet_prefetching",
    "disabled_compression_methods", "disabled_filesystems", "disabled_log_types",
    "disabled_optimizers", "duckdb_api", "dynamic_or_filter_threshold",
    "enable_caching_operators", "enable_external_access", "enable_external_file_cache",
    "enable_fsst_vectors", "enable_http_logging", "enable_http_metadata_cache",
    "enable_logging", "enable_macro_dependencies", "enable_object_cache", "enable_profiling",
    "enable_progress_bar", "enable_progress_bar_print", "enable_view_dependencies",
    "enabled_log_types", "experimental_metadata_reuse", "explain_output",
    "extension_directories", "extension_directory", "external_threads",
    "force_bitpacking_mode", "force_column_metadata_reuse", "force_compression",
    "force_mbedtls_unsafe", "force_variant_shredding", "geometry_minimum_shredding_size",
    "http_logging_output", "http_proxy", "http_proxy_password", "http_proxy_username",
    "ignore_unknown_crs", "immediate_transaction_mode", "index_scan_max_count",
    "index_scan_percentage", "late_materialization_max_rows", "lock_configuration",
    "log_query_path", "logging_level", "logging_mode", "logging_storage",
    "max_expression_depth", "max_memory", "max_temp_directory_size", "max_vacuum_tasks",
    "memory_limit", "merge_join_threshold", "nested_loop_join_threshold",
    "ordered_aggregate_threshold", "pandas_analyze_sample", "parquet_metadata_cache",
    "partitioned_write_flush_threshold", "partitioned_write_max_open_files", "password",
    "perfect_ht_threshold", "pin_threads", "pivot_filter_threshold", "pivot_limit",
    "prefer_range_joins", "prefetch_all_parquet_files", "preserve_insertion_order",
    "profile_output", "profiling_coverage", "profiling_mode", "profiling_output",
    "progress_bar_time", "python_enable_replacements", "python_scan_all_frames",
    "scheduler_process_partial", "secret_directory", "storage_block_prefetch",
    "storage_compatibility_version", "streaming_buffer_size", "temp_directory",
    "temp_file_encryption", "threads", "user", "username", "vacuum_rebuild_indexes",
    "validate_external_file_cache", "variant_minimum_shredding_size", "wal_autocheckpoint",
    "wal_autocheckpoint_entries", "warnings_as_errors", "worker_threads",
    "write_buffer_row_group_count", "write_buffer_row_group_memory_limit",
    "zstd_min_string_length",
}  # fmt: skip
SETTINGS: dict[str, Effect] = {
    **{name: Effect.NONE for name in _NONE},
    **{name: Effect.RESULTS for name in _RESULTS},
}

# system.main: on a lake the default catalog is DuckLake's, where an unqualified table
# function is looked for first, and that lookup begins a DuckLake transaction (six
# catalog statements a read, where a refresh reads them every run)
SETTINGS_SQL = (
    "SELECT name, value FROM system.main.duckdb_settings() "
    "WHERE name IN (SELECT unnest(?::VARCHAR[]))"
)
_CATALOG_SQL = """
SELECT database_name, schema_name, table_name, table_oid, sql FROM duckdb_tables()
UNION ALL
SELECT database_name, schema_name, view_name, view_oid, sql FROM duckdb_views() WHERE NOT internal
UNION ALL
SELECT database_name, schema_name, function_name, function_oid,
       coalesce(macro_definition, '') FROM duckdb_functions()
WHERE function_type IN ('macro', 'table_macro') AND NOT internal
"""

Catalog = dict[Identity, tuple[int, str]]
_WATCHED = sorted(name for name, effect in SETTINGS.items() if effect is Effect.RESULTS)


def values(cursor: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """The value on ``cursor`` of every setting that changes results."""
    rows = cursor.execute(SETTINGS_SQL, [_WATCHED]).fetchall()
    return {str(name): str(value) for name, value in rows}


class Epoch:
    """How often the settings may have changed: what was read of them at one value
    holds while the value stays (a reading is taken after reading the value).

    The Database moves it before a statement that may change a setting runs
    (:func:`duckflock.core.syntax.may_set`: a global ``SET`` lands before the notice
    that rebuilds the analyses, and a refresh in between must not trust an older
    reading) and again after it (a reading taken while it ran is not trusted either).
    Where settings may change unseen — a raw cursor was handed out — :meth:`current`
    is None (read them every time), unless DuckDB's configuration is locked.

    Owner: the Database (it moves it); analysis threads read it. Any thread.
    """

    def __init__(self, unseen: Callable[[], bool] = lambda: False) -> None:
        self._lock = threading.Lock()  # guards the two below
        self._value = 0
        self._locked = False  # lock_configuration is on: no setting changes any more
        # True: settings may change where no statement is seen (the Database's
        # CursorPool.raw_handed_out: a raw cursor is out)
        self._unseen = unseen

    def current(self) -> int | None:
        """The epoch now; None where settings may change unseen."""
        with self._lock:
            return self._value if self._locked or not self._unseen() else None

    def value(self) -> int:
        """The epoch now, moved only by the statements the Database sees."""
        with self._lock:
            return self._value

    def move(self) -> None:
        with self._lock:
            self._value += 1

    @contextlib.contextmanager
    def changing(self, may: bool = True) -> Iterator[None]:
        """Around a statement that ``may`` change a setting: moved before and after."""
        if not may:
            yield
            return
        self.move()
        try:
            yield
        finally:
            self.move()

    def lock(self) -> None:
        """DuckDB's configuration is locked (``lock_configuration``): no setting changes."""
        with self._lock:
            self._value += 1
            self._locked = True


class Watch:
    """Global settings and the catalog, read on a cursor of its own.

    Owner: the Database; any statement's thread calls it, under ``_lock`` (a DuckDB
    cursor serves one statement at a time). Replaced when the database is reopened.
    """

    def __init__(self, new_cursor: Callable[[], duckdb.DuckDBPyConnection]) -> None:
        self._new_cursor = new_cursor
        self._cursor: duckdb.DuckDBPyConnection | None = None  # opened on first use
        self._lock = threading.Lock()  # guards _cursor, the statements on it and _kept
        self._kept: Catalog | None = None  # the last catalog() reading (see catalog)

    def _open(self) -> duckdb.DuckDBPyConnection:
        if self._cursor is None:
            self._cursor = self._new_cursor()
        return self._cursor

    def _run(self, sql: str) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._open().execute(sql).fetchall()

    def settings(self) -> dict[str, str]:
        """The global value of every setting that changes results."""
        with self._lock:
            return values(self._open())

    def catalog(self, *, kept: bool = False) -> Catalog:
        """Every table, view and macro by identity: (oid, definition), read now; with
        ``kept``, the last reading where there is one (no scan).

        The kept reading serves as the "before" of the next DDL, so a DDL scans the
        catalog once (after it) instead of twice. It is right however old it is: the
        "after" is read once the statement ran, so a change the kept reading misses (a
        raw cursor's DDL, or another thread's DDL whose "after" was stored first) shows
        as this statement's too (one replan more), never one less."""
        if kept:
            with self._lock:
                if self._kept is not None:
                    return self._kept
        reading = {
            Identity(str(c), str(s), str(n)): (int(oid), str(sql))
            for c, s, n, oid, sql in self._run(_CATALOG_SQL)
        }
        with self._lock:
            self._kept = reading
        return reading


def changed_settings(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The settings whose global value differs."""
    return sorted(
        name for name in before.keys() | after.keys() if before.get(name) != after.get(name)
    )


def changed_objects(before: Catalog, after: Catalog) -> frozenset[Identity]:
    """The objects created, dropped or redefined (a new oid is a new object)."""
    return frozenset(
        identity
        for identity in before.keys() | after.keys()
        if before.get(identity) != after.get(identity)
    )
