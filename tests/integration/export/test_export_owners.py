"""Migration 014 on a warehouse holding jobs and schedules from before owners were recorded:
they get no owner, which leaves them to admins; owners stored from now on read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from arbitrage.export import ExportRequest, ExportService, JobNotFound
from arbitrage.schedule import ScheduleCreate, ScheduleNotFound, ScheduleService
from arbitrage.storage import EmbeddedWarehouse
from tests.conftest import migrations_before

pytestmark = pytest.mark.anyio

LEGACY_JOB = (
    "INSERT INTO arbitrage.export_jobs (id, version, state, format, request, destination, schedule_id, created_at, "
    "files, error, owner) VALUES ('20240101T000000Z-legacy00', 1, 'done', 'csv', '{}', '/tmp/old', '', now64(3), "
    "'[]', '', 'old-host:1:abc')"
)
LEGACY_SCHEDULE = (
    "INSERT INTO arbitrage.schedules (id, version, deleted, name, format, frequency, cron, request, upload_to, "
    "incremental, enabled, created_at, updated_at, last_job_id, last_error, consecutive_failures) VALUES "
    "('sch-legacy', 1, false, 'old', 'csv', 'daily', '0 0 * * *', '{}', '', true, true, now64(3), now64(3), '', '', 0)"
)


async def test_rows_from_before_owners_are_for_admins_only_and_new_owners_persist(tmp_path: Path) -> None:
    before = migrations_before(14, tmp_path / "migrations")
    old = EmbeddedWarehouse(tmp_path / "wh", migrations=before)
    await old.start()
    await old.execute(LEGACY_JOB)
    await old.execute(LEGACY_SCHEDULE)
    await old.close()

    warehouse = EmbeddedWarehouse(tmp_path / "wh")
    await warehouse.start()
    exports = ExportService(warehouse, export_dir=str(tmp_path / "exports"))
    schedules = ScheduleService(warehouse, exports)
    await exports.start()
    await schedules.start(run_loop=False)
    try:
        legacy = await exports.get("20240101T000000Z-legacy00")
        assert legacy.principal is None
        with pytest.raises(JobNotFound):
            await exports.get(legacy.id, principal="jwt:alice")
        assert await exports.list(principal="jwt:alice") == []
        assert [s.principal for s in await schedules.list()] == [None]
        assert await schedules.list(principal="jwt:alice") == []
        with pytest.raises(ScheduleNotFound):
            await schedules.get("sch-legacy", principal="jwt:alice")

        job = await exports.submit("csv", ExportRequest(columns=["signature"]), principal="jwt:alice")
        await exports.wait(job.id, timeout=60)
        assert (await exports.get(job.id, principal="jwt:alice")).principal == "jwt:alice"
        assert [j.id for j in await exports.list(principal="jwt:alice")] == [job.id]
        mine = await schedules.create(ScheduleCreate(format="csv", frequency="daily"), principal="api_key:0123abcd")
        assert [s.id for s in await schedules.list(principal="api_key:0123abcd")] == [mine.id]
    finally:
        await schedules.close()
        await exports.close()
        await warehouse.close()

    reopened = EmbeddedWarehouse(tmp_path / "wh")
    await reopened.start()
    try:
        stored = await ScheduleService(reopened, ExportService(reopened, export_dir=str(tmp_path / "exports"))).get(
            mine.id, principal="api_key:0123abcd"
        )
        assert stored.schedule.principal == "api_key:0123abcd"
    finally:
        await reopened.close()
