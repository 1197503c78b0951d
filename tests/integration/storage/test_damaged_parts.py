"""A part damaged on disk (a lost or cut file): ClickHouse sets it aside at start-up, and so do we, loudly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app, start_services
from arbitrage.config import load_settings
from arbitrage.storage import EmbeddedWarehouse, apply_retention
from tests.conftest import fresh_data_dir
from tests.integration.storage.test_retention import daily_counts, expire, signatures, store, store_letter

pytestmark = pytest.mark.anyio


async def test_a_part_damaged_on_disk_is_reported_and_the_aggregates_count_what_is_served(
    tmp_path: Path, migrated_template: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = fresh_data_dir(migrated_template, tmp_path / "data")
    warehouse = EmbeddedWarehouse(data)
    await warehouse.start()
    now = datetime.now(UTC).replace(hour=12)
    await store(warehouse, 1, *(now - timedelta(minutes=m) for m in range(30)))
    await store(warehouse, 2, *(now - timedelta(minutes=m, seconds=30) for m in range(20)))
    parts = await warehouse.query_arrow(
        "SELECT name, path, rows FROM system.parts WHERE database = 'arbitrage' AND table = 'transactions' AND active"
    )
    await warehouse.close()
    damaged = next(row for row in parts.to_pylist() if row["rows"] == 20)
    (Path(damaged["path"]) / "data.bin").unlink()

    settings = load_settings(env={}, overrides={"storage.data_dir": str(data), "export.dir": str(tmp_path / "x")})
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
    data = fresh_data_dir(migrated_template, tmp_path / "data")
    warehouse = EmbeddedWarehouse(data)
    await warehouse.start()
    now = datetime.now(UTC)
    await store(warehouse, 1, now - 5 * timedelta(days=1), now - timedelta(minutes=5))
    await apply_retention(warehouse, 3)
    await expire(warehouse)
    await apply_retention(warehouse, 0)
    before = await daily_counts(warehouse)
    assert len(before) == 2 and await signatures(warehouse) == {"0001"}
    await store_letter(warehouse, "bad", timedelta(0))
    letters = await warehouse.query_arrow(
        "SELECT path FROM system.parts WHERE database = 'arbitrage' AND table = 'dead_letters' AND active"
    )
    await warehouse.close()
    for path in letters.column("path").to_pylist():
        (Path(path) / "data.bin").unlink()

    settings = load_settings(env={}, overrides={"storage.data_dir": str(data), "export.dir": str(tmp_path / "x")})
    services = await start_services(settings, jobs=False)
    try:
        assert [part.table for part in services.damaged_parts] == ["dead_letters"]
        assert await daily_counts(services.warehouse) == before
    finally:
        await services.close()
