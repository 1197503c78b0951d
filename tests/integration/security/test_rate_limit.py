"""Rate limits trip with 429 + Retry-After and recover; with Redis, processes share a budget."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
import redis.asyncio as redis
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app
from arbitrage.security._rate_limit import RedisRateLimiter
from tests.integration.security.conftest import bearer, jwt_for, secure_settings
from tests.services.redis_server import RedisServer

pytestmark = pytest.mark.anyio


async def _until_allowed(client: AsyncTestClient[Any], headers: dict[str, str], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (await client.get("/features", headers=headers)).status_code == 429:
        assert time.monotonic() < deadline, "the limit never recovered"


async def test_a_client_over_its_budget_gets_429_with_retry_after_and_recovers(
    tmp_path: Any, redis_server: RedisServer
) -> None:
    settings = secure_settings(
        tmp_path, **{"auth.rate_limit_per_minute": 120, "auth.rate_limit_burst": 5, "redis.url": redis_server.url}
    )
    alice, bob = bearer(jwt_for("read", subject="alice")), bearer(jwt_for("read", subject="bob"))
    async with AsyncTestClient(create_app(settings)) as client:
        statuses = [(await client.get("/features", headers=alice)).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        limited = await client.get("/features", headers=alice)
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert (await client.get("/features", headers=bob)).status_code == 200
        assert (await client.get("/health")).status_code == 200
        await _until_allowed(client, alice)
    keys = redis.Redis.from_url(redis_server.url)
    try:
        assert await keys.exists("arbitrage:ratelimit:jwt:alice")
    finally:
        await keys.aclose()


async def test_processes_sharing_redis_share_a_clients_budget(redis_server: RedisServer) -> None:
    first = RedisRateLimiter(redis_server.url, per_minute=60, burst=3, prefix="test-shared:")
    second = RedisRateLimiter(redis_server.url, per_minute=60, burst=3, prefix="test-shared:")
    try:
        assert [await first.take("key"), await second.take("key"), await first.take("key")] == [0.0, 0.0, 0.0]
        assert await second.take("key") > 0
        assert await first.take("another") == 0.0
    finally:
        await first.close()
        await second.close()


async def test_the_memory_limiter_is_used_without_redis(tmp_path: Any) -> None:
    settings = secure_settings(tmp_path, **{"auth.rate_limit_per_minute": 60, "auth.rate_limit_burst": 2})
    async with AsyncTestClient(create_app(settings)) as client:
        statuses = [(await client.get("/transactions")).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]


async def test_deployments_sharing_a_redis_with_their_own_key_prefix_keep_their_own_budgets(
    tmp_path: Any, redis_server: RedisServer
) -> None:
    def deployment(name: str) -> AsyncTestClient[Any]:
        settings = secure_settings(
            tmp_path / name,
            **{
                "auth.rate_limit_per_minute": 1,
                "auth.rate_limit_burst": 2,
                "redis.url": redis_server.url,
                "redis.key_prefix": name,
            },
        )
        return AsyncTestClient(create_app(settings))

    carol = bearer(jwt_for("read", subject="carol"))
    async with deployment("staging") as staging:
        assert [(await staging.get("/features", headers=carol)).status_code for _ in range(3)] == [200, 200, 429]
    async with deployment("production") as production:
        assert (await production.get("/features", headers=carol)).status_code == 200
    keys = redis.Redis.from_url(redis_server.url)
    try:
        assert await keys.exists("staging:ratelimit:jwt:carol", "production:ratelimit:jwt:carol") == 2
    finally:
        await keys.aclose()


async def test_a_stalled_redis_costs_one_timeout_then_the_process_limits_on_its_own(redis_server: RedisServer) -> None:
    limiter = RedisRateLimiter(redis_server.url, per_minute=60, burst=2, prefix="test-stall:", retry_s=2.0)
    try:
        assert await limiter.take("key") == 0.0
        redis_server.pause()
        try:
            started = time.monotonic()
            waits = [await limiter.take("key") for _ in range(10)]
            took = time.monotonic() - started
        finally:
            redis_server.resume()
        assert waits[:2] == [0.0, 0.0] and all(wait > 0 for wait in waits[2:]), "its own buckets limit meanwhile"
        assert took < 5, f"{took:.1f} s for 10 requests: each waited on the stalled Redis"
        await anyio.sleep(2.1)  # `retry_s` after the failure
        keys = redis.Redis.from_url(redis_server.url)
        try:
            await keys.delete("test-stall:key")
            assert await limiter.take("key") == 0.0, "Redis asked again once it answers"
            assert await keys.exists("test-stall:key")
        finally:
            await keys.aclose()
    finally:
        await limiter.close()
