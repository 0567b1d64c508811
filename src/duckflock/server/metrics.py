"""``/metrics`` in Prometheus' text format, with prometheus-client.

The write path's and analyses' figures are read from the library at scrape time (a
custom collector: nothing is counted twice); HTTP requests are counted as they finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from duckflock.database import Database
from duckflock.ingest.writer import COMMIT_BUCKETS
from duckflock.server.backoff import Backoff


class _DatabaseCollector(Collector):
    def __init__(self, db: Database) -> None:
        self._db = db

    def collect(self) -> Iterator[Metric]:
        stats = self._db.stats()
        yield CounterMetricFamily(
            "duckflock_rows_committed", "Rows committed by the writer", value=stats.rows_committed
        )
        yield CounterMetricFamily(
            "duckflock_batches_committed", "Batches committed", value=stats.batches_committed
        )
        yield CounterMetricFamily(
            "duckflock_calls_rejected", "Insert calls rejected", value=stats.calls_rejected
        )
        yield GaugeMetricFamily(
            "duckflock_queue_rows", "Rows accepted but not yet committed", value=stats.rows_queued
        )
        if stats.commit_histogram:
            counts = stats.commit_histogram
            buckets = [(str(b), counts[i]) for i, b in enumerate(COMMIT_BUCKETS)]
            buckets.append(("+Inf", counts[-1]))
            yield HistogramMetricFamily(
                "duckflock_commit_seconds",
                "Time to commit one batch",
                buckets=buckets,
                sum_value=stats.commit_seconds,
            )
        durations = GaugeMetricFamily(
            "duckflock_analysis_refresh_seconds",
            "Duration of each analysis's last refresh",
            labels=["analysis", "mode"],
        )
        versions = CounterMetricFamily(
            "duckflock_analysis_refreshes", "Refreshes of each analysis", labels=["analysis"]
        )
        refused = 0
        for status in self._db.analyses():
            if status["refused"]:  # kept, never run: counted apart
                refused += 1
                continue
            if status["duration"] is not None:
                durations.add_metric([status["name"], status["mode"]], status["duration"])
            versions.add_metric([status["name"]], status["version"])
        yield durations
        yield versions
        yield GaugeMetricFamily(
            "duckflock_analyses_refused",
            "Kept analysis definitions refused at start (GET /v1/analyses says why)",
            value=refused,
        )
        lake = self._db.lake_state()
        if lake is not None:
            yield from _lake_metrics(lake)


def _lake_metrics(lake: dict[str, Any]) -> Iterator[Metric]:
    """A DuckLake's latest snapshot id (as this process last polled it) and maintenance."""
    if lake["snapshot"] is not None:
        yield GaugeMetricFamily(
            "duckflock_lake_snapshot_id", "The lake's latest snapshot id", value=lake["snapshot"]
        )
    yield CounterMetricFamily(
        "duckflock_lake_snapshot_changes",
        "Times the polled snapshot id moved (any process committed)",
        value=lake["changes"],
    )
    yield GaugeMetricFamily(
        "duckflock_lake_catalog_up",
        "1 when the last poll of the catalog succeeded",
        value=0 if lake["poll_error"] else 1,
    )
    yield CounterMetricFamily(
        "duckflock_lake_maintenance_runs", "Maintenance runs", value=lake["maintenance_runs"]
    )
    yield CounterMetricFamily(
        "duckflock_lake_maintenance_failures",
        "Maintenance runs with a failed step",
        value=lake["maintenance_failures"],
    )
    yield GaugeMetricFamily(
        "duckflock_lake_maintenance_running", "1 while maintenance runs", value=lake["maintaining"]
    )
    last = lake["last_maintenance"]
    if last is not None and last["files_after"] >= 0:
        yield GaugeMetricFamily(
            "duckflock_lake_data_files",
            "Data files after the last maintenance run",
            value=last["files_after"],
        )


class _BackoffCollector(Collector):
    """Failed authentications and refused attempts by protocol, read at scrape time."""

    def __init__(self, backoff: Backoff) -> None:
        self._backoff = backoff

    def collect(self) -> Iterator[Metric]:
        failures = CounterMetricFamily(
            "duckflock_auth_failures", "Failed authentications", labels=["protocol"]
        )
        refusals = CounterMetricFamily(
            "duckflock_auth_refused",
            "Authentication attempts refused by the back-off, unchecked",
            labels=["protocol"],
        )
        for door, count in self._backoff.failures.items():
            failures.add_metric([door.value], count)
        for door, count in self._backoff.refusals.items():
            refusals.add_metric([door.value], count)
        yield failures
        yield refusals
        yield GaugeMetricFamily(
            "duckflock_auth_backoff_keys",
            "Addresses and tokens with recent failed authentications",
            value=self._backoff.tracked,
        )


class Metrics:
    """The server's registry: the database's figures and HTTP request counts."""

    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_DatabaseCollector(db))
        self.requests = Counter(
            "duckflock_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )

    def watch_backoff(self, backoff: Backoff) -> None:
        """Export the authentication back-off's counts (both protocols)."""
        self.registry.register(_BackoffCollector(backoff))

    def gauge(self, name: str, description: str, read: Callable[[], float]) -> None:
        """A figure read at scrape time (slots busy, long polls waiting)."""
        Gauge(name, description, registry=self.registry).set_function(read)
