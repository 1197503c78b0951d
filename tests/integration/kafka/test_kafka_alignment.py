"""A backlog spread over partitions is stored in time order, so features are computed in order."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from confluent_kafka import Producer

from arbitrage.features import FeatureEngine
from arbitrage.ingest import IngestService
from arbitrage.ingest.kafka import KafkaIngest
from arbitrage.simulator import Simulator
from arbitrage.storage import EmbeddedWarehouse
from arbitrage.stream import RecentTransactions
from tests.integration.kafka.conftest import options_for, stored_at_least, wait_for
from tests.services.kafka_broker import Broker

pytestmark = pytest.mark.anyio


def produce_stamped(bootstrap: str, topic: str, records: list[dict[str, object]]) -> None:
    """Each record with its block time as the message timestamp, as a collector producing live stamps it."""
    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": "lz4", "linger.ms": 10})
    encoder = msgspec.json.Encoder()
    for record in records:
        signature = str(record["signature"])
        producer.produce(topic, encoder.encode(record), signature.encode(), timestamp=int(record["block_time"]))  # type: ignore[call-overload]
        producer.poll(0)
    assert producer.flush(30) == 0


async def late_rows(warehouse: EmbeddedWarehouse) -> tuple[int, int]:
    table = await warehouse.query_arrow(
        f"SELECT countIf(late) AS late, count() AS n FROM {warehouse.database}.transactions FINAL"
    )
    return int(table.column("late")[0].as_py()), int(table.column("n")[0].as_py())


async def test_a_backlog_over_several_partitions_is_stored_in_time_order_so_no_row_is_late(
    mock_broker: Broker, warehouse: EmbeddedWarehouse
) -> None:
    options = options_for(
        mock_broker, batch_size=1000, partitions={"transactions": 4, "opportunities": 2, "risk": 2, "dlq": 1}
    )
    records = Simulator(seed=21).records(8000)
    await asyncio.to_thread(produce_stamped, mock_broker.bootstrap, options.topic_transactions, records)
    service = IngestService(warehouse, RecentTransactions(10), enrichers=[FeatureEngine().process])
    kafka = KafkaIngest(service, options)
    await kafka.start()
    try:
        await wait_for(lambda: stored_at_least(warehouse, len(records)), what="the backlog stored", within=60)
    finally:
        await kafka.stop()
    late, stored = await late_rows(warehouse)
    assert stored == len(records)
    assert late == 0
