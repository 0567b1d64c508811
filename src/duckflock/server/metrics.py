"""``/metrics`` in Prometheus' text format, with prometheus-client.

The write path's and analyses' figures are read from the library at scrape time (a
custom collector: nothing is counted twice); HTTP requests are counted as they finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..database import Database
from ..ingest import COMMIT_BUCKETS


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
        for status in self._db.analyses():
            if status["duration"] is not None:
                durations.add_metric([status["name"], status["mode"]], status["duration"])
            versions.add_metric([status["name"]], status["version"])
        yield durations
        yield versions


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

    def gauge(self, name: str, description: str, read: Callable[[], float]) -> None:
        """A figure read at scrape time (slots busy, long polls waiting)."""
        Gauge(name, description, registry=self.registry).set_function(read)
