"""`storage.retention_days` on real chdb: the TTL set at start-up, what expires, what the aggregates keep."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from arbitrage.app import start_services
from arbitrage.cli import main
from arbitrage.config import Settings, load_settings
from arbitrage.errors import MigrationError
from arbitrage.storage import EmbeddedWarehouse, apply_retention, rebuild_daily_aggregates, retention_status
from tests.conftest import fresh_data_dir
from tests.integration.export.conftest import transactions

pytestmark = pytest.mark.anyio

DAY = timedelta(days=1)


async def store(warehouse: EmbeddedWarehouse, seed: int, *times: datetime) -> None:
    """One insert (one part) per call: a transaction at each time."""
    rows = transactions(len(times), seed=seed)
    index = rows.schema.get_field_index("block_time")
    block_times = pa.array(times, type=rows.schema.field(index).type)
    await warehouse.insert_arrow("transactions", rows.set_column(index, "block_time", block_times))


async def signatures(warehouse: EmbeddedWarehouse) -> set[str]:
    table = await warehouse.query_arrow("SELECT substring(signature, 1, 4) AS seed FROM arbitrage.transactions")
    return set(table.column("seed").to_pylist())


async def letters(warehouse: EmbeddedWarehouse) -> list[str]:
    table = await warehouse.query_arrow("SELECT raw FROM arbitrage.dead_letters ORDER BY raw")
    return table.column("raw").to_pylist()


async def store_letter(warehouse: EmbeddedWarehouse, raw: str, age: timedelta) -> None:
    await warehouse.execute(
        "INSERT INTO arbitrage.dead_letters (received_at, source, record_index, field, reason, raw) "
        "VALUES (now64(3) - toIntervalSecond({age:UInt32}), 'test', 0, '$', 'bad', {raw:String})",
        {"age": int(age.total_seconds()), "raw": raw},
    )


async def expire(warehouse: EmbeddedWarehouse) -> None:
    """What ClickHouse does in the background, at once: finish the TTL recalculation, then merge."""
    for _ in range(100):
        pending = await warehouse.query_arrow(
            "SELECT count() AS n FROM system.mutations WHERE database = 'arbitrage' AND NOT is_done"
        )
        if pending.column("n")[0].as_py() == 0:
            break
        await asyncio.sleep(0.1)
    for table in ("transactions", "dead_letters"):
        await warehouse.execute(f"OPTIMIZE TABLE arbitrage.{table} FINAL")


async def table_ttl(warehouse: EmbeddedWarehouse, table: str) -> str:
    found = await warehouse.query_arrow(
        "SELECT create_table_query AS q FROM system.tables WHERE database = 'arbitrage' AND name = {t:String}",
        {"t": table},
    )
    query: str = found.column("q")[0].as_py()
    return query.partition(" TTL ")[2].partition(" SETTINGS ")[0]


async def test_rows_older_than_the_retention_are_removed_and_newer_ones_stay(warehouse: EmbeddedWarehouse) -> None:
    now = datetime.now(UTC)
    await store(warehouse, 1, now - 40 * DAY)  # another month partition: a part of its own
    await store(warehouse, 2, now - 10 * DAY, now - timedelta(hours=1))  # one part, partly expired
    await store(warehouse, 3, now - timedelta(minutes=5))
    await store_letter(warehouse, "old letter", 40 * DAY)
    await store_letter(warehouse, "new letter", timedelta(minutes=5))

    assert await apply_retention(warehouse, 3) == ["transactions", "dead_letters"]
    await expire(warehouse)

    kept = await warehouse.query_arrow("SELECT block_time FROM arbitrage.transactions ORDER BY block_time")
    assert [t.as_py() > now - 3 * DAY for t in kept.column("block_time")] == [True, True]
    assert await signatures(warehouse) == {"0002", "0003"}
    assert await letters(warehouse) == ["new letter"]
    status = await retention_status(warehouse, 3)
    assert status["retention_days"] == 3
    assert datetime.fromisoformat(str(status["oldest_block_time"])) > now - 3 * DAY


async def test_the_setting_is_applied_at_each_start_and_0_keeps_everything(settings: Settings) -> None:
    def with_retention(days: int) -> Settings:
        return load_settings(
            env={"ARB_STORAGE__RETENTION_DAYS": str(days)},
            overrides={"storage.data_dir": settings.storage.data_dir, "export.dir": settings.export.dir},
        )

    now = datetime.now(UTC)
    services = await start_services(with_retention(0), jobs=False)
    warehouse = services.warehouse
    assert isinstance(warehouse, EmbeddedWarehouse)
    await store(warehouse, 1, now - 40 * DAY)
    await store(warehouse, 2, now - timedelta(minutes=5))
    await expire(warehouse)
    assert await signatures(warehouse) == {"0001", "0002"}  # no retention: nothing goes
    assert await table_ttl(warehouse, "transactions") == ""
    await services.close()

    services = await start_services(with_retention(7), jobs=False)
    warehouse = services.warehouse
    assert isinstance(warehouse, EmbeddedWarehouse)
    await expire(warehouse)
    assert await signatures(warehouse) == {"0002"}
    assert await table_ttl(warehouse, "transactions") == "toDateTime(block_time) + toIntervalDay(7)"
    assert await table_ttl(warehouse, "dead_letters") == "toDateTime(received_at) + toIntervalDay(7)"
    assert await apply_retention(warehouse, 7) == []  # unchanged: nothing to alter
    await services.close()

    services = await start_services(with_retention(30), jobs=False)
    warehouse = services.warehouse
    assert isinstance(warehouse, EmbeddedWarehouse)
    assert await table_ttl(warehouse, "transactions") == "toDateTime(block_time) + toIntervalDay(30)"
    await services.close()

    services = await start_services(with_retention(0), jobs=False)
    warehouse = services.warehouse
    assert isinstance(warehouse, EmbeddedWarehouse)
    assert await table_ttl(warehouse, "transactions") == ""
    assert await table_ttl(warehouse, "dead_letters") == ""
    await store(warehouse, 4, now - 40 * DAY)
    await expire(warehouse)
    assert await signatures(warehouse) == {"0002", "0004"}
    await services.close()


async def daily_counts(warehouse: EmbeddedWarehouse) -> dict[object, int]:
    table = await warehouse.query_arrow(
        "SELECT date, sum(transactions) AS n FROM arbitrage.daily_aggregates WHERE kind = 'all' GROUP BY date ORDER BY date"
    )
    return dict(zip(table.column("date").to_pylist(), table.column("n").to_pylist(), strict=True))


async def test_a_restart_with_retention_keeps_the_aggregates_of_expired_days_and_repairs_days_inside_it(
    warehouse: EmbeddedWarehouse,
) -> None:
    now = datetime.now(UTC)
    boundary_day = (now - 3 * DAY).date()
    day_start = datetime(boundary_day.year, boundary_day.month, boundary_day.day, tzinfo=UTC)
    await store(warehouse, 1, now - 40 * DAY, now - 40 * DAY + timedelta(minutes=1))
    # The day the retention ends on: its first row expired, its last one not yet.
    await store(warehouse, 2, day_start + timedelta(milliseconds=1), day_start + DAY - timedelta(seconds=1))
    await store(warehouse, 3, now - timedelta(minutes=5))
    before = await daily_counts(warehouse)
    assert before[(now - 40 * DAY).date()] == 2 and before[boundary_day] == 2

    await apply_retention(warehouse, 3)
    await expire(warehouse)
    assert await signatures(warehouse) == {"0002", "0003"}
    # Today's aggregates left short, as an insert killed between the table and its view leaves them:
    await warehouse.execute(
        "ALTER TABLE arbitrage.daily_aggregates DELETE WHERE date = {d:Date} SETTINGS mutations_sync = 2",
        {"d": now.date()},
    )

    assert await rebuild_daily_aggregates(warehouse, 3) == [now.date()]
    assert await daily_counts(warehouse) == before  # expired and partly expired days kept, today repaired
    assert await rebuild_daily_aggregates(warehouse, 3) == []


async def test_a_longer_retention_or_none_after_rows_expired_keeps_their_days_aggregates(
    warehouse: EmbeddedWarehouse,
) -> None:
    """Raising `retention_days` (or setting 0) brings the expired days back inside the comparison."""
    now = datetime.now(UTC)
    await store(warehouse, 1, now - 40 * DAY, now - 40 * DAY + timedelta(minutes=1))
    await store(warehouse, 2, now - timedelta(minutes=5))
    before = await daily_counts(warehouse)
    await apply_retention(warehouse, 3)
    await expire(warehouse)
    assert await signatures(warehouse) == {"0002"}

    for longer in (60, 0):
        await apply_retention(warehouse, longer)
        assert await rebuild_daily_aggregates(warehouse, longer) == []
        assert await daily_counts(warehouse) == before


async def test_a_retention_at_start_up_does_not_rebuild_expired_days_to_nothing(
    tmp_path: Path, migrated_template: Path
) -> None:
    """What `start_services` runs, in its order, with `storage.retention_days = 3`."""
    data = fresh_data_dir(migrated_template, tmp_path / "data")
    warehouse = EmbeddedWarehouse(data)
    await warehouse.start()
    now = datetime.now(UTC)
    await store(warehouse, 1, now - 40 * DAY)
    await apply_retention(warehouse, 3)
    await expire(warehouse)
    await warehouse.close()
    settings = load_settings(
        env={"ARB_STORAGE__RETENTION_DAYS": "3"},
        overrides={"storage.data_dir": str(data), "export.dir": str(tmp_path / "exports")},
    )
    services = await start_services(settings, jobs=False)
    reopened = services.warehouse
    assert isinstance(reopened, EmbeddedWarehouse)
    assert await signatures(reopened) == set()
    assert await daily_counts(reopened) == {(now - 40 * DAY).date(): 1}
    await services.close()


async def test_arbitrage_migrate_sets_the_retention_as_a_start_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A deploy that runs `arbitrage migrate` before serving leaves the tables as serving would."""
    monkeypatch.chdir(tmp_path)  # no config.toml here: the defaults, then the environment
    monkeypatch.setenv("ARB_STORAGE__RETENTION_DAYS", "5")
    data_dir = str(tmp_path / "data")

    assert await asyncio.to_thread(main, ["migrate", "--data-dir", data_dir]) == 0
    assert "retention: rows kept 5 days (set on transactions, dead_letters)" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["migrate", "--data-dir", data_dir]) == 0
    assert "retention: rows kept 5 days (unchanged)" in capsys.readouterr().out

    warehouse = EmbeddedWarehouse(tmp_path / "data")
    await warehouse.start()
    try:
        assert await table_ttl(warehouse, "transactions") == "toDateTime(block_time) + toIntervalDay(5)"
        assert "toIntervalDay(5)" in await table_ttl(warehouse, "dead_letters")
    finally:
        await warehouse.close()


async def test_a_table_whose_metadata_was_lost_stops_start_up_naming_it(warehouse: EmbeddedWarehouse) -> None:
    """It raised an IndexError out of the TTL check, a traceback that named nothing."""
    await warehouse.execute("DETACH TABLE arbitrage.dead_letters")  # as ClickHouse sees a deleted metadata file
    with pytest.raises(MigrationError, match=r"table arbitrage\.dead_letters is missing"):
        await apply_retention(warehouse, 0)
