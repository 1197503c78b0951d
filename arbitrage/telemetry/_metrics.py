"""The process's Prometheus metrics: one registry, bounded label values only."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, PlatformCollector, ProcessCollector

from arbitrage import __version__

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every metric the service exports. Labels take values from small fixed sets."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.transactions = Counter(
            "arbitrage_transactions",
            "Records seen by ingest, by outcome (stored, duplicate, rejected).",
            ["source", "outcome"],
            registry=r,
        )
        # A gauge that only grows: exposed under the seed's exact name (a Counter would add `_total`).
        self.profit = Gauge(
            "arbitrage_profit_total_sol",
            "Net profit of the profitable transactions stored since start (net_profit_sol > 0), SOL (monotonic).",
            registry=r,
        )
        self.late_transactions = Counter(
            "arbitrage_late_transactions",
            "Stored transactions that arrived after newer ones of their pair (features marked late).",
            ["source"],
            registry=r,
        )
        self.dead_letters = Counter(
            "arbitrage_dead_letters", "Records written to dead letters.", ["source"], registry=r
        )
        self.ingest_batch_seconds = Histogram(
            "arbitrage_ingest_batch_duration_seconds",
            "Time to process one ingest batch, by stage.",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ingest_insert_rows = Histogram(
            "arbitrage_ingest_insert_rows",
            "Rows per warehouse insert (queued batches are stored together).",
            buckets=(100, 1_000, 10_000, 50_000, 100_000, 200_000, 500_000),
            registry=r,
        )
        self.ingest_pending = Gauge(
            "arbitrage_ingest_pending_batches", "Batches waiting for the warehouse writer.", registry=r
        )
        self.ingest_saturated = Counter(
            "arbitrage_ingest_saturated", "Ingest requests refused with 503 (queue full).", registry=r
        )
        self.request_seconds = Histogram(
            "api_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.query_seconds = Histogram(
            "database_query_duration_seconds",
            "Warehouse call latency by operation.",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.warehouse_errors = Counter(
            "database_errors", "Warehouse calls that failed, by operation.", ["operation"], registry=r
        )
        self.requests_in_flight = Gauge("api_requests_in_flight", "HTTP requests being served now.", registry=r)
        self.build = Info("arbitrage_build", "Version of the running service.", registry=r)
        self.build.info({"version": __version__, "python": platform.python_version()})


METRICS = Metrics()
"""The app's metrics registry (one per process)."""
