"""Kafka ingest: consume `arbitrage-transactions` into the warehouse, exactly once in effect.

`start_kafka(services)` is the entry point the app's lifespan calls when `[kafka]` is
enabled; it returns what the lifespan awaits on shutdown. The dead-letter helpers serve the admin API.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from arbitrage.ingest.kafka._dead_letters import (
    REPLAY_SOURCE,
    DeadLetter,
    DeadLetterReplay,
    list_dead_letters,
    replay_dead_letters,
)
from arbitrage.ingest.kafka._options import KafkaOptions
from arbitrage.ingest.kafka._relay import DerivedRelay
from arbitrage.ingest.kafka._relay_progress import RelayProgress, read_progress
from arbitrage.ingest.kafka._service import KafkaIngest, KafkaNotConnected, KafkaStatus, PartitionState
from arbitrage.ingest.kafka._strategies import SOURCE
from arbitrage.ingest.kafka._topics import ensure_topics

_RELAY_DRAIN_S = 5.0
"""How long a stop lets the relay publish what waits; the rest is read back after the next start."""

if TYPE_CHECKING:
    from arbitrage.services import Services


async def start_kafka(services: Services) -> Callable[[], Awaitable[None]]:
    """Start consuming with `services.settings.kafka`, and the relay of other sources' derived records unless
    `publish_other_sources` is off; registers `/health`'s "kafka" (and "kafka_relay") and `extras["kafka"]`.

    Returns what stops them. Call it before any other source ingests: the relay publishes what is
    stored after it started (and, after a crash, what its previous run left).
    """
    instance = f"{socket.gethostname()}-{services.settings.server.port}"
    options = KafkaOptions.from_settings(services.settings.kafka, instance=instance)
    relay, feed = None, services.feed
    if options.publish_other_sources and feed is not None:  # no feed: rows get no positions to publish by
        relay = DerivedRelay(
            services.ingest,
            options,
            highest_position=lambda: feed.highest_position,
            data_dir=Path(services.settings.storage.data_dir) if services.warehouse.backend == "embedded" else None,
        )
        await relay.start()
        services.health_checks["kafka_relay"] = relay.health
    kafka = KafkaIngest(services.ingest, options)
    await kafka.start()
    services.health_checks["kafka"] = kafka.health
    services.extras["kafka"] = kafka

    async def stop() -> None:
        """Both at once: their waits must add up to less than `server.stop_timeout_seconds` (30)."""
        if relay is None:
            await kafka.stop()
        else:
            await asyncio.gather(kafka.stop(), relay.stop(_RELAY_DRAIN_S))

    return stop


__all__ = [
    "REPLAY_SOURCE",
    "SOURCE",
    "DeadLetter",
    "DeadLetterReplay",
    "DerivedRelay",
    "KafkaIngest",
    "KafkaNotConnected",
    "KafkaOptions",
    "KafkaStatus",
    "PartitionState",
    "RelayProgress",
    "ensure_topics",
    "list_dead_letters",
    "read_progress",
    "replay_dead_letters",
    "start_kafka",
]
