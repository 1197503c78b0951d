"""Shared fixtures: a real embedded warehouse in a temp dir, the app, simulated records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app
from arbitrage.config import Settings, load_settings
from arbitrage.simulator import Simulator
from arbitrage.storage import EmbeddedWarehouse


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        env={},
        overrides={"storage.data_dir": str(tmp_path / "data"), "export.dir": str(tmp_path / "exports")},
    )


@pytest.fixture
async def warehouse(tmp_path: Path) -> AsyncIterator[EmbeddedWarehouse]:
    store = EmbeddedWarehouse(tmp_path / "warehouse")
    await store.start()
    yield store
    await store.close()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def records() -> list[dict[str, Any]]:
    """200 realistic simulated transactions (seeded, so failures reproduce)."""
    return Simulator(seed=7).records(200)
