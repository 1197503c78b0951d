"""A cron that never fires (31 February) is refused, and one stored by older data breaks nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app
from arbitrage.config import Settings
from arbitrage.storage import open_warehouse

pytestmark = pytest.mark.anyio
Client = AsyncTestClient[Any]
NEVER = "0 0 31 2 *"


async def stored_schedules(client: Client) -> list[dict[str, Any]]:
    warehouse = client.app.state.services.warehouse
    table = await warehouse.query_arrow(
        f"SELECT id, frequency, cron FROM {warehouse.database}.schedules FINAL WHERE NOT deleted ORDER BY id"
    )
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


async def test_a_cron_that_never_fires_is_refused_on_create_and_patch_and_nothing_is_stored(client: Client) -> None:
    refused = await client.post("/schedule/export", json={"format": "csv", "frequency": NEVER})
    assert refused.status_code == 400, refused.text
    assert refused.json()["extra"]["field"] == "frequency" and "never" in refused.json()["extra"]["reason"]
    assert await stored_schedules(client) == []
    created = (await client.post("/schedule/export", json={"format": "csv", "frequency": "daily"})).json()
    patched = await client.patch(f"/schedules/{created['id']}", json={"frequency": NEVER})
    assert patched.status_code == 400, patched.text
    assert patched.json()["extra"]["field"] == "frequency"
    assert await stored_schedules(client) == [{"id": created["id"], "frequency": "daily", "cron": "0 0 * * *"}]
    shown = await client.get(f"/schedules/{created['id']}")
    assert shown.status_code == 200 and shown.json()["schedule"]["cron"] == "0 0 * * *"


async def store_schedule(
    settings: Settings, schedule_id: str, cron: str, created_at: datetime, *, last_error: str = "", failures: int = 0
) -> None:
    """Write a schedule row the way an older version did, past today's validation (or a failing one, as a restart finds it)."""
    warehouse = open_warehouse(settings.storage)
    await warehouse.start()
    try:
        await warehouse.execute(
            f"INSERT INTO {warehouse.database}.schedules (id, version, deleted, name, format, frequency, cron, "
            "request, upload_to, incremental, enabled, created_at, updated_at, last_job_id, last_error, "
            "consecutive_failures) SELECT {id:String}, 1, false, {id:String}, 'csv', {cron:String}, {cron:String}, "
            "'{}', '', true, true, {at:DateTime64(3, 'UTC')}, {at:DateTime64(3, 'UTC')}, '', {error:String}, "
            "{failures:UInt32}",
            {
                "id": schedule_id,
                "cron": cron,
                "at": created_at.strftime("%Y-%m-%d %H:%M:%S.000"),
                "error": last_error,
                "failures": failures,
            },
        )
    finally:
        await warehouse.close()


def fast_loop(settings: Settings, *, run_missed_on_startup: bool) -> Settings:
    schedule = msgspec.structs.replace(
        settings.schedule,
        poll_seconds=0.05,
        watermark_lag_seconds=0.0,
        run_missed_on_startup=run_missed_on_startup,
    )
    return msgspec.structs.replace(settings, schedule=schedule)


class Warnings(logging.Handler):
    """Warnings of the schedule service (the app's logging set-up hides them from caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def schedule_warnings() -> Iterator[Warnings]:
    handler = Warnings()
    logger = logging.getLogger("arbitrage.schedule")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


async def test_a_stored_cron_that_never_fires_is_shown_skipped_and_other_schedules_keep_running(
    settings: Settings, schedule_warnings: Warnings
) -> None:
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    await store_schedule(settings, "sch-never", NEVER, an_hour_ago)  # first, so the loop meets it first
    await store_schedule(settings, "sch-minutely", "* * * * *", an_hour_ago + timedelta(seconds=1))
    async with AsyncTestClient(create_app(fast_loop(settings, run_missed_on_startup=True))) as client:
        for _ in range(200):
            healthy = await client.get("/schedules/sch-minutely")
            assert healthy.status_code == 200, healthy.text
            runs = healthy.json()["last_runs"]
            if runs and runs[0]["state"] == "done" and not healthy.json()["schedule"]["running"]:
                break
            await asyncio.sleep(0.05)
        assert runs and {run["state"] for run in runs} == {"done"}
        listed = await client.get("/schedules")
        assert listed.status_code == 200, listed.text
        never, minutely = listed.json()["items"]
        assert never["id"] == "sch-never" and never["next_run_at"] is None and "never" in never["frequency_error"]
        assert minutely["next_run_at"] is not None and minutely["frequency_error"] is None
        shown = await client.get("/schedules/sch-never")
        assert shown.status_code == 200 and shown.json()["schedule"]["frequency_error"] == never["frequency_error"]
        health = (await client.get("/health")).json()["components"]["schedules"]
        assert health["status"] == "degraded" and [s["id"] for s in health["unrunnable"]] == ["sch-never"]
        await asyncio.sleep(0.3)  # a few more polls
    assert len([m for m in schedule_warnings.messages if "sch-never" in m]) == 1, schedule_warnings.messages


async def test_start_up_skipping_missed_runs_survives_a_stored_cron_that_never_fires(settings: Settings) -> None:
    await store_schedule(settings, "sch-never", NEVER, datetime.now(UTC) - timedelta(hours=1))
    async with AsyncTestClient(create_app(fast_loop(settings, run_missed_on_startup=False))) as client:
        listed = await client.get("/schedules")
        assert listed.status_code == 200, listed.text
        assert [s["id"] for s in listed.json()["items"]] == ["sch-never"]
        fixed = await client.patch("/schedules/sch-never", json={"frequency": "hourly"})
        assert fixed.status_code == 200 and fixed.json()["next_run_at"] is not None
