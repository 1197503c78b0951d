"""Through Redis the live feed carries stored rows; each process renders only what its own clients read."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import msgspec
import polars as pl
import pytest
import redis.asyncio as aioredis

from arbitrage.features import FeatureEngine
from arbitrage.ingest._decode import decode_body
from arbitrage.ingest._derive import derive
from arbitrage.risk import score_risk
from arbitrage.simulator import Simulator
from arbitrage.storage import EmbeddedWarehouse
from arbitrage.stream import POSITION_COLUMN, LiveBatch, LiveFeed, RedisLink, StreamFilter, StreamHub, _events
from arbitrage.stream._wire import decode_wire, encode_wire
from tests.services.redis_server import RedisServer

pytestmark = [pytest.mark.anyio]

needs_redis = pytest.mark.skipif(RedisServer.binary() is None, reason="redis-server not installed")

FIELDS = ("signature", "net_profit_sol")


def _stored(first: int, count: int) -> pl.DataFrame:
    """Rows as ingest stores them: derived, with features, risk and positions."""
    records = Simulator(seed=first, start=Simulator.start_for(count)).records(count)
    frame = derive(decode_body(msgspec.json.encode(records), "json").frame, source="test")
    enriched = score_risk(FeatureEngine().process(frame))
    return enriched.with_columns(pl.Series(POSITION_COLUMN, range(first, first + count), pl.UInt64))


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The columns of every frame the live feed renders to JSON, in order."""
    seen: list[list[str]] = []
    render = _events.render_transactions

    def counting(frame: pl.DataFrame) -> list[bytes]:
        seen.append(frame.columns)
        return render(frame)

    monkeypatch.setattr(_events, "render_transactions", counting)
    return seen


async def _until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(20):
        while not condition():  # noqa: ASYNC110 (the hub offers no event to wait on)
            await anyio.sleep(0.01)


@pytest.mark.parametrize("fields", [None, FIELDS, ("features", "legs", "block_time")])
def test_rows_read_back_from_the_wire_render_the_same_bytes(fields: tuple[str, ...] | None) -> None:
    stored = _stored(1, 300)
    batch = LiveBatch.of_rows(stored)
    messages = encode_wire(batch, max_bytes=64 << 10)
    assert len(messages) > 1  # several pieces, so slicing is exercised
    received = [decode_wire(message.data).batch() for message in messages]
    assert [b.first for b in received] == [m.piece.first for m in messages]
    assert sum(len(b) for b in received) == 300
    frames = [frame for piece in received for frame in piece.sse_frames(fields)]
    assert frames == batch.sse_frames(fields)


@pytest.fixture
async def two_processes(warehouse: EmbeddedWarehouse, redis: RedisServer) -> AsyncIterator[tuple[LiveFeed, LiveFeed]]:
    feeds = [LiveFeed(warehouse, hub, RedisLink(redis.url, hub)) for hub in (StreamHub(), StreamHub())]
    for feed in feeds:
        await feed.start()
    try:
        yield feeds[0], feeds[1]
    finally:
        for feed in feeds:
            await feed.close()


@needs_redis
async def test_a_process_without_subscribers_renders_nothing_and_one_with_them_renders_their_fields(
    two_processes: tuple[LiveFeed, LiveFeed], renders: list[list[str]]
) -> None:
    ingesting, serving = two_processes
    subscription = serving.hub.subscribe(StreamFilter(), 10_000, sse_fields=FIELDS)
    await ingesting.publish(_stored(await ingesting.reserve(2_000), 2_000))
    await _until(lambda: ingesting.hub.position == serving.hub.position == 2_000)

    assert renders  # the serving process rendered its client's fields, from the rows alone
    assert all(columns == list(FIELDS) for columns in renders)
    items: list[tuple[LiveBatch, list[int] | None]] = []
    while sum(len(batch) for batch, _ in items) < 2_000:
        got = await subscription.next()
        assert got is not None
        items += got
    positions = [p for b, _ in items for p in range(b.first, b.last + 1)]
    assert positions == list(range(1, 2_001))


@needs_redis
async def test_the_ingesting_process_delivers_its_own_rows_as_it_holds_them(
    two_processes: tuple[LiveFeed, LiveFeed], renders: list[list[str]]
) -> None:
    ingesting, _ = two_processes
    stored = _stored(await ingesting.reserve(500), 500)
    await ingesting.publish(stored)
    await _until(lambda: ingesting.hub.position == 500)
    replayed = next(b for b in ingesting.hub.replay(0) if isinstance(b, LiveBatch))
    assert replayed.rows is not None and replayed.rows.equals(stored.slice(0, len(replayed)))
    assert renders == []  # no subscriber anywhere: no JSON made for the wire or the hubs


@needs_redis
async def test_a_message_the_feed_cannot_read_is_skipped_and_the_feed_goes_on(
    two_processes: tuple[LiveFeed, LiveFeed], redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    ingesting, serving = two_processes
    assert serving.redis is not None
    client: Any = aioredis.Redis.from_url(redis.url)
    try:
        with caplog.at_level(logging.WARNING, logger="arbitrage.stream._redis"):
            await client.publish(serving.redis.channel, b"\x93not a live batch")
            await ingesting.publish(_stored(await ingesting.reserve(20), 20))
            await _until(lambda: serving.hub.position == 20)
    finally:
        await client.aclose()
    assert any("skipped a message" in r.getMessage() for r in caplog.records)
    assert serving.redis.available
