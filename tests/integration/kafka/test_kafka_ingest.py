"""Kafka → warehouse on a real Kafka-protocol broker (librdkafka's mock cluster)."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from arbitrage.errors import ValidationError
from arbitrage.ingest import IngestService
from arbitrage.ingest.kafka import KafkaIngest, replay_dead_letters
from arbitrage.simulator import Simulator
from arbitrage.storage import EmbeddedWarehouse
from arbitrage.stream import RecentTransactions
from tests.integration.kafka.conftest import (
    Start,
    assigned,
    both_assigned,
    options_for,
    produce,
    read_topic,
    stored_at_least,
    stored_counts,
    wait_for,
)
from tests.services.kafka_broker import Broker, MockCluster

pytestmark = pytest.mark.anyio


async def test_every_produced_record_is_stored_once_and_its_offsets_committed(
    mock_broker: Broker, warehouse: EmbeddedWarehouse, start_ingest: Start
) -> None:
    options = options_for(mock_broker)
    records = Simulator(seed=11).records(2000)
    await produce(mock_broker.bootstrap, options.topic_transactions, records)
    kafka = await start_ingest(options)
    await wait_for(lambda: stored_at_least(warehouse, 2000), what="2000 stored")
    await produce(mock_broker.bootstrap, options.topic_transactions, records[:300])

    async def caught_up() -> bool:
        status = await kafka.status()
        return bool(status.partitions) and all(p.lag == 0 for p in status.partitions)

    await wait_for(caught_up, what="lag 0")
    assert await stored_counts(warehouse) == (2000, 2000)

    async def health_caught_up() -> bool:  # /health's lag is the fetch loop's, refreshed every second
        return (await kafka.health())["lag"] == 0

    await wait_for(health_caught_up, what="lag 0 in /health")
    health = await kafka.health()
    assert health["status"] == "healthy"
    assert health["connected"] is True


async def test_poison_messages_go_to_the_dlq_and_the_rest_is_stored(
    mock_broker: Broker, warehouse: EmbeddedWarehouse, start_ingest: Start
) -> None:
    options = options_for(mock_broker)
    records = Simulator(seed=12).records(400)
    bad_slot = dict(records[0], signature="5" * 88, slot=-1)
    poison = [
        (b"not-json", b"{this is not json", [("origin", b"fuzzer")]),
        (bad_slot["signature"].encode(), __import__("msgspec").json.encode(bad_slot), [("origin", b"bad-slot")]),
        (b"empty", None, None),
    ]
    await produce(mock_broker.bootstrap, options.topic_transactions, records[:200], raw=poison)
    await produce(mock_broker.bootstrap, options.topic_transactions, records[200:])
    await start_ingest(options)
    await wait_for(lambda: stored_at_least(warehouse, 400), what="400 stored")

    dlq = await read_topic(mock_broker.bootstrap, options.topic_dlq, expect=3)
    assert len(dlq) == 3
    by_key = {m.key(): m for m in dlq}
    letter = by_key[b"not-json"]
    headers = dict(letter.headers())
    assert letter.value() == b"{this is not json"
    assert headers["origin"] == b"fuzzer"
    assert headers["dlq.field"] == b"$"
    assert headers["dlq.topic"] == options.topic_transactions.encode()
    assert int(headers["dlq.offset"]) >= 0
    assert int(headers["dlq.partition"]) >= 0
    assert dict(by_key[bad_slot["signature"].encode()].headers())["dlq.field"] == b"slot"

    table = await warehouse.query_arrow(f"SELECT source, field FROM {warehouse.database}.dead_letters")
    assert sorted(table.column("field").to_pylist()) == ["$", "$", "slot"]
    assert set(table.column("source").to_pylist()) == {"kafka"}
    assert await stored_counts(warehouse) == (400, 400)


async def test_a_poison_message_too_large_for_the_dlq_goes_there_cut_and_nothing_else_is_lost(
    mock_broker: Broker, warehouse: EmbeddedWarehouse, start_ingest: Start
) -> None:
    """Copied whole, its DLQ record was over the producer's 1 MB limit and failed its batch's commit."""
    options = options_for(mock_broker, batch_size=50)
    records = Simulator(seed=23).records(40)
    huge = b"{" + b" " * 1_100_000 + b"not json"
    await produce(mock_broker.bootstrap, options.topic_transactions, records[:20], raw=[(b"huge", huge, None)])
    await produce(mock_broker.bootstrap, options.topic_transactions, records[20:])
    kafka = await start_ingest(options)
    await wait_for(lambda: stored_at_least(warehouse, 40), what="40 stored")
    (letter,) = await read_topic(mock_broker.bootstrap, options.topic_dlq, expect=1)
    headers = dict(letter.headers())
    assert headers["dlq.truncated_from"] == str(len(huge)).encode()
    assert letter.value() == huge[: len(letter.value())] and len(letter.value()) < 1_000_000
    table = await warehouse.query_arrow(f"SELECT length(raw) AS n FROM {warehouse.database}.dead_letters")
    assert table.column("n").to_pylist() == [len(huge)]
    await wait_for(lambda: _all_committed(kafka), what="every offset committed")


async def test_a_poison_message_with_huge_headers_goes_to_the_dlq_within_the_size_limit_and_nothing_blocks(
    mock_broker: Broker, warehouse: EmbeddedWarehouse, start_ingest: Start
) -> None:
    """Its headers count toward the producer's 1 MB limit too: copied whole they failed every commit attempt."""
    options = options_for(mock_broker, batch_size=50)
    records = Simulator(seed=24).records(40)
    value = b"{" + b" " * 800_000 + b"not json"
    headers = [(f"h{i}", b"\xff" * 50_000) for i in range(6)]
    await produce(mock_broker.bootstrap, options.topic_transactions, records[:20], raw=[(b"heavy", value, headers)])
    await produce(mock_broker.bootstrap, options.topic_transactions, records[20:])
    kafka = await start_ingest(options)
    await wait_for(lambda: stored_at_least(warehouse, 40), what="40 stored")
    (letter,) = await read_topic(mock_broker.bootstrap, options.topic_dlq, expect=1)
    kept = dict(letter.headers())
    size = len(letter.value()) + sum(len(k) + len(v or b"") for k, v in letter.headers())
    assert size < 1_000_000
    assert kept["h0"] == kept["h1"] == b"\xff" * 50_000  # kept whole while they fit, non-UTF-8 bytes as they were
    assert "h2" not in kept
    assert kept["dlq.headers_dropped"] == b"4"
    assert kept["dlq.truncated_from"] == str(len(value)).encode()
    assert letter.value() == value[: len(letter.value())]
    await wait_for(lambda: _all_committed(kafka), what="every offset committed")


async def _all_committed(kafka: KafkaIngest) -> bool:
    status = await kafka.status()
    return bool(status.partitions) and all(p.lag == 0 for p in status.partitions) and kafka.commit_error is None


async def test_a_record_that_breaks_processing_is_dead_lettered_and_the_partition_moves_on(
    mock_broker: Broker, warehouse: EmbeddedWarehouse
) -> None:
    """A fault no rule foresaw (here an enricher that fails on one signature) must not block the partition."""
    records = Simulator(seed=21).records(300)
    cursed = records[123]["signature"]

    def enrich(frame: pl.DataFrame) -> pl.DataFrame:
        if cursed in frame["signature"]:
            raise ZeroDivisionError("a bug this record triggers")
        return frame

    options = options_for(mock_broker, batch_size=100)
    kafka = KafkaIngest(IngestService(warehouse, RecentTransactions(1000), enrichers=[enrich]), options)
    await produce(mock_broker.bootstrap, options.topic_transactions, records)
    await kafka.start()
    try:
        await wait_for(lambda: stored_at_least(warehouse, 299), what="299 stored")
        dlq = await read_topic(mock_broker.bootstrap, options.topic_dlq, expect=1)
        assert [m.key() for m in dlq] == [cursed.encode()]
        assert b"ZeroDivisionError" in dict(dlq[0].headers())["dlq.reason"]
    finally:
        await kafka.stop()
    assert await stored_counts(warehouse) == (299, 299)
    table = await warehouse.query_arrow(f"SELECT field, reason FROM {warehouse.database}.dead_letters")
    assert table.column("field").to_pylist() == ["$"]


async def test_a_replayed_dead_letter_still_bad_stays_one_unreplayed_kafka_letter(
    mock_broker: Broker, warehouse: EmbeddedWarehouse, ingest_service: IngestService, start_ingest: Start
) -> None:
    options = options_for(mock_broker)
    await produce(mock_broker.bootstrap, options.topic_transactions, [], raw=[(b"k", b"{broken", None)])
    await start_ingest(options)

    async def letters() -> list[dict[str, object]]:
        table = await warehouse.query_arrow(
            f"SELECT source, replayed, replayed_at FROM {warehouse.database}.dead_letters"
        )
        return table.to_pylist()

    async def one_dead_letter() -> bool:
        return len(await letters()) == 1

    await wait_for(one_dead_letter, what="a dead letter")
    for _ in range(2):  # still bad: tried again by every replay, under its own source, never multiplied
        result = await replay_dead_letters(ingest_service, source="kafka")
        assert (result.replayed, result.report.rejected) == (1, 1)
    [letter] = await letters()
    assert (letter["source"], letter["replayed"]) == ("kafka", False)
    assert letter["replayed_at"] is not None


async def test_warehouse_outage_pauses_partitions_then_resumes_without_loss(
    mock_broker: Broker, warehouse: EmbeddedWarehouse, start_ingest: Start
) -> None:
    options = options_for(mock_broker, batch_size=200, max_inflight_batches=1, fetch_queue_chunks=1)
    warehouse.fail("drill: warehouse down")
    kafka = await start_ingest(options)
    await produce(mock_broker.bootstrap, options.topic_transactions, Simulator(seed=13).records(3000))

    async def paused() -> bool:
        status = await kafka.status()
        paused = status.backpressure and all(p.paused for p in status.partitions) and bool(status.partitions)
        return paused and status.store_error is not None  # the first store attempt has failed by now

    await wait_for(paused, what="back-pressure pause")
    assert all("backpressure" in p.paused_for for p in (await kafka.status()).partitions)
    health = await kafka.health()
    assert health["status"] == "degraded"
    assert "drill" in health["error"]
    warehouse.fail(None)
    await wait_for(lambda: stored_at_least(warehouse, 3000), what="3000 stored after recovery")
    status = await kafka.status()
    assert not status.backpressure
    assert status.store_error is None
    assert await stored_counts(warehouse) == (3000, 3000)


async def test_two_consumers_share_the_partitions_and_store_each_record_once(
    mock_broker: Broker, warehouse: EmbeddedWarehouse, start_ingest: Start
) -> None:
    options = options_for(mock_broker)
    records = Simulator(seed=14).records(3000)
    await produce(mock_broker.bootstrap, options.topic_transactions, records[:1000])
    first = await start_ingest(options)
    await wait_for(lambda: stored_at_least(warehouse, 1000), what="first 1000")
    second = await start_ingest(options)
    await produce(mock_broker.bootstrap, options.topic_transactions, records[1000:2000])

    await both_assigned(first, second)
    a_parts, b_parts = await assigned(first), await assigned(second)
    assert a_parts.isdisjoint(b_parts)
    assert a_parts | b_parts == {0, 1, 2, 3}
    await wait_for(lambda: stored_at_least(warehouse, 2000), what="2000 stored")

    await first.stop()
    await produce(mock_broker.bootstrap, options.topic_transactions, records[2000:])
    await wait_for(lambda: stored_at_least(warehouse, 3000), what="3000 stored by the survivor")
    assert await stored_counts(warehouse) == (3000, 3000)


async def test_replay_from_an_offset_stores_nothing_twice(
    mock_broker: Broker, warehouse: EmbeddedWarehouse, start_ingest: Start
) -> None:
    options = options_for(mock_broker)
    await produce(mock_broker.bootstrap, options.topic_transactions, Simulator(seed=15).records(800))
    kafka = await start_ingest(options)
    await wait_for(lambda: stored_at_least(warehouse, 800), what="800 stored")
    assert await kafka.replay(0, offset=0) == 0
    assert await kafka.replay(1, offset=0) == 0

    async def replayed() -> bool:
        status = await kafka.status()
        return all(p.lag == 0 and p.position == p.high_watermark for p in status.partitions)

    await wait_for(replayed, what="replay consumed")
    assert await stored_counts(warehouse) == (800, 800)
    risk = await read_topic(mock_broker.bootstrap, options.topic_risk, expect=800, settle=3.0)
    assert len(risk) == len({m.key() for m in risk}) == 800  # a replay publishes no derived record again
    with pytest.raises(Exception, match="not assigned"):
        await kafka.replay(99, offset=0)
    high = (await kafka.status()).partitions[0].high_watermark
    for outside in (-5, high + 1):
        with pytest.raises(ValidationError, match="holds offsets"):
            await kafka.replay(0, offset=outside)


async def test_admin_pause_stops_consumption_until_resumed(
    mock_broker: Broker, warehouse: EmbeddedWarehouse, start_ingest: Start
) -> None:
    options = options_for(mock_broker)
    records = Simulator(seed=16).records(301)
    await produce(mock_broker.bootstrap, options.topic_transactions, records[:1])
    kafka = await start_ingest(options)
    await wait_for(lambda: stored_at_least(warehouse, 1), what="the first record stored")
    await wait_for(lambda: _lag(kafka, 0), what="the first record committed")
    for unknown in ([4], [0, 99], [-1]):  # the topic has partitions 0 to 3
        with pytest.raises(ValidationError, match=r"has partitions 0 to 3; no partition \["):
            await kafka.pause(unknown)
        with pytest.raises(ValidationError, match="no partition"):
            await kafka.resume(unknown)
    assert await kafka.resume([]) == [], "a refused pause paused something"
    await kafka.pause()
    await wait_for(lambda: _all_paused(kafka), what="paused")
    await produce(mock_broker.bootstrap, options.topic_transactions, records[1:])
    status = await kafka.status()
    assert sum(p.lag or 0 for p in status.partitions) == 300
    assert [(p.paused_for, p.held) for p in status.partitions] == [(["admin"], 0)] * 4
    assert await stored_counts(warehouse) == (1, 1)
    await kafka.resume()
    await wait_for(lambda: stored_at_least(warehouse, 301), what="301 stored after resume")


async def _lag(kafka: KafkaIngest, expected: int) -> bool:
    status = await kafka.status()
    return bool(status.partitions) and sum(p.lag or 0 for p in status.partitions) == expected


async def _all_paused(kafka: KafkaIngest) -> bool:
    status = await kafka.status()
    return all(p.paused for p in status.partitions)


async def test_derived_records_wait_for_room_in_a_full_producer_queue_and_none_is_lost(
    mock_broker: Broker, warehouse: EmbeddedWarehouse, start_ingest: Start
) -> None:
    # A 20-message producer queue: every batch's derived records overflow it many times over.
    options = options_for(mock_broker, extra={"queue.buffering.max.messages": "20"}, batch_size=400)
    records = Simulator(seed=12).records(1200)
    await produce(mock_broker.bootstrap, options.topic_transactions, records)
    await start_ingest(options)
    await wait_for(lambda: stored_at_least(warehouse, 1200), what="1200 stored")
    risk = await read_topic(mock_broker.bootstrap, options.topic_risk, expect=1200, within=30)
    assert sorted(m.key() for m in risk) == sorted(r["signature"].encode() for r in records)


async def test_without_transactions_derived_records_the_broker_refused_are_sent_again_before_offsets_commit(
    warehouse: EmbeddedWarehouse, own_mock: MockCluster, start_ingest: Start
) -> None:
    """Plain mode (brokers without transactions): a flush returns once every record is answered,
    refused ones too. Committing the offsets then lost those records for good."""
    options = options_for(own_mock, transactional=False, create_topics=False)  # type: ignore[arg-type]
    own_mock.create_topic(options.topic_transactions, 4)
    records = Simulator(seed=37).records(200)
    await produce(own_mock.bootstrap, options.topic_transactions, records)
    own_mock.fail_requests(_PRODUCE, [_MSG_SIZE_TOO_LARGE] * 3)  # the derived records' first requests
    kafka = await start_ingest(options)
    await wait_for(lambda: stored_at_least(warehouse, 200), what="200 stored")
    await wait_for(lambda: _lag(kafka, 0), what="the offsets committed")
    stored = await warehouse.query_arrow(
        f"SELECT signature, net_profit_sol > 0 AS profitable FROM {warehouse.database}.transactions"
    )
    profitable = {s.encode() for s, p in zip(*stored.to_pydict().values(), strict=True) if p}
    for topic, expected in ((options.topic_opportunities, profitable), (options.topic_risk, _keys(records))):
        published = await read_topic(own_mock.bootstrap, topic, expect=len(expected), settle=2.0)
        missing = expected - {m.key() for m in published}
        assert not missing, f"{len(missing)} records of {topic} refused by the broker were never sent again"
    status = await kafka.health()
    assert status["status"] == "healthy", status


def _keys(records: list[dict[str, Any]]) -> set[bytes]:
    return {r["signature"].encode() for r in records}


_PRODUCE = 0
"""Kafka's API key of Produce requests."""
_MSG_SIZE_TOO_LARGE = 10
"""A Produce error the producer does not retry: the records it answers are refused for good."""


async def test_a_paused_partitions_lag_grows_with_what_is_produced_meanwhile(
    mock_broker: Broker, warehouse: EmbeddedWarehouse, start_ingest: Start
) -> None:
    """A paused partition is not fetched, so the end its fetches reported stays put: its lag read 0 in
    /health and the lag gauge while its backlog grew (backpressure pauses every partition, too)."""
    options = options_for(mock_broker)
    records = Simulator(seed=17).records(500)
    await produce(mock_broker.bootstrap, options.topic_transactions, records[:100])  # the mock makes the topic
    kafka = await start_ingest(options)
    await wait_for(lambda: stored_at_least(warehouse, 100), what="100 stored")

    async def lag_in_health(expected: int) -> bool:
        return (await kafka.health())["lag"] == expected

    await wait_for(lambda: lag_in_health(0), what="lag 0 in /health")
    partitions = await assigned(kafka)
    await kafka.pause()

    async def all_paused() -> bool:  # the fetch thread pauses them on its next turn
        return set((await kafka.health())["paused_partitions"]) == partitions

    await wait_for(all_paused, what="every partition paused")
    await produce(mock_broker.bootstrap, options.topic_transactions, records[100:])
    await wait_for(lambda: lag_in_health(400), what="the paused backlog in /health")
    assert await stored_counts(warehouse) == (100, 100)
    await kafka.resume()
    await wait_for(lambda: stored_at_least(warehouse, 500), what="500 stored once resumed")
