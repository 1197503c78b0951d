"""A Redis that stalls (answers nothing for a while, its connections left open) is used again once it answers."""

from __future__ import annotations

import anyio
import pytest

from arbitrage.storage import EmbeddedWarehouse
from arbitrage.stream import LiveFeed, RedisLink, StreamHub
from tests.services.redis_server import RedisServer

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(RedisServer.binary() is None, reason="redis-server not installed"),
]


async def test_the_feed_subscribes_again_after_a_command_timed_out_on_a_stalled_redis(
    warehouse: EmbeddedWarehouse, redis: RedisServer
) -> None:
    """The timeout marks the link down, but the subscription's own connection never broke:
    before, nothing brought the link back, and this process left the shared feed for good."""
    hub = StreamHub()
    link = RedisLink(redis.url, hub)
    feed = LiveFeed(warehouse, hub, link)
    await feed.start()
    try:
        assert link.available
        redis.pause()
        try:
            assert await link.reserve(10, 0) is None
            assert not link.available
        finally:
            redis.resume()
        with anyio.fail_after(15):
            while not link.available:  # noqa: ASYNC110 (the link offers no event to wait on)
                await anyio.sleep(0.05)
        handed_out = await link.handed_out()
        assert handed_out is not None
        assert await link.reserve(5, 0) == handed_out + 5
    finally:
        await feed.close()
