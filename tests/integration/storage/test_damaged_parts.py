"""A part damaged on disk (a lost or cut file): ClickHouse sets it aside at start-up, and so do we, loudly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app, start_services
from arbitrage.config import Settings, load_settings
from arbitrage.storage import EmbeddedWarehouse, apply_retention
from tests.conftest import fresh_data_dir
from tests.integration.storage.test_retention import daily_counts, expire, signatures, store, store_letter

pytestmark = pytest.mark.anyio


async def _opened_copy(template: Path, tmp_path: Path) -> tuple[Path, EmbeddedWarehouse]:
    data = fresh_data_dir(template, tmp_path / "data")
    warehouse = EmbeddedWarehouse(data)
    await warehouse.start()
    return data, warehouse


async def _active_parts(warehouse: EmbeddedWarehouse, table: str) -> list[dict[str, Any]]:
    parts = await warehouse.query_arrow(
        "SELECT name, path, rows FROM system.parts WHERE database = 'arbitrage' AND table = {t:String} AND active",
        {"t": table},
    )
    return parts.to_pylist()


def _settings(data: Path, tmp_path: Path) -> Settings:
    return load_settings(env={}, overrides={"storage.data_dir": str(data), "export.dir": str(tmp_path / "x")})


async def test_a_part_damaged_on_disk_is_reported_and_the_aggregates_count_what_is_served(
    tmp_path: Path, migrated_template: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, warehouse = await _opened_copy(migrated_template, tmp_path)
    now = datetime.now(UTC).replace(hour=12)
    await store(warehouse, 1, *(now - timedelta(minutes=m) for m in range(30)))
    await store(warehouse, 2, *(now - timedelta(minutes=m, seconds=30) for m in range(20)))
    parts = await _active_parts(warehouse, "transactions")
    await warehouse.close()
    damaged = next(row for row in parts if row["rows"] == 20)
    (Path(damaged["path"]) / "data.bin").unlink()

    settings = _settings(data, tmp_path)
    services = await start_services(settings, jobs=False)
    try:
        reopened = services.warehouse
        served = await reopened.query_arrow("SELECT count() AS n FROM arbitrage.transactions")
        assert served.column("n")[0].as_py() == 30
        assert await daily_counts(reopened) == {now.date(): 30}  # as every other read counts them
        assert [(part.table, part.name) for part in services.damaged_parts] == [
            ("transactions", f"broken-on-start_{damaged['name']}")
        ]
        assert any(damaged["name"] in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    finally:
        await services.close()

    app = create_app(settings)
    async with AsyncTestClient(app) as client:
        health = (await client.get("/health")).json()
        assert health["status"] == "degraded"
        assert health["components"]["warehouse"]["status"] == "degraded"
        assert damaged["name"] in health["components"]["warehouse"]["error"]


async def test_a_damaged_part_of_another_table_rebuilds_no_days_aggregates(
    tmp_path: Path, migrated_template: Path
) -> None:
    """A dead letters' part names a month too; the days of that month whose rows expired keep their counts."""
    data, warehouse = await _opened_copy(migrated_template, tmp_path)
    now = datetime.now(UTC)
    await store(warehouse, 1, now - 5 * timedelta(days=1), now - timedelta(minutes=5))
    await apply_retention(warehouse, 3)
    await expire(warehouse)
    await apply_retention(warehouse, 0)
    before = await daily_counts(warehouse)
    assert len(before) == 2 and await signatures(warehouse) == {"0001"}
    await store_letter(warehouse, "bad", timedelta(0))
    letters = await _active_parts(warehouse, "dead_letters")
    await warehouse.close()
    for part in letters:
        (Path(part["path"]) / "data.bin").unlink()

    settings = _settings(data, tmp_path)
    services = await start_services(settings, jobs=False)
    try:
        assert [part.table for part in services.damaged_parts] == ["dead_letters"]
        assert await daily_counts(services.warehouse) == before
    finally:
        await services.close()
