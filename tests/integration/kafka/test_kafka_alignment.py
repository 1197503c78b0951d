"""A backlog spread over partitions is stored in time order, so features are computed in order; what the fetch thread holds."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import TopicPartition

from arbitrage.features import FeatureEngine
from arbitrage.ingest import IngestService
from arbitrage.ingest.kafka import KafkaIngest
from arbitrage.ingest.kafka._fetch import Channel, Chunk, Fetcher
from arbitrage.ingest.kafka._fetched import Fetched
from arbitrage.simulator import Simulator
from arbitrage.storage import EmbeddedWarehouse
from arbitrage.stream import RecentTransactions
from arbitrage.telemetry import METRICS
from tests.integration.kafka.conftest import options_for, produce, stored_at_least, wait_for
from tests.services.kafka_broker import Broker

pytestmark = pytest.mark.anyio


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
    await produce(mock_broker.bootstrap, options.topic_transactions, records, stamped=True)
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


async def test_a_revoke_drops_only_the_leaving_partitions_messages_from_the_chunk_kept_for_a_full_pipeline(
    mock_broker: Broker,
) -> None:
    """The kept partitions' positions are already past their messages: dropping those would skip them."""
    options = options_for(mock_broker)
    fetcher = Fetcher(options, Channel(asyncio.get_running_loop(), 1), on_assign=lambda _: None, committed=dict)
    try:
        kept = Fetched(options.topic_transactions)
        for partition, offset in [(0, 5), (1, 7), (0, 6), (2, 3)]:
            kept.extend(Fetched(options.topic_transactions, [b"{}"], [None], [partition], [offset], [None], [offset]))
        fetcher._held = Chunk(kept, fetcher.generation)
        fetcher._closing = True  # no pipeline to wait for
        fetcher._revoked(fetcher.consumer, [TopicPartition(options.topic_transactions, 1)])
        assert fetcher._held is not None
        assert list(zip(fetcher._held.fetched.partitions, fetcher._held.fetched.offsets, strict=True)) == [
            (0, 5),
            (0, 6),
            (2, 3),
        ]
        fetcher._revoked(fetcher.consumer, [TopicPartition(options.topic_transactions, p) for p in (0, 2)])
        assert fetcher._held is None
    finally:
        fetcher.consumer.close()


async def test_the_fetcher_says_why_each_partition_is_paused_and_what_it_holds(mock_broker: Broker) -> None:
    """What `/admin/kafka` shows: a partition held back by the others is told apart from one paused by hand."""
    options = options_for(mock_broker, batch_size=1000)
    fetcher = Fetcher(options, Channel(asyncio.get_running_loop(), 1), on_assign=lambda _: None, committed=dict)
    try:
        fetcher.assigned = [0, 1]
        assert fetcher._aligner is not None
        fetcher._aligner.expect([0, 1])
        ahead = 1000  # max(1000, 2 x batch_size / partitions): the most a partition holds before it pauses
        fetcher._aligner.add(
            Fetched(
                options.topic_transactions,
                [b"{}"] * ahead,
                [None] * ahead,
                [1] * ahead,
                list(range(ahead)),
                [None] * ahead,
                list(range(10_000, 10_000 + ahead)),
            )
        )
        fetcher._reconcile_pause()  # partition 0 has delivered nothing yet: 1 waits for it
        assert fetcher.held() == {0: 0, 1: ahead}
        assert fetcher.pause_reasons() == {1: ["alignment"]}
        assert METRICS.registry.get_sample_value("kafka_ingest_held_messages") == ahead

        fetcher.admin_paused = {0, 1}
        fetcher.backpressure = True
        fetcher._reconcile_pause()
        assert fetcher.pause_reasons() == {0: ["admin", "backpressure"], 1: ["admin", "backpressure", "alignment"]}

        fetcher.admin_paused, fetcher.backpressure = set(), False
        fetcher._aligner.reached_end(0)  # 0 holds nothing back any more: 1 is released
        fetcher._hand_over(fetcher._aligner.release(excluded=set(), paused=fetcher.paused))
        fetcher._reconcile_pause()
        assert fetcher.held() == {0: 0, 1: 0}
        assert fetcher.pause_reasons() == {}
        assert METRICS.registry.get_sample_value("kafka_ingest_held_messages") == 0
    finally:
        fetcher.consumer.close()
