"""Kafka ingest: consume `arbitrage-transactions` into the warehouse, exactly once in effect.

`start_kafka(services)` is the entry point the app's lifespan calls when `[kafka]` is
enabled; `await kafka.stop()` on shutdown. The dead-letter helpers serve the admin API.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from arbitrage.ingest.kafka._dead_letters import (
    REPLAY_SOURCE,
    DeadLetter,
    DeadLetterReplay,
    list_dead_letters,
    replay_dead_letters,
)
from arbitrage.ingest.kafka._options import KafkaOptions
from arbitrage.ingest.kafka._service import KafkaIngest, KafkaNotConnected, KafkaStatus, PartitionState
from arbitrage.ingest.kafka._strategies import SOURCE
from arbitrage.ingest.kafka._topics import ensure_topics

if TYPE_CHECKING:
    from arbitrage.services import Services


async def start_kafka(services: Services) -> KafkaIngest:
    """Start consuming with `services.settings.kafka`; registers `/health`'s "kafka" and `extras["kafka"]`."""
    instance = f"{socket.gethostname()}-{services.settings.server.port}"
    kafka = KafkaIngest(services.ingest, KafkaOptions.from_settings(services.settings.kafka, instance=instance))
    await kafka.start()
    services.health_checks["kafka"] = kafka.health
    services.extras["kafka"] = kafka
    return kafka


__all__ = [
    "REPLAY_SOURCE",
    "SOURCE",
    "DeadLetter",
    "DeadLetterReplay",
    "KafkaIngest",
    "KafkaNotConnected",
    "KafkaOptions",
    "KafkaStatus",
    "PartitionState",
    "ensure_topics",
    "list_dead_letters",
    "replay_dead_letters",
    "start_kafka",
]
