"""Create the Kafka topics at start-up when they are missing."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from arbitrage.ingest.kafka._options import KafkaOptions

log = logging.getLogger(__name__)


def ensure_topics(options: KafkaOptions, timeout_s: float = 3.0) -> list[str]:
    """Create missing topics with the configured partition counts; return the names created.

    A broker that refuses (no CreateTopics, no permission) is logged and left to
    auto-create topics: consuming and producing still work, with its default counts.

    Raises:
        KafkaException: the broker did not answer in `timeout_s` (the caller retries; a short
            wait, since a stop cannot interrupt the worker thread this blocks).
    """
    wanted = {
        options.topic_transactions: options.partitions.get("transactions", 10),
        options.topic_opportunities: options.partitions.get("opportunities", 5),
        options.topic_risk: options.partitions.get("risk", 3),
        options.topic_dlq: options.partitions.get("dlq", 1),
        options.topic_relay_progress: 1,
    }
    admin = AdminClient(options.client_config())
    try:
        return _create_missing(admin, wanted, timeout_s)
    finally:
        admin.poll(0)  # hands its log lines over (a broker refusing connections, ...)


def _create_missing(admin: AdminClient, wanted: dict[str, int], timeout_s: float) -> list[str]:
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [NewTopic(name, count) for name, count in wanted.items() if name not in existing]
    if not missing:
        return []
    created: list[str] = []
    futures = admin.create_topics(missing, request_timeout=timeout_s, operation_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result(timeout_s + 1)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # else another client just created it
                log.warning("could not create Kafka topic %s (%s); relying on auto-creation", name, exc)
        except Exception as exc:
            log.warning("could not create Kafka topic %s (%s); relying on auto-creation", name, exc)
    if created:
        log.info("created Kafka topics %s", created)
    return created
