"""A start-up that fails half-way closes what it had opened, so the data dir can be opened again."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app, start_services
from arbitrage.config import Settings
from arbitrage.schedule import ScheduleService

pytestmark = pytest.mark.anyio


async def _refuse(*_: Any, **__: Any) -> None:
    raise RuntimeError("refused to start")


async def test_a_failure_after_the_warehouse_opened_closes_it(settings: Settings, monkeypatch: Any) -> None:
    monkeypatch.setattr(ScheduleService, "start", _refuse)
    with pytest.raises(RuntimeError, match="refused to start"):
        await start_services(settings)
    monkeypatch.undo()
    services = await start_services(settings)
    await services.close()


async def test_a_failure_late_in_the_lifespan_closes_the_services(settings: Settings, monkeypatch: Any) -> None:
    import arbitrage.ingest.kafka

    monkeypatch.setattr(arbitrage.ingest.kafka, "start_kafka", _refuse)
    with_kafka = msgspec.structs.replace(settings, kafka=msgspec.structs.replace(settings.kafka, enabled=True))
    with pytest.raises(ExceptionGroup) as raised:  # the test client's task group wraps it
        async with AsyncTestClient(create_app(with_kafka)):
            pass
    assert raised.group_contains(RuntimeError, match="refused to start")
    monkeypatch.undo()
    async with AsyncTestClient(create_app(settings)) as client:
        assert (await client.get("/health")).status_code == 200
