"""What the Kafka ingest needs to know, resolved once from `[kafka]` settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import msgspec
from confluent_kafka import Consumer, Producer

from arbitrage.config import KafkaPartitions, KafkaSettings

DEFAULT_PARTITIONS = msgspec.structs.asdict(KafkaPartitions())
"""Partition counts of DESIGN.md, used when a topic is created at start-up."""
_BROKER_KEYS = frozenset({"bootstrap.servers", "metadata.broker.list"})
"""Left out when librdkafka only checks a configuration: a client with brokers connects at once."""


LIBRDKAFKA_LOG = logging.getLogger("arbitrage.kafka.librdkafka")
"""librdkafka's own log lines, through the app's logging (JSON with `log_format = "json"`) instead of
written raw to stderr; a client hands them over when it is polled."""


@dataclass(frozen=True, kw_only=True)
class KafkaOptions:
    """Resolved settings of one consumer pipeline; tests build it directly."""

    bootstrap_servers: str
    group_id: str = "arbitrage-backend"
    topic_transactions: str = "arbitrage-transactions"
    topic_opportunities: str = "arbitrage-opportunities"
    topic_risk: str = "risk-metrics"
    topic_dlq: str = "arbitrage-dlq"
    topic_relay_progress: str = "arbitrage-relay-progress"
    publish_other_sources: bool = True
    """Run the relay of other sources' derived records (`_relay.py`)."""
    opportunity_omit: tuple[str, ...] = ("features",)
    """Top-level keys of a rendered transaction left out of its opportunity record."""
    batch_size: int = 50_000
    batch_timeout_ms: int = 500
    align_wait_ms: int = 5000
    """How long a silent partition holds the others back (`PartitionAligner`); 0 hands messages over as fetched."""
    extra: dict[str, str] = field(default_factory=dict)
    transactional: bool = True
    """Produce derived topics and commit offsets in one Kafka transaction (false: consumer commits)."""
    transactional_id: str = ""
    """Fences a crashed predecessor's open transaction; defaults to `<group_id>-<topic>-<instance>`."""
    instance: str = ""
    """What tells this process from the group's others (`<host>-<port>`): in the default
    transactional id, so instances do not fence each other and a restarted one fences its
    own predecessor."""
    partitions: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PARTITIONS))
    create_topics: bool = True
    max_inflight_batches: int = 2
    """Batches decoded/stored at once; the next one decodes while the previous one inserts."""
    fetch_queue_chunks: int = 8
    """Fetched chunks waiting for processing; when full, the consumer pauses its partitions."""
    session_timeout_ms: int = 10_000
    retry_backoff_max_s: float = 5.0
    """Longest wait between attempts to store a batch while the warehouse fails."""
    stop_timeout_s: float = 15.0
    """How long `stop()` may spend flushing the batch in flight before giving it back to Kafka."""
    revoke_timeout_s: float = 10.0
    """How long a rebalance may wait for the batches of revoked partitions to be stored and committed."""

    @classmethod
    def from_settings(cls, settings: KafkaSettings, **overrides: Any) -> KafkaOptions:
        """Options from `[kafka]`; `overrides` (tests) win."""
        values: dict[str, Any] = {
            "bootstrap_servers": settings.bootstrap_servers,
            "group_id": settings.group_id,
            "topic_transactions": settings.topic_transactions,
            "topic_opportunities": settings.topic_opportunities,
            "topic_risk": settings.topic_risk,
            "topic_dlq": settings.topic_dlq,
            "topic_relay_progress": settings.topic_relay_progress,
            "publish_other_sources": settings.publish_other_sources,
            "opportunity_omit": tuple(settings.opportunity_omit),
            "batch_size": settings.batch_size,
            "batch_timeout_ms": settings.batch_timeout_ms,
            "align_wait_ms": settings.align_wait_ms,
            "extra": dict(settings.extra),
            "transactional": settings.transactional,
            "transactional_id": settings.transactional_id,
            "partitions": msgspec.structs.asdict(settings.partitions),
            "create_topics": settings.create_topics,
        }
        values.update(overrides)
        return cls(**values)

    @property
    def txn_id(self) -> str:
        return self.transactional_id or "-".join(filter(None, (self.group_id, self.topic_transactions, self.instance)))

    @property
    def relay_id(self) -> str:
        """The relay's transactional id and progress key on a shared ClickHouse (the embedded warehouse's relay
        takes its data dir's id instead: `DerivedRelay.relay_id`)."""
        return f"{self.txn_id}-relay"

    def client_config(self) -> dict[str, Any]:
        """Settings common to every client: brokers, where librdkafka logs, the pass-through librdkafka keys."""
        return {"bootstrap.servers": self.bootstrap_servers, **self.extra, "logger": LIBRDKAFKA_LOG}

    def consumer_config(self) -> dict[str, Any]:
        """The consumer's settings: tuning that `extra` may override, then what exactly-once rests on
        (config refuses those in `extra`: `KAFKA_MANAGED_PROPERTIES`)."""
        return {
            "auto.offset.reset": "earliest",
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": max(500, self.session_timeout_ms // 5),
            "max.poll.interval.ms": max(60_000, self.session_timeout_ms * 2),
            "queued.max.messages.kbytes": 65_536,
            "enable.partition.eof": True,  # a partition at its end holds no other back (`PartitionAligner`)
            **self.client_config(),
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
        }

    def producer_config(self) -> dict[str, Any]:
        """The derived topics' and dead letters' producer: LZ4, idempotent."""
        return {"linger.ms": 20, **self.client_config(), "compression.type": "lz4", "enable.idempotence": True}

    def check_clients(self) -> None:
        """Let librdkafka refuse bad `extra` properties now, not in the task that starts the consumer.

        Builds a consumer and a producer from this configuration without brokers, so nothing
        connects; raises KafkaException naming the property.
        """

        def offline(config: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in config.items() if k not in _BROKER_KEYS} | {"log_level": 0}

        Consumer(offline(self.consumer_config())).close()
        Producer(offline(self.producer_config())).flush(0)
