"""What /health and /metrics say about components that are away or failing, checked against reality."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app
from arbitrage.config import Settings
from tests.integration.export.test_schedule_bad_cron import store_schedule
from tests.services.redis_server import RedisServer

pytestmark = pytest.mark.anyio
Client = AsyncTestClient[Any]


def _gauge(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in the scrape"
    return float(match.group(1))


async def test_the_failing_schedules_gauge_is_current_in_a_scrape_without_health_checks(settings: Settings) -> None:
    """Prometheus scrapes /metrics alone: the gauge must not wait for someone to ask /health."""
    await store_schedule(settings, "sch-failing", "0 0 * * *", datetime.now(UTC), last_error="disk full", failures=2)
    quiet = msgspec.structs.replace(settings, schedule=msgspec.structs.replace(settings.schedule, enabled=False))
    async with AsyncTestClient(create_app(quiet)) as client:
        assert _gauge((await client.get("/metrics")).text, "arbitrage_schedules_failing") == 1
        assert (await client.delete("/schedules/sch-failing")).status_code == 204
        assert _gauge((await client.get("/metrics")).text, "arbitrage_schedules_failing") == 0


async def test_redis_away_is_degraded_not_unhealthy_and_healthy_again_once_back(
    settings: Settings, redis: RedisServer
) -> None:
    """The app keeps serving from memory without Redis: the documented `degraded`, with why."""
    with_redis = msgspec.structs.replace(settings, redis=msgspec.structs.replace(settings.redis, url=redis.url))
    async with AsyncTestClient(create_app(with_redis)) as client:
        body = (await client.get("/health")).json()
        assert body["status"] == "healthy" and body["components"]["redis"]["status"] == "healthy"
        redis.stop()
        away = await client.get("/health")
        assert away.status_code == 200
        component = away.json()["components"]["redis"]
        assert away.json()["status"] == "degraded"
        assert component["status"] == "degraded", component
        assert component["error"]
        redis.start()
        for _ in range(100):
            back = (await client.get("/health")).json()
            if back["components"]["redis"]["status"] == "healthy":
                break
            await asyncio.sleep(0.05)
        assert back["status"] == "healthy", back


async def test_redis_refusing_the_credentials_is_reported_as_such_and_logged(
    settings: Settings, redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong password is no outage: /health and the log say what Redis answered, never the password."""
    url = redis.url.replace("redis://", "redis://:wrong-password-0123@")
    refused = msgspec.structs.replace(settings, redis=msgspec.structs.replace(settings.redis, url=url))
    async with AsyncTestClient(create_app(refused)) as client:
        component = (await client.get("/health")).json()["components"]["redis"]
    assert component["status"] == "degraded"
    assert "AUTH" in component["error"] and "wrong-password" not in component["error"], component
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "arbitrage.stream._redis" and "AUTH" in r.getMessage()
    ]
    assert len(warnings) == 1, warnings  # once, not on every retry
    assert "wrong-password" not in warnings[0]


async def test_admin_config_shows_the_admin_token_file_in_effect(client: Client, settings: Settings) -> None:
    """Left empty, the credential lives in `<data_dir>/admin_token`: an operator must see where."""
    token_file = Path(settings.storage.data_dir) / "admin_token"
    token = token_file.read_text().strip()
    shown = await client.get("/admin/config", headers={"Authorization": f"Bearer {token}"})
    assert shown.status_code == 200, shown.text
    auth = shown.json()["auth"]
    assert auth["admin_token_file"] == str(token_file)
    assert token not in shown.text and auth["admin_token"] == ""


async def test_admin_status_and_config_show_the_retention_and_the_oldest_stored_block_time(
    settings: Settings, records: list[dict[str, Any]]
) -> None:
    kept = msgspec.structs.replace(settings, storage=msgspec.structs.replace(settings.storage, retention_days=30))
    async with AsyncTestClient(create_app(kept)) as client:
        token = (Path(settings.storage.data_dir) / "admin_token").read_text().strip()
        admin = {"Authorization": f"Bearer {token}"}
        assert (await client.get("/admin/status", headers=admin)).json()["retention"] == {
            "retention_days": 30,
            "oldest_block_time": None,
        }
        assert (await client.post("/ingest", content=msgspec.json.encode(records[:20]))).status_code == 200
        oldest = datetime.fromtimestamp(min(r["block_time"] for r in records[:20]) / 1000, UTC)
        status = (await client.get("/admin/status", headers=admin)).json()["retention"]
        assert datetime.fromisoformat(status["oldest_block_time"]) == oldest
        assert (await client.get("/admin/config", headers=admin)).json()["storage"]["retention_days"] == 30
