"""The relay: transactions stored through HTTP, files or the demo reach the derived topics too, each once."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from confluent_kafka.admin import AdminClient

from arbitrage.app import start_services
from arbitrage.config import Settings
from arbitrage.ingest import IngestReport
from arbitrage.ingest.kafka import DerivedRelay, KafkaIngest, KafkaOptions, read_progress
from arbitrage.services import Services
from arbitrage.simulator import Simulator
from tests.integration.kafka.conftest import options_for, produce, read_topic, wait_for
from tests.services.kafka_broker import Broker, MockCluster

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

_PRODUCE, _END_TXN = 0, 26
"""Kafka API keys of requests the mock cluster is told to fail."""
_REQUEST_TIMED_OUT, _MSG_SIZE_TOO_LARGE = 7, 10

StartRelay = Callable[[Services, KafkaOptions], Awaitable[DerivedRelay]]


@pytest.fixture
async def start_relay() -> AsyncIterator[StartRelay]:
    started: list[DerivedRelay] = []

    async def start(services: Services, options: KafkaOptions, **overrides: Any) -> DerivedRelay:
        relay = DerivedRelay(
            services.ingest,
            options,
            highest_position=lambda: services.feed.highest_position,
            data_dir=Path(services.settings.storage.data_dir),
            **overrides,
        )
        await relay.start()
        started.append(relay)
        return relay

    yield start
    for relay in started:
        await relay.stop(5.0)


async def _store(services: Services, records: list[dict[str, Any]], source: str) -> IngestReport:
    return await services.ingest.ingest_body(msgspec.json.encode(records), "application/json", source=source)


def _signatures(messages: list[Any]) -> Counter[str]:
    return Counter(message.key().decode() for message in messages)


async def _each_risk_record_once(broker: Broker, options: KafkaOptions, records: list[dict[str, Any]]) -> None:
    """Every record's risk metrics on the topic, once (read_committed, then a few quiet seconds for extras)."""
    risk = await read_topic(broker.bootstrap, options.topic_risk, expect=len(records), settle=2.0)
    assert _signatures(risk) == Counter(r["signature"] for r in records)


def _profitable(records: list[dict[str, Any]], profits: dict[str, float]) -> set[str]:
    return {r["signature"] for r in records if profits[r["signature"]] > 0}


async def _positions(settings: Settings, services: Services | None = None, *, posted_only: bool = False) -> list[int]:
    """Stream positions stored (through `services`' warehouse, or a fresh one after they closed); of rows
    that did not come from Kafka with `posted_only`."""
    if services is None:
        services = await start_services(settings, jobs=False)
        try:
            return await _positions(settings, services, posted_only=posted_only)
        finally:
            await services.close()
    where = " WHERE kafka_partition IS NULL" if posted_only else ""
    table = await services.warehouse.query_arrow(
        f"SELECT stream_position FROM {services.warehouse.database}.transactions{where}"
    )
    return [int(p) for p in table.column(0).to_pylist()]


async def _net_profits(services: Services) -> dict[str, float]:
    table = await services.warehouse.query_arrow(
        f"SELECT signature, net_profit_sol FROM {services.warehouse.database}.transactions"
    )
    return {s: p if p is not None else 0.0 for s, p in zip(*table.to_pydict().values(), strict=True)}


async def _published(relay: DerivedRelay) -> None:
    async def drained() -> bool:
        return (await relay.health())["waiting_rows"] == 0 and relay.error is None

    await wait_for(drained, within=60, what="the relay to publish what waits")


async def test_posted_rows_reach_both_derived_topics_once_and_consumed_rows_only_through_the_consumer(
    tansu_broker: Broker, settings: Settings, start_relay: StartRelay
) -> None:
    options = options_for(tansu_broker)
    consumed, posted = Simulator(seed=31).records(400), Simulator(seed=32).records(800)
    everything = [*consumed, *posted]
    services = await start_services(settings, jobs=False)
    kafka = KafkaIngest(services.ingest, options)
    try:
        relay = await start_relay(services, options)
        await kafka.start()
        await produce(tansu_broker.bootstrap, options.topic_transactions, consumed)
        for start in range(0, len(posted), 400):  # interleaved with the consumer's batches
            report = await _store(services, posted[start : start + 400], "http")
            assert report.accepted == 400

        async def stored() -> bool:
            return len(await _positions(settings, services)) == len(everything)

        await wait_for(stored, what="every record stored")
        await _published(relay)
        profits = await _net_profits(services)
    finally:
        await kafka.stop()
        await services.close()
    await _each_risk_record_once(tansu_broker, options, everything)
    profitable = _profitable(everything, profits)
    assert 0 < len(profitable) < len(everything)
    offers = await read_topic(tansu_broker.bootstrap, options.topic_opportunities, expect=len(profitable))
    assert _signatures(offers) == Counter(profitable)
    rendered = msgspec.json.decode(offers[0].value())
    assert rendered["signature"] == offers[0].key().decode() and "features" not in rendered
    progress = read_progress(options, relay.relay_id)
    assert progress is not None and progress.through >= max(await _positions(settings, posted_only=True)) > 0


async def test_rows_the_previous_run_stored_but_did_not_publish_are_published_after_a_restart(
    tansu_broker: Broker, settings: Settings, start_relay: StartRelay
) -> None:
    options = options_for(tansu_broker)
    first, second, third = (Simulator(seed=seed).records(300) for seed in (11, 12, 13))
    services = await start_services(settings, jobs=False)
    try:
        relay = await start_relay(services, options)
        await _store(services, first, "http")
        await _published(relay)
        await relay.stop(5.0)
        # Stored and acknowledged with no relay running: as if the process died before publishing.
        await _store(services, second, "file")
    finally:
        await services.close()
    services = await start_services(settings, jobs=False)
    try:
        # Served on another port this time: the relay is the data dir's, whatever serves it.
        relay = await start_relay(services, dataclasses.replace(options, instance="box-9090"))
        await _store(services, third, "http")
        await _published(relay)
        await relay.stop(5.0)
    finally:
        await services.close()
    services = await start_services(settings, jobs=False)
    try:  # back on the first port: nothing it published is published again
        await _published(await start_relay(services, options))
    finally:
        await services.close()
    await _each_risk_record_once(tansu_broker, options, [*first, *second, *third])


async def test_what_another_process_stored_while_the_server_was_down_is_published_at_its_next_start(
    tansu_broker: Broker, settings: Settings, start_relay: StartRelay
) -> None:
    options = options_for(tansu_broker)
    services = await start_services(settings, jobs=False)
    try:
        relay = await start_relay(services, options)  # publishes nothing: only its first progress

        async def progress_written() -> bool:
            return relay.error is None and await asyncio.to_thread(read_progress, options, relay.relay_id) is not None

        await wait_for(progress_written, what="the relay's first progress record")
        await relay.stop(5.0)
        # It created the topics before producing (a produce would auto-create them with the broker's count).
        topics = AdminClient({"bootstrap.servers": tansu_broker.bootstrap}).list_topics(timeout=10).topics
        assert len(topics[options.topic_opportunities].partitions) == options.partitions["opportunities"]
        assert len(topics[options.topic_relay_progress].partitions) == 1
    finally:
        await services.close()
    records = Simulator(seed=51).records(200)
    services = await start_services(settings, jobs=False)  # `arbitrage ingest`: no Kafka at all
    try:
        await _store(services, records, "file")
    finally:
        await services.close()
    services = await start_services(settings, jobs=False)
    try:
        await _published(await start_relay(services, options))
    finally:
        await services.close()
    await _each_risk_record_once(tansu_broker, options, records)


async def test_batches_beyond_the_memory_bound_are_read_back_from_the_warehouse(
    tansu_broker: Broker, settings: Settings
) -> None:
    options = options_for(tansu_broker)
    records = Simulator(seed=21).records(900)
    services = await start_services(settings, jobs=False)
    try:
        # Listening but not started: batches wait, as while the broker is away.
        relay = DerivedRelay(
            services.ingest,
            options,
            highest_position=lambda: services.feed.highest_position,
            data_dir=Path(settings.storage.data_dir),
            max_buffered_rows=250,
            page_rows=200,
        )
        for start in range(0, len(records), 100):
            await _store(services, records[start : start + 100], "http")
        assert (await relay.health())["waiting_rows"] == len(records)
        # Two batches in memory; the other seven follow each other, and wait as one list of positions.
        assert [w.frame is not None for w in relay._waiting] == [True, True, False]
        await relay.start()
        try:
            await _published(relay)
        finally:
            await relay.stop(5.0)
    finally:
        await services.close()
    await _each_risk_record_once(tansu_broker, options, records)


async def test_an_unreachable_broker_shows_in_health_and_keeps_the_batches(
    settings: Settings, tansu_broker: Broker, start_relay: StartRelay
) -> None:
    options = options_for(tansu_broker, bootstrap_servers="127.0.0.1:1")  # nothing listens there
    services = await start_services(settings, jobs=False)
    try:
        relay = await start_relay(services, options)
        await _store(services, Simulator(seed=41).records(50), "http")

        async def reported() -> bool:
            return "could not" in ((await relay.health()).get("error") or "")

        await wait_for(reported, within=30, what="the relay to report the broker")
        health = await relay.health()
        assert health["status"] == "degraded" and health["waiting_rows"] == 50
    finally:
        await services.close()


async def _every_record_despite_failures(
    mock: MockCluster,
    settings: Settings,
    start_relay: StartRelay,
    *,
    transactional: bool,
    api_key: int,
    errors: list[int],
) -> None:
    """Store three batches, the broker failing `api_key` requests with `errors` before the second: every
    record still reaches the topics (the mock cluster shows aborted records to every reader, so only
    "nothing missing" is asserted)."""
    options = options_for(mock, transactional=transactional, create_topics=False)  # type: ignore[arg-type]
    records = Simulator(seed=61).records(300)
    services = await start_services(settings, jobs=False)
    try:
        relay = await start_relay(services, options)
        await _store(services, records[:100], "http")
        await _published(relay)
        mock.fail_requests(api_key, errors)
        await _store(services, records[100:200], "http")
        await _store(services, records[200:], "http")
        await _published(relay)
        profitable = _profitable(records, await _net_profits(services))
    finally:
        await services.close()
    risk = await read_topic(mock.bootstrap, options.topic_risk, expect=len(records), settle=2.0)
    assert set(_signatures(risk)) == {r["signature"] for r in records}
    offers = await read_topic(mock.bootstrap, options.topic_opportunities, expect=len(profitable), settle=2.0)
    assert set(_signatures(offers)) == profitable


async def test_without_transactions_a_batch_the_broker_refuses_is_produced_again_not_skipped(
    own_mock: MockCluster, settings: Settings, start_relay: StartRelay
) -> None:
    await _every_record_despite_failures(
        own_mock, settings, start_relay, transactional=False, api_key=_PRODUCE, errors=[_MSG_SIZE_TOO_LARGE] * 2
    )


async def test_a_transaction_whose_commit_and_abort_fail_is_published_again(
    own_mock: MockCluster, settings: Settings, start_relay: StartRelay
) -> None:
    await _every_record_despite_failures(
        own_mock, settings, start_relay, transactional=True, api_key=_END_TXN, errors=[_REQUEST_TIMED_OUT] * 4
    )
