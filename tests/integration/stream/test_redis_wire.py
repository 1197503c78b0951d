"""Batches cross a real redis-server's pub/sub whole, however large, within its output buffer limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import polars as pl
import pytest
import redis.asyncio as aioredis

from arbitrage.stream import POSITION_COLUMN, LiveBatch, StreamHub
from arbitrage.stream._redis import RedisLink
from arbitrage.stream._wire import decode_wire, encode_wire
from tests.services.redis_server import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(RedisServer.binary() is None, reason="redis-server not installed")]

HARD_LIMIT = 8 << 20


class SlowHub(StreamHub):
    """A subscriber that takes its time over each message, as one on a loaded box does."""

    async def accept_rendered(self, batch: LiveBatch) -> None:
        await asyncio.sleep(0.2)
        await super().accept_rendered(batch)


@pytest.fixture
async def link(tmp_path: Path) -> AsyncIterator[RedisLink]:
    server = RedisServer(tmp_path / "redis").start()
    try:
        admin = aioredis.Redis.from_url(server.url)
        # Redis's default is 32 MiB; a smaller one keeps the test's batch small.
        await admin.config_set("client-output-buffer-limit", f"pubsub {HARD_LIMIT} {HARD_LIMIT // 2} 60")
        await admin.aclose()
        link = RedisLink(server.url, SlowHub())
        await link.start(wait=10)
        assert link.available
        try:
            yield link
        finally:
            await link.close()
    finally:
        server.stop()


def _batch(count: int, payload_bytes: int, first: int = 1) -> LiveBatch:
    """Stored rows of about `payload_bytes` each (the wire carries rows, whatever their columns)."""
    positions = range(first, first + count)
    return LiveBatch.of_rows(
        pl.DataFrame(
            {
                POSITION_COLUMN: pl.Series(positions, dtype=pl.UInt64),
                "signature": [f"sig{p}" for p in positions],
                "blob": [f"{p:0{payload_bytes}d}" for p in positions],
            }
        )
    )


async def _until_position(link: RedisLink, position: int, within: float) -> None:
    async with asyncio.timeout(within):
        while link.hub.position < position:  # noqa: ASYNC110 (the hub offers no event to wait on)
            await asyncio.sleep(0.05)


async def test_a_batch_larger_than_the_subscribers_buffer_limit_reaches_the_hub_whole(link: RedisLink) -> None:
    batch = _batch(5_000, 4_096)  # 20 MiB rendered, 2.5 times the limit, read at 5 MiB/s
    assert await link.publish(batch)
    await _until_position(link, 5_000, 30)
    assert link.available  # the subscription was never cut
    follow = _batch(10, 100, first=5_001)
    assert await link.publish(follow)
    await _until_position(link, 5_010, 10)


def test_wire_messages_hold_consecutive_rows_within_the_size() -> None:
    batch = _batch(1_000, 3_000)
    messages = encode_wire(batch, max_bytes=100_000)
    assert len(messages) > 1 and all(len(m.data) < 100_000 + 4_000 for m in messages)
    decoded = [decode_wire(m.data) for m in messages]
    assert [m.piece.first for m in messages] == [w.first for w in decoded]
    assert all(w.published_at == batch.published_at for w in decoded)
    rows = pl.concat([w.batch().rows for w in decoded])  # type: ignore[misc]
    assert rows.equals(batch.rows)
    assert len(encode_wire(_batch(1, 500_000), max_bytes=1_000)) == 1  # one row bigger than the size still goes


async def test_a_publish_no_subscriber_received_is_reported_untaken(link: RedisLink) -> None:
    """With this process's subscription gone unnoticed (here: listening on another channel), the
    caller must deliver in-process; counted as sent, the batch reached no client at all."""
    link.channel = f"{link.channel}:elsewhere"
    assert not await link.publish(_batch(3, 10))
