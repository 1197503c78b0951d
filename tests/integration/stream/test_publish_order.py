"""One process's stored batches reach its live clients whole and in position order, however long each takes to render."""

from __future__ import annotations

import asyncio

import anyio
import msgspec
import polars as pl
import pytest

from arbitrage.errors import WarehouseUnavailable
from arbitrage.ingest import IngestService
from arbitrage.ingest._decode import decode_body
from arbitrage.ingest._derive import derive
from arbitrage.simulator import Simulator
from arbitrage.storage import EmbeddedWarehouse
from arbitrage.stream import (
    POSITION_COLUMN,
    LiveFeed,
    RecentTransactions,
    RedisLink,
    StreamFilter,
    StreamHub,
    Subscription,
)
from tests.conftest import InsertFailsOnce
from tests.integration.stream.test_redis_resume import positions_in
from tests.services.redis_server import RedisServer

pytestmark = pytest.mark.anyio


def _rows(first: int, count: int) -> pl.DataFrame:
    records = Simulator(seed=first).records(count)
    frame = derive(decode_body(msgspec.json.encode(records), "json").frame, source="test")
    return frame.with_columns(pl.Series(POSITION_COLUMN, range(first, first + count), pl.UInt64))


async def _queued(subscription: Subscription) -> list[int]:
    """The positions queued for a subscriber so far (without waiting for more)."""
    positions: list[int] = []
    while subscription.queued_events:
        positions += positions_in(await subscription.next())
    return positions


async def test_a_batch_that_renders_longer_than_the_reorder_timeout_is_not_skipped(
    warehouse: EmbeddedWarehouse,
) -> None:
    """Two stored batches published at once: the large one renders in a worker thread longer than the
    reorder timeout while the small one after it is ready at once. Both are stored (nothing failed),
    so a live client must get both, in order; the hub used to move past the large one and drop it."""
    await _publish_large_then_small(LiveFeed(warehouse, StreamHub(reorder_timeout=0.05)))


@pytest.mark.skipif(RedisServer.binary() is None, reason="redis-server not installed")
async def test_through_redis_a_process_sends_its_batches_in_position_order(
    warehouse: EmbeddedWarehouse, redis: RedisServer
) -> None:
    """Through Redis every process's hub, the publisher's included, got the small batch first and moved past the large one."""
    hub = StreamHub(reorder_timeout=0.05)
    await _publish_large_then_small(LiveFeed(warehouse, hub, RedisLink(redis.url, hub)))


async def test_a_batch_published_after_a_later_one_is_still_handed_on_first(warehouse: EmbeddedWarehouse) -> None:
    """The ingest callers of one insert reach `publish` one after the other, and other listeners before it
    (the Redis response cache) may swap them: the later batch must wait for the earlier one's positions."""
    feed = LiveFeed(warehouse, StreamHub(reorder_timeout=0.1))
    await feed.start()
    resume = await feed.resume(StreamFilter(), 100_000, None)
    large, small = _rows(await feed.reserve(20_000), 20_000), _rows(await feed.reserve(1), 1)

    async def large_a_little_later() -> None:
        await asyncio.sleep(0.01)
        await feed.publish(large)

    with anyio.fail_after(30):
        await asyncio.gather(feed.publish(small), large_a_little_later())
    assert await _queued(resume.subscription) == list(range(1, 20_002))
    await feed.close()


async def test_positions_of_a_failed_insert_hold_the_feed_no_longer_than_the_reorder_timeout(
    warehouse: EmbeddedWarehouse,
) -> None:
    """Positions reserved for an insert that failed are never published: the next batch goes on within the timeout."""
    feed = LiveFeed(warehouse, StreamHub(reorder_timeout=0.5))
    await feed.start()
    resume = await feed.resume(StreamFilter(), 100_000, None)
    await feed.reserve(10)  # its insert failed
    stored = _rows(await feed.reserve(5), 5)
    started = asyncio.get_running_loop().time()
    with anyio.fail_after(30):
        await feed.publish(stored)
        while feed.hub.position < 15:  # noqa: ASYNC110 (the hub offers no event to wait on)
            await asyncio.sleep(0.01)
    assert asyncio.get_running_loop().time() - started < 0.5 + 0.3
    assert await _queued(resume.subscription) == list(range(11, 16))
    await feed.close()


@pytest.mark.skipif(RedisServer.binary() is None, reason="redis-server not installed")
async def test_positions_of_a_failed_insert_hold_no_other_process_longer_than_the_publisher(
    warehouse: EmbeddedWarehouse, redis: RedisServer
) -> None:
    """Through Redis, the other processes' hubs are told the positions given up: they go on when the
    publisher does, not a reorder timeout after it."""
    feeds = []
    for _ in range(2):  # two processes behind one Redis
        hub = StreamHub(reorder_timeout=4.0)
        feeds.append(LiveFeed(warehouse, hub, RedisLink(redis.url, hub)))
        await feeds[-1].start()
    publisher, other = feeds
    try:
        assert publisher.redis is not None and publisher.redis.available
        resume = await other.resume(StreamFilter(), 100_000, None)
        with anyio.fail_after(30):
            await publisher.publish(_rows(await publisher.reserve(3), 3))
            while other.hub.position < 3:  # noqa: ASYNC110 (the hub offers no event to wait on)
                await asyncio.sleep(0.01)
        await publisher.reserve(10)  # its insert failed
        stored = _rows(await publisher.reserve(5), 5)
        started = asyncio.get_running_loop().time()
        with anyio.fail_after(30):
            await publisher.publish(stored)
            while other.hub.position < 18:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert asyncio.get_running_loop().time() - started < 2.0 + 1.0  # the publisher's wait, not 2 + 4 s
        assert await _queued(resume.subscription) == [1, 2, 3, *range(14, 19)]
    finally:
        for feed in feeds:
            await feed.close()


async def _publish_large_then_small(feed: LiveFeed) -> None:
    await feed.start()
    try:
        assert feed.redis is None or feed.redis.available
        resume = await feed.resume(StreamFilter(), 100_000, None)  # reads whole events: each batch is rendered
        large, small = _rows(await feed.reserve(20_000), 20_000), _rows(await feed.reserve(1), 1)
        with anyio.fail_after(30):
            await asyncio.gather(feed.publish(large), feed.publish(small))
            while feed.hub.position < 20_001:  # noqa: ASYNC110 (through Redis they come back a little later)
                await asyncio.sleep(0.01)
        assert await _queued(resume.subscription) == list(range(1, 20_002))
    finally:
        await feed.close()


async def test_ingest_tells_the_feed_at_once_of_positions_whose_insert_failed(warehouse: EmbeddedWarehouse) -> None:
    """The feed would wait half the reorder timeout (here 5 s) for them before publishing the next batch."""
    feed = LiveFeed(warehouse, StreamHub(reorder_timeout=10.0))
    await feed.start()
    service = IngestService(
        InsertFailsOnce(warehouse),  # type: ignore[arg-type]
        RecentTransactions(100),
        position_source=feed.reserve,
        positions_abandoned=feed.abandon,
    )
    service.on_stored(feed.publish)
    resume = await feed.resume(StreamFilter(), 100_000, None)
    records = Simulator(seed=3).records(30)
    try:
        with pytest.raises(WarehouseUnavailable):
            await service.ingest_body(msgspec.json.encode(records[:20]), None, source="test")
        started = asyncio.get_running_loop().time()
        with anyio.fail_after(30):
            await service.ingest_body(msgspec.json.encode(records[20:]), None, source="test")
        assert asyncio.get_running_loop().time() - started < 2.0
        assert await _queued(resume.subscription) == list(range(21, 31))
    finally:
        await feed.close()
