"""Prometheus metrics of the Kafka ingest, in the process's one registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from arbitrage.telemetry import METRICS

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

MESSAGES = Counter(
    "kafka_ingest_messages",
    "Kafka messages by outcome (consumed, stored, duplicate, rejected).",
    ["outcome"],
    registry=METRICS.registry,
)
BATCH_SECONDS = Histogram(
    "kafka_ingest_batch_store_seconds",
    "Time to decode, validate and insert one consumed batch.",
    buckets=_BUCKETS,
    registry=METRICS.registry,
)
COMMIT_SECONDS = Histogram(
    "kafka_ingest_commit_seconds",
    "Time to produce a stored batch's derived records and commit its offsets (one transaction).",
    buckets=_BUCKETS,
    registry=METRICS.registry,
)
LAG = Gauge(
    "kafka_consumer_lag",
    "Messages behind the high watermark, per assigned partition.",
    ["partition"],
    registry=METRICS.registry,
)
COMMITS = Counter(
    "kafka_ingest_commits", "Offset commits by outcome (ok, failed).", ["outcome"], registry=METRICS.registry
)
REBALANCES = Counter(
    "kafka_ingest_rebalances",
    "Partition assignment changes by kind (assign, revoke, lost).",
    ["kind"],
    registry=METRICS.registry,
)
PAUSED = Gauge(
    "kafka_ingest_paused_partitions",
    "Assigned partitions currently paused (backpressure, admin or alignment).",
    registry=METRICS.registry,
)
HELD = Gauge(
    "kafka_ingest_held_messages",
    "Fetched messages held until every partition reaches their timestamps (partition alignment).",
    registry=METRICS.registry,
)
STORE_RETRIES = Counter(
    "kafka_ingest_store_retries", "Failed attempts to store a batch (retried with backoff).", registry=METRICS.registry
)
DERIVED = Counter(
    "kafka_ingest_produced", "Records produced to derived topics, by topic kind.", ["kind"], registry=METRICS.registry
)
RELAY_PRODUCED = Counter(
    "kafka_relay_produced",
    "Derived records of other sources' transactions (HTTP, files, replays, the demo) produced, by topic kind.",
    ["kind"],
    registry=METRICS.registry,
)
RELAY_WAITING = Gauge(
    "kafka_relay_waiting_rows",
    "Stored rows of other sources whose derived records are not produced yet.",
    registry=METRICS.registry,
)
