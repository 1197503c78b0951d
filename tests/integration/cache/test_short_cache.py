"""`ShortCache`: answers computed across a drop are neither kept nor shared."""

from __future__ import annotations

import asyncio

import pytest

from arbitrage.cache import ShortCache

pytestmark = pytest.mark.anyio


async def test_a_computation_begun_before_a_drop_is_not_shared_or_kept() -> None:
    cache = ShortCache(60)
    release = asyncio.Event()
    data = ["old"]

    async def slow() -> str:
        seen = data[0]
        await release.wait()
        return seen

    async def quick() -> str:
        return data[0]

    before = asyncio.create_task(cache.get("k", slow))
    await asyncio.sleep(0)
    data[0] = "new"
    await cache.invalidate()
    after = asyncio.create_task(cache.get("k", slow))
    await asyncio.sleep(0)
    release.set()
    assert (await before, await after) == ("old", "new")
    assert await cache.get("k", quick) == "new"

    cache.flush_cache()
    data[0] = "flushed"
    assert await cache.get("k", quick) == "flushed"
