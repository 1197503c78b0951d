"""Rebalances in the middle of things: paused partitions, batches in flight, lag of returning partitions."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from arbitrage.ingest.kafka import KafkaIngest
from arbitrage.ingest.kafka import _fetch as fetch_module
from arbitrage.simulator import Simulator
from arbitrage.storage import EmbeddedWarehouse
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
from tests.services.kafka_broker import Broker

pytestmark = pytest.mark.anyio


async def test_partitions_paused_when_revoked_are_fetched_again_once_resumed_after_the_rebalance(
    mock_broker: Broker, warehouse: EmbeddedWarehouse, start_ingest: Start
) -> None:
    """librdkafka keeps a partition paused across revoke and re-assign; the consumer must not forget that."""
    options = options_for(mock_broker)
    records = Simulator(seed=31).records(400)
    await produce(mock_broker.bootstrap, options.topic_transactions, records[:100])
    first = await start_ingest(options)
    await wait_for(lambda: stored_at_least(warehouse, 100), what="the first 100 stored")
    await first.pause()

    async def all_paused() -> bool:
        status = await first.status()
        return bool(status.partitions) and all(p.paused for p in status.partitions)

    await wait_for(all_paused, what="every partition paused")
    second = await start_ingest(options)

    await both_assigned(first, second)
    await first.resume()
    await produce(mock_broker.bootstrap, options.topic_transactions, records[100:])
    await wait_for(lambda: stored_at_least(warehouse, 400), what="400 stored after resume", within=30)
    await second.stop()
    await wait_for(lambda: _all_ours(first), what="the first consumer owns every partition again")
    more = Simulator(seed=32).records(200)
    await produce(mock_broker.bootstrap, options.topic_transactions, more)
    await wait_for(lambda: stored_at_least(warehouse, 600), what="600 stored by the first consumer alone", within=30)
    assert await stored_counts(warehouse) == (600, 600)


async def _all_ours(kafka: KafkaIngest) -> bool:
    return await assigned(kafka) == {0, 1, 2, 3}


async def test_lag_of_a_partition_that_comes_back_counts_from_what_its_other_owner_committed(
    mock_broker: Broker, warehouse: EmbeddedWarehouse, start_ingest: Start
) -> None:
    """The offsets this consumer committed before the partition moved are stale once it returns."""
    options = options_for(mock_broker)
    records = Simulator(seed=33).records(600)
    await produce(mock_broker.bootstrap, options.topic_transactions, records[:200])
    first = await start_ingest(options)
    await wait_for(lambda: _lag(first, 0), what="the first 200 committed")
    second = await start_ingest(options)

    await both_assigned(first, second)
    await produce(mock_broker.bootstrap, options.topic_transactions, records[200:])
    await wait_for(lambda: stored_at_least(warehouse, 600), what="600 stored")
    await wait_for(lambda: _lag(second, 0), what="the second consumer committed its share")
    await second.stop()
    await wait_for(lambda: _all_ours(first), what="the first consumer owns every partition again")
    await wait_for(lambda: _lag(first, 0), what="lag 0 once every partition is back", within=15)

    async def health_lag_zero() -> bool:
        return (await first.health())["lag"] == 0

    await wait_for(health_lag_zero, what="lag 0 in /health", within=10)


async def _lag(kafka: KafkaIngest, expected: int) -> bool:
    status = await kafka.status()
    return bool(status.partitions) and sum(p.lag or 0 for p in status.partitions) == expected


async def test_a_batch_still_storing_when_its_partitions_were_revoked_publishes_and_commits_nothing(
    tansu_broker: Broker, warehouse: EmbeddedWarehouse, start_ingest: Start
) -> None:
    """The warehouse is down across a rebalance, so the revoke cannot wait for the batch in flight.

    Once stored, that batch belongs to partitions this consumer gave up (or got back and reads
    again from the last commit): publishing or committing it is a zombie's work, and its derived
    records reached the topics twice.
    """
    options = options_for(tansu_broker, max_inflight_batches=1, instance="first")
    records = Simulator(seed=34).records(400)
    await produce(tansu_broker.bootstrap, options.topic_transactions, records)
    warehouse.fail("drill: warehouse down")
    first = await start_ingest(options)

    async def storing() -> bool:
        return (await first.status()).store_error is not None

    await wait_for(storing, what="a batch retried while the warehouse is down")
    second = await start_ingest(dataclasses.replace(options, instance="second"))  # its own default id

    await both_assigned(first, second)
    warehouse.fail(None)
    await wait_for(lambda: stored_at_least(warehouse, 400), what="400 stored")
    await wait_for(lambda: _lag(first, 0), what="the first consumer's share committed")
    await wait_for(lambda: _lag(second, 0), what="the second consumer's share committed")
    risk = await read_topic(tansu_broker.bootstrap, options.topic_risk, expect=400, settle=3.0)
    keys = [m.key() for m in risk]
    assert len(keys) - len(set(keys)) == 0, "risk metrics published twice"
    assert set(keys) == {r["signature"].encode() for r in records}


async def test_with_cooperative_rebalancing_a_consumer_keeps_the_partitions_it_was_not_asked_to_give_up(
    mock_broker: Broker, warehouse: EmbeddedWarehouse, start_ingest: Start
) -> None:
    """`cooperative-sticky` (a librdkafka setting passed through `extra`) assigns and revokes increments."""
    options = options_for(mock_broker, extra={"partition.assignment.strategy": "cooperative-sticky"})
    records = Simulator(seed=35).records(400)
    await produce(mock_broker.bootstrap, options.topic_transactions, records[:200])
    first = await start_ingest(options)
    await wait_for(lambda: _lag(first, 0), what="the first 200 committed")
    second = await start_ingest(options)

    async def shared() -> bool:
        mine, theirs = await assigned(first), await assigned(second)
        return bool(theirs) and mine | theirs == {0, 1, 2, 3} and not mine & theirs

    await wait_for(shared, what="the partitions split between both consumers", within=30)
    await produce(mock_broker.bootstrap, options.topic_transactions, records[200:])
    await wait_for(lambda: stored_at_least(warehouse, 400), what="400 stored")
    assert await stored_counts(warehouse) == (400, 400)


async def test_with_cooperative_rebalancing_a_batch_that_lost_some_partitions_still_publishes_and_commits_the_rest(
    mock_broker: Broker, warehouse: EmbeddedWarehouse, start_ingest: Start
) -> None:
    """The revoke wait runs out while a batch of every partition is stored (the warehouse is down).

    The partitions given up are their next owner's to publish and commit, but the kept ones are
    still this consumer's: dropping the whole batch left their offsets to the next batch's
    commit, which passed over them, and their derived records were never published.
    """
    options = options_for(
        mock_broker,
        extra={"partition.assignment.strategy": "cooperative-sticky"},
        batch_size=1000,
        batch_timeout_ms=500,
        max_inflight_batches=1,
        revoke_timeout_s=1.0,
        retry_backoff_max_s=0.5,
    )
    records = Simulator(seed=36).records(600)
    await produce(mock_broker.bootstrap, options.topic_transactions, records[:400])
    warehouse.fail("drill: warehouse down")
    first = await start_ingest(options)

    async def storing() -> bool:
        return (await first.status()).store_error is not None

    await wait_for(storing, what="a batch of every partition retried while the warehouse is down")
    second = await start_ingest(options)

    async def shared() -> bool:
        mine, theirs = await assigned(first), await assigned(second)
        return bool(theirs) and bool(mine) and mine | theirs == {0, 1, 2, 3}

    await wait_for(shared, what="the partitions split between both consumers", within=30)
    warehouse.fail(None)
    await produce(mock_broker.bootstrap, options.topic_transactions, records[400:])
    await wait_for(lambda: stored_at_least(warehouse, 600), what="600 stored")
    await wait_for(lambda: _lag(first, 0), what="the first consumer's share committed")
    await wait_for(lambda: _lag(second, 0), what="the second consumer's share committed")
    risk = await read_topic(mock_broker.bootstrap, options.topic_risk, expect=600, settle=2.0)
    missing = {r["signature"].encode() for r in records} - {m.key() for m in risk}
    assert not missing, f"{len(missing)} stored transactions never had their risk metrics published"


@pytest.mark.parametrize("strategy", ["cooperative-sticky", "range"])
async def test_a_stopping_consumer_hands_its_partitions_back_before_it_closes(
    mock_broker: Broker,
    warehouse: EmbeddedWarehouse,
    start_ingest: Start,
    monkeypatch: pytest.MonkeyPatch,
    strategy: str,
) -> None:
    """A revoke served inside `Consumer.close()` can hang the process with the GIL held (librdkafka#4041)."""
    options = options_for(mock_broker, extra={"partition.assignment.strategy": strategy})
    records = Simulator(seed=36).records(100)
    await produce(mock_broker.bootstrap, options.topic_transactions, records)
    kafka = await start_ingest(options)
    await wait_for(lambda: stored_at_least(warehouse, 100), what="100 stored")
    fetcher = kafka._fetcher
    assert fetcher is not None and await assigned(kafka)
    assigned_at_close: list[list[int]] = []
    real_close_within = fetch_module.close_within

    def close_within(close: Callable[[], None], timeout: float) -> bool:
        assigned_at_close.append([tp.partition for tp in fetcher.consumer.assignment()])
        return real_close_within(close, timeout)

    monkeypatch.setattr(fetch_module, "close_within", close_within)
    await kafka.stop()
    assert assigned_at_close == [[]]
    assert await stored_counts(warehouse) == (100, 100)
