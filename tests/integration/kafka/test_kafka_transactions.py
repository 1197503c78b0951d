"""The transactional path on Tansu, a broker that implements transactions and read_committed."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from arbitrage.ingest import IngestService, KafkaOrigins
from arbitrage.ingest.kafka import KafkaOptions
from arbitrage.simulator import Simulator
from arbitrage.storage import EmbeddedWarehouse
from arbitrage.stream import RecentTransactions
from arbitrage.telemetry import METRICS
from tests.integration.kafka.conftest import (
    Start,
    options_for,
    produce,
    read_topic,
    stored_at_least,
    stored_counts,
    wait_for,
)
from tests.services.kafka_broker import Broker

pytestmark = pytest.mark.anyio


def _committed(broker: Broker, options: KafkaOptions, partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": options.group_id})
    try:
        offsets = consumer.committed(
            [TopicPartition(options.topic_transactions, p) for p in range(partitions)], timeout=10
        )
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)


async def test_derived_topics_and_offsets_commit_in_one_transaction_read_committed_sees_each_once(
    tansu_broker: Broker, warehouse: EmbeddedWarehouse, start_ingest: Start
) -> None:
    options = options_for(tansu_broker)
    records = Simulator(seed=21).records(1500)
    poison = [(b"poison", b"[1, 2", [("origin", b"test")])]
    kafka = await start_ingest(options)
    await produce(tansu_broker.bootstrap, options.topic_transactions, records, raw=poison)

    async def all_stored() -> bool:
        return (await stored_counts(warehouse))[1] >= 1500

    await wait_for(all_stored, what="1500 stored")
    table = await warehouse.query_arrow(
        f"SELECT countIf(net_profit_sol > 0) AS profitable FROM {warehouse.database}.transactions"
    )
    profitable = int(table.column("profitable")[0].as_py())
    assert 0 < profitable < 1500

    async def committed_all() -> bool:
        status = await kafka.status()
        return sum(p.committed or 0 for p in status.partitions) == 1501

    await wait_for(committed_all, what="offsets committed")
    opportunities = await read_topic(tansu_broker.bootstrap, options.topic_opportunities, expect=profitable, within=20)
    risk = await read_topic(tansu_broker.bootstrap, options.topic_risk, expect=1500, within=20)
    dlq = await read_topic(tansu_broker.bootstrap, options.topic_dlq, expect=1, within=20)
    assert len(opportunities) == profitable
    assert len({m.key() for m in opportunities}) == profitable
    assert all(msgspec.json.decode(m.value())["net_profit_sol"] > 0 for m in opportunities)
    assert len(risk) == 1500
    assert {"signature", "block_time", "net_profit_sol", "hops"} <= set(msgspec.json.decode(risk[0].value()))
    assert [m.value() for m in dlq] == [b"[1, 2"]
    assert _committed(tansu_broker, options, 4) == 1501


async def test_restart_after_stored_but_uncommitted_batches_republishes_their_derived_records_once(
    tansu_broker: Broker, warehouse: EmbeddedWarehouse, start_ingest: Start
) -> None:
    """A crash between insert and commit: the rows are in the warehouse, the transaction never committed.

    Batches as large as the crashed batch, so the restarted consumer looks up thousands of stored
    signatures at once (more than fit in one inlined query).
    """
    options = options_for(tansu_broker, batch_size=5000, batch_timeout_ms=1000)
    records = Simulator(seed=22).records(5000)
    kafka = await start_ingest(options)
    await produce(tansu_broker.bootstrap, options.topic_transactions, records[:1])
    await wait_for(lambda: stored_at_least(warehouse, 1), what="first record")
    await kafka.stop()
    # Simulate the crashed owner: it read the records and stored them; their offsets and derived records are lost.
    await produce(tansu_broker.bootstrap, options.topic_transactions, records[1:])
    fetched = await read_topic(tansu_broker.bootstrap, options.topic_transactions, expect=5000, settle=0)
    crashed = [m for m in fetched if m.key() != records[0]["signature"].encode()]
    service = IngestService(warehouse, RecentTransactions(10))
    origins = KafkaOrigins([m.partition() for m in crashed], [m.offset() for m in crashed])
    await service.ingest_records([m.value() for m in crashed], source="kafka", origins=origins)
    started = time.monotonic()
    await start_ingest(options)

    await _each_profitable_published_once(tansu_broker, options, warehouse)
    assert await stored_counts(warehouse) == (5000, 5000)
    assert time.monotonic() - started < 60


async def test_a_signature_sent_again_after_a_restart_is_not_published_again(
    tansu_broker: Broker, warehouse: EmbeddedWarehouse, start_ingest: Start
) -> None:
    """Upstream re-sends land in the offsets a new owner checks first; their rows came from other messages."""
    options = options_for(tansu_broker)
    records = Simulator(seed=23).records(400)
    kafka = await start_ingest(options)
    await produce(tansu_broker.bootstrap, options.topic_transactions, records[:300])

    async def committed(n: int) -> bool:
        status = await kafka.status()
        return sum(p.committed or 0 for p in status.partitions) == n

    await wait_for(lambda: committed(300), what="the first 300 committed")
    await kafka.stop()
    resent = [r for r in records[:300] if r["signature"] in await _profitable_signatures(warehouse)][:40]
    assert resent
    await produce(tansu_broker.bootstrap, options.topic_transactions, [*resent, *records[300:]])
    kafka = await start_ingest(options)
    await wait_for(lambda: committed(300 + len(resent) + 100), what="the re-sent and new records committed")

    stored = await warehouse.query_arrow(f"SELECT kafka_partition, kafka_offset FROM {warehouse.database}.transactions")
    assert stored.num_rows == 400 and stored.column("kafka_offset").null_count == 0
    await _each_profitable_published_once(tansu_broker, options, warehouse)


async def test_a_fenced_producer_stops_the_pipeline_and_health_says_why(
    tansu_broker: Broker, warehouse: EmbeddedWarehouse, start_ingest: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """A newer instance with the same transactional id takes over; this one must stop, not retry forever."""
    options = options_for(tansu_broker)
    records = Simulator(seed=24).records(200)
    kafka = await start_ingest(options)
    await produce(tansu_broker.bootstrap, options.topic_transactions, records[:100])
    await wait_for(lambda: stored_at_least(warehouse, 100), what="the first 100 stored")
    successor = Producer({"bootstrap.servers": tansu_broker.bootstrap, "transactional.id": options.txn_id})
    await asyncio.to_thread(successor.init_transactions, 30)
    await produce(tansu_broker.bootstrap, options.topic_transactions, records[100:])

    async def stopped() -> bool:
        return not kafka.running

    await wait_for(stopped, what="the fenced pipeline stopped")
    health = await kafka.health()
    assert health["status"] == "unhealthy"
    assert "FENCED" in health["error"]
    assert any("Kafka ingest stopped" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


async def _each_profitable_published_once(broker: Broker, options: KafkaOptions, warehouse: EmbeddedWarehouse) -> None:
    profitable = await _profitable_signatures(warehouse)
    opportunities = await read_topic(broker.bootstrap, options.topic_opportunities, expect=len(profitable), within=30)
    assert len(opportunities) == len(profitable)
    assert {m.key().decode() for m in opportunities} == profitable


async def _profitable_signatures(warehouse: EmbeddedWarehouse) -> set[str]:
    table = await warehouse.query_arrow(
        f"SELECT signature FROM {warehouse.database}.transactions WHERE net_profit_sol > 0"
    )
    return set(table.column("signature").to_pylist())


async def test_replay_from_a_timestamp_seeks_to_the_first_message_at_or_after_it(
    tansu_broker: Broker, warehouse: EmbeddedWarehouse, start_ingest: Start
) -> None:
    options = options_for(tansu_broker, partitions={"transactions": 1, "opportunities": 1, "risk": 1, "dlq": 1})
    kafka = await start_ingest(options)

    async def assigned() -> bool:
        return bool((await kafka.status()).partitions)

    await wait_for(assigned, what="the one-partition topic created and assigned")
    before = int(time.time() * 1000) - 1000
    await produce(tansu_broker.bootstrap, options.topic_transactions, Simulator(seed=23).records(200))
    await wait_for(lambda: stored_at_least(warehouse, 200), what="200 stored")
    duplicates_before = _duplicates()
    assert await kafka.replay(0, timestamp_ms=before) == 0

    async def replayed() -> bool:
        status = await kafka.status()
        return _duplicates() - duplicates_before >= 200 and all(
            p.position == p.committed == 200 for p in status.partitions
        )

    try:
        await wait_for(replayed, what="replay consumed and committed", within=30)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {await kafka.status()}, duplicates {_duplicates() - duplicates_before}") from None
    assert await stored_counts(warehouse) == (200, 200)


def _duplicates() -> float:
    """Tansu reports odd high watermarks, so progress is read from the consumer's own counter."""
    return METRICS.registry.get_sample_value("kafka_ingest_messages_total", {"outcome": "duplicate"}) or 0.0
