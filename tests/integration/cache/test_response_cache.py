"""The Redis response cache against a real redis-server: hits pass the route's guards, entries
belong to one warehouse, and no read after a completed ingest sees older data."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis as sync_redis
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app
from arbitrage.cache import ResponseCache, warehouse_identity
from arbitrage.config import Settings, StorageSettings, load_settings
from tests.conftest import fresh_data_dir
from tests.services.redis_server import RedisServer

ADMIN_TOKEN = "admin-token-for-the-cache-test-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(RedisServer.binary() is None, reason="redis-server not installed")]


def cached_settings(data_dir: Path, redis: RedisServer, **overrides: Any) -> Settings:
    return load_settings(
        env={},
        overrides={
            "storage.data_dir": str(data_dir),
            "redis.url": redis.url,
            "redis.cache_ttl_seconds": 30,
            "auth.admin_token": ADMIN_TOKEN,
            **overrides,
        },
    )


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(create_app(settings)) as client:
        yield client


async def test_cached_answers_are_rate_limited_like_every_other_read(
    tmp_path: Path, migrated_template: Path, redis: RedisServer
) -> None:
    settings = cached_settings(
        fresh_data_dir(migrated_template, tmp_path / "data"),
        redis,
        **{"auth.enabled": True, "auth.rate_limit_per_minute": 1, "auth.rate_limit_burst": 5},
    )
    async with serving(settings) as client:
        answers = [await client.get("/stats", headers=ADMIN) for _ in range(12)]
        assert [a.status_code for a in answers] == [200] * 5 + [429] * 7
        assert [a.headers.get("x-cache") for a in answers[:5]] == ["miss", "hit", "hit", "hit", "hit"]
        miss, hit = answers[:2]
        assert (hit.content, hit.headers["content-type"]) == (miss.content, miss.headers["content-type"])
        refused = answers[5]
        assert refused.headers["retry-after"] and refused.headers.get("x-cache") is None
        assert refused.headers["x-content-type-options"] == "nosniff", "a refused hit gets the usual headers"


async def test_a_revoked_key_gets_no_cached_answer(tmp_path: Path, migrated_template: Path, redis: RedisServer) -> None:
    settings = cached_settings(fresh_data_dir(migrated_template, tmp_path / "data"), redis, **{"auth.enabled": True})
    async with serving(settings) as client:
        created = (await client.post("/admin/keys", json={"roles": ["read"]}, headers=ADMIN)).json()
        key = {"X-API-Key": created["token"]}
        assert [(await client.get("/stats", headers=key)).headers["x-cache"] for _ in range(2)] == ["miss", "hit"]
        assert (await client.get("/stats", headers={"X-API-Key": created["token"] + "x"})).status_code == 401

        assert (await client.delete(f"/admin/keys/{created['key']['id']}", headers=ADMIN)).status_code == 200
        refused = await client.get("/stats", headers=key)
        assert refused.status_code == 401 and refused.headers["www-authenticate"]
        assert (await client.get("/features", headers=key)).status_code == 401
        assert (await client.get("/stats", headers=ADMIN)).status_code == 200


async def test_processes_with_their_own_embedded_warehouse_never_share_answers(
    tmp_path: Path, migrated_template: Path, redis: RedisServer, records: list[dict[str, Any]]
) -> None:
    first = cached_settings(fresh_data_dir(migrated_template, tmp_path / "first"), redis)
    async with serving(first) as client:
        await client.post("/ingest", content=msgspec.json.encode(records[:28]))
        assert (await client.get("/stats")).json()["transactions"] == 28
        assert (await client.get("/stats")).headers["x-cache"] == "hit"
    second = cached_settings(fresh_data_dir(migrated_template, tmp_path / "second"), redis)
    async with serving(second) as client:
        answer = await client.get("/stats")
        assert (answer.headers["x-cache"], answer.json()["transactions"]) == ("miss", 0)


def test_one_clickhouse_is_one_warehouse_whatever_the_credentials() -> None:
    def server(url: str, database: str = "arbitrage") -> str:
        return warehouse_identity(StorageSettings(backend="clickhouse", url=url, database=database))

    shared = server("clickhouse://app:s3cret-one@db.internal:9000/arbitrage")
    assert shared == server("clickhouse://app:other-secret@db.internal:9000/arbitrage")
    assert "s3cret" not in shared and "app:" not in shared
    assert shared != server("clickhouse://app:s3cret-one@db2.internal:9000/arbitrage")
    assert shared != server("clickhouse://app:s3cret-one@db.internal:9000/arbitrage", database="staging")
    embedded = warehouse_identity(StorageSettings(data_dir="./data"))
    assert embedded == warehouse_identity(StorageSettings(data_dir=str(Path("data").resolve())))
    assert embedded != warehouse_identity(StorageSettings(data_dir="./other"))


async def test_reads_after_an_ingest_or_a_flush_see_the_new_data(
    tmp_path: Path, migrated_template: Path, redis: RedisServer, records: list[dict[str, Any]]
) -> None:
    settings = cached_settings(fresh_data_dir(migrated_template, tmp_path / "data"), redis)
    async with serving(settings) as client:
        await client.post("/ingest", content=msgspec.json.encode(records[:100]))
        assert (await client.get("/stats")).json()["transactions"] == 100
        assert (await client.get("/stats/daily")).status_code == 200
        await client.post("/ingest", content=msgspec.json.encode(records[100:]))
        fresh = await client.get("/stats")
        assert (fresh.headers["x-cache"], fresh.json()["transactions"]) == ("miss", 200)
        daily = (await client.get("/stats/daily")).json()["days"]
        assert sum(day["transactions"] for day in daily) == 200

        reader = client.app.state.services.reader
        reader.stats = _answers({"transactions": 1})
        flushed = await client.post("/admin/cache/flush", headers=ADMIN)
        assert "stats_cache" in flushed.json()["flushed"]
        assert (await client.get("/stats")).json() == {"transactions": 1}, "the flush dropped the in-process answers"


async def test_an_entry_this_version_cannot_read_is_a_miss_not_an_error(
    tmp_path: Path, migrated_template: Path, redis: RedisServer
) -> None:
    """Another version on the same Redis (a rolling upgrade) may have written entries of another shape."""
    settings = cached_settings(fresh_data_dir(migrated_template, tmp_path / "data"), redis)
    async with serving(settings) as client:
        assert (await client.get("/stats")).headers["x-cache"] == "miss"
        store = sync_redis.Redis.from_url(redis.url)
        try:
            entries = [k for k in store.keys(f"{settings.redis.key_prefix}:cache:*") if not k.endswith(b"generation")]
            assert entries
            for key in entries:
                store.set(key, b"\x93\x01not an entry of this version")
        finally:
            store.close()
        answer = await client.get("/stats")
        assert (answer.status_code, answer.headers["x-cache"]) == (200, "miss")
        assert (await client.get("/stats")).headers["x-cache"] == "hit"


async def test_an_ingest_elsewhere_is_seen_at_once_through_the_shared_generation(
    tmp_path: Path, migrated_template: Path, redis: RedisServer
) -> None:
    """Another process on the same ClickHouse stores a batch and drops the Redis entries: this
    process's in-process answers computed before must not be served (nor written back)."""
    settings = cached_settings(fresh_data_dir(migrated_template, tmp_path / "data"), redis)
    async with serving(settings) as client:
        services = client.app.state.services
        services.reader.stats = _answers({"transactions": 1})
        assert (await client.get("/stats")).json() == {"transactions": 1}
        services.reader.stats = _answers({"transactions": 2})
        elsewhere = ResponseCache(services.feed.redis, 30, warehouse="another process")
        await asyncio.to_thread(client.blocking_portal.call, elsewhere.invalidate)  # the app runs in its own loop
        fresh = await client.get("/stats")
        assert (fresh.headers["x-cache"], fresh.json()) == ("miss", {"transactions": 2})


async def test_a_read_in_flight_during_an_ingest_leaves_no_stale_entry(
    tmp_path: Path, migrated_template: Path, redis: RedisServer, records: list[dict[str, Any]]
) -> None:
    settings = cached_settings(fresh_data_dir(migrated_template, tmp_path / "data"), redis)
    async with serving(settings) as client:
        await client.post("/ingest", content=msgspec.json.encode(records[:100]))
        reader = client.app.state.services.reader
        stats = reader.stats

        async def race() -> list[int]:
            """In the app's loop (the test client blocks on each request): reads overlap an ingest."""
            read, release = asyncio.Event(), asyncio.Event()

            async def slow_stats() -> dict[str, Any]:
                answer = await stats()
                read.set()
                await release.wait()
                return answer  # type: ignore[no-any-return]

            transport = httpx.ASGITransport(app=client.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                reader.stats = slow_stats
                in_flight = asyncio.create_task(http.get("/stats"))
                await read.wait()
                reader.stats = stats
                await http.post("/ingest", content=msgspec.json.encode(records[100:]))
                after_ingest = asyncio.create_task(http.get("/stats"))
                await asyncio.sleep(0.2)
                release.set()
                answers = [await in_flight, await after_ingest, await http.get("/stats")]
            return [answer.json()["transactions"] for answer in answers]

        in_flight, after_ingest, later = await asyncio.to_thread(client.blocking_portal.call, race)
        assert in_flight == 100
        assert after_ingest == 200, "a read after the ingest shares no read begun before it"
        assert later == 200, "the read begun before the ingest left no entry behind"


def _answers(answer: dict[str, Any]) -> Any:
    async def stats() -> dict[str, Any]:
        return answer

    return stats


async def _stats_cached_after_ingesting(client: AsyncTestClient[Any], records: list[dict[str, Any]]) -> None:
    """Store `records`, then read `/stats` until Redis holds the answer."""
    await client.post("/ingest", content=msgspec.json.encode(records))
    await client.get("/stats")
    assert (await client.get("/stats")).headers["x-cache"] == "hit"


async def test_entries_read_before_an_ingest_during_a_redis_stall_are_not_served_once_it_answers(
    tmp_path: Path, migrated_template: Path, redis: RedisServer, records: list[dict[str, Any]]
) -> None:
    """The stored batch's invalidation timed out against the stalled Redis; the entries stay there."""
    settings = cached_settings(fresh_data_dir(migrated_template, tmp_path / "data"), redis)
    async with serving(settings) as client:
        await _stats_cached_after_ingesting(client, records[:100])
        redis.pause()
        try:
            assert (await client.post("/ingest", content=msgspec.json.encode(records[100:]))).status_code == 200
        finally:
            redis.resume()
        link = client.app.state.services.feed.redis
        for _ in range(200):
            if link.available:
                break
            await asyncio.sleep(0.05)
        assert link.available
        assert (await client.get("/stats")).json()["transactions"] == 200


async def test_a_process_starting_drops_entries_another_may_have_left_stale(
    tmp_path: Path, migrated_template: Path, redis: RedisServer, records: list[dict[str, Any]]
) -> None:
    """Rows stored while Redis was away invalidated nothing there: the next start must not serve those entries."""
    settings = cached_settings(fresh_data_dir(migrated_template, tmp_path / "data"), redis)
    async with serving(settings) as client:
        await _stats_cached_after_ingesting(client, records[:100])
    without_redis = msgspec.structs.replace(settings, redis=msgspec.structs.replace(settings.redis, url=""))
    async with serving(without_redis) as client:
        await client.post("/ingest", content=msgspec.json.encode(records[100:]))
    async with serving(settings) as client:
        assert (await client.get("/stats")).json()["transactions"] == 200
