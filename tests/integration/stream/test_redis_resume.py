"""Two processes' feeds on one real redis-server: a client resuming on the one that lags behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import msgspec
import polars as pl
import pytest

from arbitrage.api.stream import _backlog
from arbitrage.ingest._decode import decode_body
from arbitrage.ingest._derive import derive, ingested_at_column
from arbitrage.simulator import Simulator
from arbitrage.storage import EmbeddedWarehouse
from arbitrage.stream import POSITION_COLUMN, LiveBatch, LiveFeed, RedisLink, StreamFilter, StreamHub, Subscription
from tests.services.redis_server import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(RedisServer.binary() is None, reason="redis-server not installed")]


class _BusyHub(StreamHub):
    """A process whose event loop is busy elsewhere: batches from Redis wait until `free` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.free = asyncio.Event()

    async def accept_rendered(self, batch: LiveBatch) -> None:
        await self.free.wait()
        await super().accept_rendered(batch)


def _rows(first: int, count: int) -> pl.DataFrame:
    records = Simulator(seed=first).records(count)
    frame = derive(decode_body(msgspec.json.encode(records), "json").frame, source="test")
    return frame.with_columns(pl.Series(POSITION_COLUMN, range(first, first + count), pl.UInt64))


async def _until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(20):
        while not condition():  # noqa: ASYNC110 (the hub offers no event to wait on)
            await anyio.sleep(0.01)


def positions_in(items: Any) -> list[int]:
    """The positions of what one `Subscription.next()` returned."""
    assert items is not None
    positions: list[int] = []
    for batch, selected in items:
        events = batch.events if selected is None else [batch.events[i] for i in selected]
        positions += [e.position for e in events]
    return positions


async def _positions(subscription: Subscription, count: int) -> list[int]:
    positions: list[int] = []
    with anyio.fail_after(20):
        while len(positions) < count:
            positions += positions_in(await subscription.next())
    return positions


@pytest.fixture
async def feeds(warehouse: EmbeddedWarehouse, redis: RedisServer) -> AsyncIterator[tuple[LiveFeed, LiveFeed]]:
    """Process A, and process B whose hub lags; one warehouse, as with a shared ClickHouse server."""
    ahead, lagging = StreamHub(), _BusyHub()
    a = LiveFeed(warehouse, ahead, RedisLink(redis.url, ahead))
    b = LiveFeed(warehouse, lagging, RedisLink(redis.url, lagging))
    await a.start()
    await b.start()
    assert a.redis is not None and b.redis is not None and a.redis.available and b.redis.available
    try:
        yield a, b
    finally:
        lagging.free.set()
        await a.close()
        await b.close()


async def test_resuming_on_a_lagging_process_with_an_id_it_has_not_delivered_yet_gets_no_duplicates(
    feeds: tuple[LiveFeed, LiveFeed],
) -> None:
    a, b = feeds
    assert await a.reserve(50) == 1
    await a.publish(_rows(1, 50))
    await _until(lambda: a.hub.position == 50)
    assert b.hub.position == 0  # B has not delivered 1-50 yet
    # The client saw 1-50 on A, and reconnects to B.
    resume = await b.resume(StreamFilter(), 1_000, 50)
    assert resume.backlog == []
    assert await a.reserve(30) == 51
    await a.publish(_rows(51, 30))
    assert isinstance(b.hub, _BusyHub)
    b.hub.free.set()
    assert await _positions(resume.subscription, 30) == list(range(51, 81))


async def test_an_id_beyond_every_position_handed_out_does_not_hide_the_live_feed(
    feeds: tuple[LiveFeed, LiveFeed],
) -> None:
    """An id from before a reset (Redis and warehouse empty again) is not one this feed gave out."""
    a, b = feeds
    assert isinstance(b.hub, _BusyHub)
    b.hub.free.set()
    resume = await b.resume(StreamFilter(), 1_000, 5_000)
    assert await a.reserve(20) == 1
    await a.publish(_rows(1, 20))
    assert await _positions(resume.subscription, 20) == list(range(1, 21))


async def test_a_client_resuming_across_a_gap_the_hubs_moved_past_gets_the_stored_rows_of_the_gap(
    warehouse: EmbeddedWarehouse, redis: RedisServer
) -> None:
    """A's insert of 11-50 outlasted the reorder timeout while B's 51-80 arrived: live clients skip 11-50,
    but they are stored, and a client that resumes from before them must get them, in order."""
    hubs = StreamHub(reorder_timeout=0.2), StreamHub(reorder_timeout=0.2)
    a, b = (LiveFeed(warehouse, hub, RedisLink(redis.url, hub)) for hub in hubs)
    await a.start()
    await b.start()
    try:
        await a.publish(await _stored(warehouse, _rows(await a.reserve(10), 10)))
        await _until(lambda: a.hub.position == b.hub.position == 10)
        slow = _rows(await a.reserve(40), 40)
        await b.publish(await _stored(warehouse, _rows(await b.reserve(30), 30)))
        await _until(lambda: a.hub.position == b.hub.position == 80)  # moved past 11-50
        await a.publish(await _stored(warehouse, slow))

        resume = await b.resume(StreamFilter(), 1_000, 5)
        backlog = [batch async for batch in _backlog(b, StreamFilter(), resume, lambda batch, _: batch)]
        assert [e.position for batch in backlog for e in batch.events] == list(range(6, 81))
    finally:
        await a.close()
        await b.close()


async def _stored(warehouse: EmbeddedWarehouse, rows: pl.DataFrame) -> pl.DataFrame:
    await warehouse.insert_arrow("transactions", rows.with_columns(ingested_at_column(datetime.now(UTC))).to_arrow())
    return rows
