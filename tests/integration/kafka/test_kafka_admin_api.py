"""The Kafka admin endpoints over HTTP, while the consumer cannot reach its broker yet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app
from arbitrage.config import Settings
from tests.services.kafka_broker import free_port

pytestmark = pytest.mark.anyio


async def test_admin_operations_answer_503_naming_why_while_the_consumer_is_not_connected(settings: Settings) -> None:
    """Nothing listens on the port: the consumer keeps connecting, and a pause or replay must say so, not 500."""
    kafka = msgspec.structs.replace(
        settings.kafka, enabled=True, bootstrap_servers=f"127.0.0.1:{free_port()}", create_topics=False
    )
    async with AsyncTestClient(create_app(msgspec.structs.replace(settings, kafka=kafka))) as client:
        admin = {"authorization": f"Bearer {(Path(settings.storage.data_dir) / 'admin_token').read_text().strip()}"}
        answers: list[Any] = [
            await client.post("/admin/kafka/pause", headers=admin),
            await client.post("/admin/kafka/resume", headers=admin),
            await client.post("/admin/kafka/replay", headers=admin, json={"partition": 0, "offset": 0}),
        ]
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert "not connected" in answer.json()["detail"]
