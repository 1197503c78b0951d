"""A real Kafka-protocol broker per session (librdkafka's mock cluster; Tansu for transactions)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import msgspec
import pytest
from confluent_kafka import Consumer, Producer

from arbitrage.ingest import IngestService
from arbitrage.ingest.kafka import KafkaIngest, KafkaOptions
from arbitrage.storage import EmbeddedWarehouse
from arbitrage.stream import RecentTransactions
from tests.services.kafka_broker import Broker, MockCluster, start_broker


@pytest.fixture(scope="session")
def mock_broker() -> Iterator[Broker]:
    broker = start_broker("mock")
    yield broker
    broker.stop()


@pytest.fixture
def own_mock() -> Iterator[MockCluster]:
    """A mock cluster in this process, so that the test can make it refuse requests."""
    cluster = MockCluster({})
    yield cluster
    cluster.stop()


@pytest.fixture
def ingest_service(warehouse: EmbeddedWarehouse) -> IngestService:
    return IngestService(warehouse, RecentTransactions(1000), max_pending_batches=8)


def options_for(broker: Broker, **overrides: Any) -> KafkaOptions:
    """Options with topics and a group of their own, so tests never see each other's messages."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "bootstrap_servers": broker.bootstrap,
        "group_id": f"group-{tag}",
        "topic_transactions": f"tx-{tag}",
        "topic_opportunities": f"opportunities-{tag}",
        "topic_risk": f"risk-{tag}",
        "topic_dlq": f"dlq-{tag}",
        "topic_relay_progress": f"progress-{tag}",
        "batch_size": 500,
        "batch_timeout_ms": 100,
        "transactional": broker.transactional,
        "create_topics": broker.transactional,
        "partitions": {"transactions": 4, "opportunities": 2, "risk": 2, "dlq": 1},
        "session_timeout_ms": 6000,
        "stop_timeout_s": 10.0,
    }
    values.update(overrides)
    return KafkaOptions(**values)


Start = Callable[[KafkaOptions], Awaitable[KafkaIngest]]
"""The `start_ingest` fixture's function."""


@pytest.fixture
async def start_ingest(ingest_service: IngestService) -> AsyncIterator[Start]:
    """Start KafkaIngest instances on the test's warehouse; all are stopped at the end."""
    started: list[KafkaIngest] = []

    async def start(options: KafkaOptions) -> KafkaIngest:
        kafka = KafkaIngest(ingest_service, options)
        await kafka.start()
        started.append(kafka)
        return kafka

    yield start
    for kafka in started:
        await kafka.stop()


RawMessage = tuple[bytes | None, bytes | None, list[tuple[str, bytes]] | None]


async def produce(
    bootstrap: str, topic: str, records: list[dict[str, Any]], *, raw: Sequence[RawMessage] = (), stamped: bool = False
) -> None:
    """Contract records keyed by signature, then `raw` (key, value, headers) messages as they are.

    `stamped`: each record's block time is its message timestamp, as a collector producing live
    stamps it (otherwise the producer's clock).
    """
    await asyncio.to_thread(produce_blocking, bootstrap, topic, records, raw, stamped)


def produce_blocking(
    bootstrap: str,
    topic: str,
    records: list[dict[str, Any]],
    raw: Sequence[RawMessage] = (),
    stamped: bool = False,
) -> None:
    config = {"bootstrap.servers": bootstrap, "compression.type": "lz4", "linger.ms": 10}
    producer = Producer({**config, "message.max.bytes": 4_000_000})  # room for oversized poison
    encoder = msgspec.json.Encoder()
    for record in records:
        stamp = int(record["block_time"]) if stamped else 0  # 0: librdkafka stamps it now
        _send(producer, topic, record["signature"].encode(), encoder.encode(record), None, stamp)
    for key, value, headers in raw:
        _send(producer, topic, key, value, headers)
    assert producer.flush(30) == 0


def _send(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]] | None,
    timestamp: int = 0,
) -> None:
    while True:
        try:
            producer.produce(topic, value, key, headers=headers, timestamp=timestamp)
            return
        except BufferError:
            producer.poll(0.1)


async def read_topic(
    bootstrap: str, topic: str, *, expect: int, within: float = 30.0, settle: float = 1.0
) -> list[Any]:
    """Read `topic` from the start with read_committed until `expect` messages, then `settle` more seconds."""
    return await asyncio.to_thread(read_topic_blocking, bootstrap, topic, expect, within, settle)


def read_topic_blocking(
    bootstrap: str, topic: str, expect: int, timeout: float = 30.0, settle: float = 1.0
) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    settled_at: float | None = None
    try:
        while time.monotonic() < deadline:
            messages += [m for m in consumer.consume(1000, 0.2) if m.error() is None]
            if len(messages) >= expect:
                settled_at = settled_at or time.monotonic() + settle
                if time.monotonic() >= settled_at:
                    break
    finally:
        consumer.close()
    return messages


async def wait_for(condition: Callable[[], Awaitable[bool]], *, within: float = 60.0, what: str = "condition") -> None:
    """Poll `condition` until it holds or fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.1)


async def assigned(kafka: KafkaIngest) -> set[int]:
    """The partitions a consumer holds now."""
    return {p.partition for p in (await kafka.status()).partitions}


async def both_assigned(first: KafkaIngest, second: KafkaIngest) -> None:
    """Wait until each of two consumers in one group holds partitions (the rebalance is done)."""

    async def shared() -> bool:
        return bool(await assigned(first)) and bool(await assigned(second))

    await wait_for(shared, what="both consumers assigned", within=40)


async def stored_at_least(warehouse: EmbeddedWarehouse, n: int) -> bool:
    """Whether `n` distinct signatures are stored (a `wait_for` condition)."""
    return (await stored_counts(warehouse))[1] >= n


async def stored_counts(warehouse: EmbeddedWarehouse) -> tuple[int, int]:
    """(rows, distinct signatures) in the transactions table."""
    table = await warehouse.query_arrow(
        f"SELECT count() AS n, uniqExact(signature) AS u FROM {warehouse.database}.transactions"
    )
    return int(table.column("n")[0].as_py()), int(table.column("u")[0].as_py())
