"""The Redis response cache against a real redis-server: hits, invalidation on ingest, Redis down."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app
from arbitrage.config import Settings, load_settings
from tests.services.redis_server import RedisServer

ADMIN_TOKEN = "admin-token-for-the-cache-test-0123456789"

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(RedisServer.binary() is None, reason="redis-server not installed")]


@pytest.fixture
async def cached_client(tmp_path: Path, redis: RedisServer) -> AsyncIterator[AsyncTestClient[Any]]:
    settings: Settings = load_settings(
        env={},
        overrides={
            "storage.data_dir": str(tmp_path / "data"),
            "redis.url": redis.url,
            "redis.cache_ttl_seconds": 30,
            "auth.admin_token": ADMIN_TOKEN,
        },
    )
    async with AsyncTestClient(create_app(settings)) as client:
        yield client


async def test_hot_reads_are_cached_until_the_next_ingest_and_served_without_redis(
    cached_client: AsyncTestClient[Any], redis: RedisServer, records: list[dict[str, Any]]
) -> None:
    client = cached_client
    await client.post("/ingest", content=msgspec.json.encode(records[:100]))
    first = await client.get("/stats")
    again = await client.get("/stats")
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("miss", "hit")
    assert again.json() == first.json()
    page = await client.get("/transactions", params={"limit": 5})
    assert (await client.get("/transactions", params={"limit": 5})).headers["x-cache"] == "hit"
    assert (await client.get("/transactions", params={"limit": 5, "cursor": page.json()["next_cursor"]})).headers.get(
        "x-cache"
    ) is None, "later pages are not cached"

    await client.post("/ingest", content=msgspec.json.encode(records[100:]))
    fresh = await client.get("/transactions", params={"limit": 5})
    assert fresh.headers["x-cache"] == "miss", "ingest dropped the cached entries"
    assert fresh.json()["items"][0]["signature"] in {r["signature"] for r in records}
    assert (await client.get("/stats")).headers["x-cache"] == "miss"

    assert (await client.get("/stats")).headers["x-cache"] == "hit"
    flushed = await client.post("/admin/cache/flush", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert flushed.status_code == 200 and "redis_response_cache" in flushed.json()["flushed"]
    assert (await client.get("/stats")).headers["x-cache"] == "miss", "the admin flush dropped the Redis entries"

    redis.stop(signal.SIGKILL)
    for _ in range(3):
        response = await client.get("/stats")
        assert response.status_code == 200 and response.json()["transactions"] in (100, 200)
    health = (await client.get("/health")).json()
    assert health["status"] == "degraded" and health["components"]["redis"]["status"] == "degraded"
