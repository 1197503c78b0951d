"""Schedules: incremental runs export each row once, persistence, missed runs, leases, retries."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from arbitrage.export import ExportService, register_exporter
from arbitrage.schedule import ScheduleBusy, ScheduleCreate, ScheduleService
from arbitrage.storage import EmbeddedWarehouse

pytestmark = pytest.mark.anyio


class Clock:
    """A settable clock, so due times come when the test says."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def services(
    warehouse: EmbeddedWarehouse, out: Path, clock: Clock, **options: Any
) -> tuple[ExportService, ScheduleService]:
    exports = ExportService(warehouse, export_dir=str(out))
    await exports.start()
    schedules = ScheduleService(
        warehouse, exports, clock=clock, watermark_lag_seconds=0, **{"retry_backoff_seconds": 0.01, **options}
    )
    await schedules.start(run_loop=False)
    return exports, schedules


async def stop(exports: ExportService, schedules: ScheduleService) -> None:
    await schedules.close()
    await exports.close()


def exported_signatures(out: Path) -> list[str]:
    signatures: list[str] = []
    for path in sorted(out.rglob("*.parquet")):
        if ".staging-" not in str(path):
            signatures += pq.read_table(path, columns=["signature"]).column("signature").to_pylist()
    return signatures


async def run_due(schedules: ScheduleService, schedule_id: str) -> list[str]:
    started = await schedules.tick()
    await schedules.wait_idle(schedule_id)
    return started


async def test_incremental_runs_with_late_data_between_them_export_every_row_once(
    warehouse, make_transactions, tmp_path
):
    out = tmp_path / "exports"
    now = datetime.now(UTC).replace(microsecond=0)
    clock = Clock(now)
    exports, schedules = await services(warehouse, out, clock)
    try:
        await warehouse.insert_arrow(
            "transactions", make_transactions(100, seed=1, ingested_at=now - timedelta(minutes=5))
        )
        schedule = await schedules.create(ScheduleCreate(format="parquet", frequency="hourly", columns=["signature"]))
        clock.now = now + timedelta(hours=1)
        assert await run_due(schedules, schedule.id) == [schedule.id]
        # Late data: old block times, ingested after the first run.
        late = make_transactions(
            40, seed=2, start=datetime(2024, 1, 1, tzinfo=UTC), ingested_at=clock.now + timedelta(minutes=1)
        )
        await warehouse.insert_arrow("transactions", late)
        clock.now += timedelta(hours=1)
        assert await run_due(schedules, schedule.id) == [schedule.id]
        assert await run_due(schedules, schedule.id) == []  # the same due time never runs twice
        fresh = make_transactions(
            60, seed=3, start=datetime(2024, 6, 1, tzinfo=UTC), ingested_at=clock.now + timedelta(minutes=1)
        )
        await warehouse.insert_arrow("transactions", fresh)
        clock.now += timedelta(hours=1)
        assert await run_due(schedules, schedule.id) == [schedule.id]
        signatures = exported_signatures(out)
        assert len(signatures) == 200 and len(set(signatures)) == 200
        detail = await schedules.get(schedule.id)
        assert [job.rows for job in detail.last_runs] == [60, 40, 100]
        assert all(job.state == "done" for job in detail.last_runs)
        assert detail.schedule.next_run_at == clock.now.replace(minute=0, second=0) + timedelta(hours=1)
    finally:
        await stop(exports, schedules)


async def test_a_schedule_survives_a_restart_and_a_missed_due_time_runs_once(warehouse, make_transactions, tmp_path):
    out = tmp_path / "exports"
    now = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    clock = Clock(now)
    exports, schedules = await services(warehouse, out, clock)
    await warehouse.insert_arrow("transactions", make_transactions(30, ingested_at=now - timedelta(minutes=1)))
    created = await schedules.create(ScheduleCreate(format="csv", frequency="hourly", name="hourly csv"))
    await stop(exports, schedules)
    await warehouse.close()
    await warehouse.start()
    clock.now = now + timedelta(hours=5)  # four due times passed while "down"
    exports, schedules = await services(warehouse, out, clock)
    try:
        (restored,) = await schedules.list()
        assert restored.id == created.id and restored.name == "hourly csv" and restored.format == "csv"
        assert await run_due(schedules, created.id) == [created.id]
        assert await run_due(schedules, created.id) == []
        runs = (await schedules.get(created.id)).last_runs
        assert len(runs) == 1 and runs[0].rows == 30
        assert runs[0].due_at == datetime(2026, 1, 1, 5, 0, tzinfo=UTC)
    finally:
        await stop(exports, schedules)


async def test_missed_due_times_are_skipped_when_configured_so(warehouse, tmp_path):
    out = tmp_path / "exports"
    now = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    clock = Clock(now)
    exports, schedules = await services(warehouse, out, clock)
    created = await schedules.create(ScheduleCreate(format="csv", frequency="hourly"))
    await stop(exports, schedules)
    clock.now = now + timedelta(hours=3)
    exports, schedules = await services(warehouse, out, clock, run_missed_on_startup=False)
    try:
        assert await run_due(schedules, created.id) == []
        assert (await schedules.get(created.id)).schedule.next_run_at == datetime(2026, 1, 1, 4, tzinfo=UTC)
    finally:
        await stop(exports, schedules)


async def test_two_processes_never_run_the_same_due_time(warehouse, tmp_path):
    out = tmp_path / "exports"
    now = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    clock = Clock(now)
    exports, first = await services(warehouse, out, clock)
    created = await first.create(ScheduleCreate(format="csv", frequency="hourly"))
    second = ScheduleService(warehouse, exports, clock=clock, watermark_lag_seconds=0)
    await second.start(run_loop=False)
    try:
        clock.now = now + timedelta(hours=1)
        started = await asyncio.gather(first.tick(), second.tick())
        assert sorted(len(s) for s in started) == [0, 1]
        await first.wait_idle(created.id)
        await second.wait_idle(created.id)
        assert len((await first.get(created.id)).last_runs) == 1
    finally:
        await second.close()
        await stop(exports, first)


async def test_rows_a_run_of_another_process_exported_are_not_exported_again(warehouse, make_transactions, tmp_path):
    out = tmp_path / "exports"
    now = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    clock = Clock(now)
    exports, first = await services(warehouse, out, clock)
    created = await first.create(ScheduleCreate(format="parquet", frequency="hourly", columns=["signature"]))
    second = ScheduleService(warehouse, exports, clock=clock, watermark_lag_seconds=0)
    await second.start(run_loop=False)
    try:
        await warehouse.insert_arrow("transactions", make_transactions(30, ingested_at=now - timedelta(minutes=1)))
        clock.now = now + timedelta(hours=1)
        assert await run_due(first, created.id) == [created.id]
        await warehouse.insert_arrow(
            "transactions", make_transactions(20, seed=2, ingested_at=clock.now + timedelta(minutes=1))
        )
        clock.now = now + timedelta(hours=2)
        assert await run_due(second, created.id) == [created.id]  # the next due time fell to the other process
        signatures = exported_signatures(out)
        assert len(signatures) == 50 and len(set(signatures)) == 50
        assert [job.rows for job in (await second.get(created.id)).last_runs] == [20, 30]
        await second.close()
        second = ScheduleService(warehouse, exports, clock=clock, watermark_lag_seconds=0)
        await second.start(run_loop=False)
        (stored,) = await second.list()
        assert stored.watermark == clock.now and stored.last_due == datetime(2026, 1, 1, 2, tzinfo=UTC)
    finally:
        await second.close()
        await stop(exports, first)


class _GatedWriter:
    """Parquet that blocks its first write until the test opens the gate: a run still going."""

    compressions = ("none",)
    default_compression = "none"
    nested_types = True
    gate = threading.Event()
    entered = threading.Event()

    def extension(self, options: Any) -> str:
        return "parquet"

    def open(self, sink: Any, schema: Any, options: Any) -> None:
        self._writer = pq.ParquetWriter(sink, schema)

    def write(self, batch: Any) -> None:
        type(self).entered.set()
        type(self).gate.wait(60)
        self._writer.write_batch(batch)

    def close(self) -> None:
        self._writer.close()


async def test_a_due_time_is_not_run_while_another_process_still_runs_the_schedule(
    warehouse, make_transactions, tmp_path
):
    register_exporter("gated-parquet", _GatedWriter)
    _GatedWriter.gate.clear()
    _GatedWriter.entered.clear()
    out = tmp_path / "exports"
    now = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    clock = Clock(now)
    exports, first = await services(warehouse, out, clock)
    other_exports, second = await services(warehouse, out, clock)
    try:
        await warehouse.insert_arrow("transactions", make_transactions(30, ingested_at=now - timedelta(minutes=1)))
        created = await first.create(ScheduleCreate(format="gated-parquet", frequency="hourly", columns=["signature"]))
        await second.start(run_loop=False)  # loads the schedule, as a process started after it would
        clock.now = now + timedelta(hours=1)
        assert await first.tick() == [created.id]
        await asyncio.to_thread(_GatedWriter.entered.wait, 30)
        clock.now = now + timedelta(hours=2)
        assert await second.tick() == []  # the first process's run has not advanced the watermark yet
        with pytest.raises(ScheduleBusy):
            await second.run_now(created.id)
        _GatedWriter.gate.set()
        await first.wait_idle(created.id)
        await second.wait_idle(created.id)
        signatures = exported_signatures(out)
        assert len(signatures) == 30 and len(set(signatures)) == 30
    finally:
        _GatedWriter.gate.set()
        await stop(other_exports, second)
        await stop(exports, first)


class _FailingWriter:
    compressions = ("none",)
    default_compression = "none"
    nested_types = True
    failures_left = 0

    def extension(self, options: Any) -> str:
        return "bin"

    def open(self, sink: Any, schema: Any, options: Any) -> None:
        if type(self).failures_left > 0:
            type(self).failures_left -= 1
            raise OSError("disk full (simulated)")

    def write(self, batch: Any) -> None:
        pass

    def close(self) -> None:
        pass


async def test_a_failed_run_is_retried_with_backoff_and_reported_until_it_succeeds(
    warehouse, make_transactions, tmp_path
):
    register_exporter("flaky", _FailingWriter)
    out = tmp_path / "exports"
    now = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    clock = Clock(now)
    exports, schedules = await services(warehouse, out, clock, max_retries=1)
    try:
        await warehouse.insert_arrow("transactions", make_transactions(10, ingested_at=now - timedelta(minutes=1)))
        created = await schedules.create(ScheduleCreate(format="flaky", frequency="hourly"))
        _FailingWriter.failures_left = 5
        clock.now = now + timedelta(hours=1)
        await run_due(schedules, created.id)
        detail = await schedules.get(created.id)
        assert detail.schedule.consecutive_failures == 2 and "disk full" in (detail.schedule.last_error or "")
        assert [job.state for job in detail.last_runs] == ["failed", "failed"]
        assert [job.attempt for job in detail.last_runs] == [2, 1]
        assert schedules.health()["status"] == "degraded"
        assert detail.schedule.watermark is None  # nothing was exported: the rows wait for the next run
        _FailingWriter.failures_left = 0
        job = await schedules.run_now(created.id)
        await schedules.wait_idle(created.id)
        assert (await exports.get(job.id)).rows == 10
        assert schedules.health()["status"] == "healthy"
    finally:
        await stop(exports, schedules)


async def test_a_retry_starts_from_the_watermark_another_process_advanced_meanwhile(
    warehouse, make_transactions, tmp_path
):
    """While a failed run waits to retry, the next due time may fall to another process and export its rows."""
    register_exporter("flaky", _FailingWriter)
    out = tmp_path / "exports"
    now = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    clock = Clock(now)
    exports, first = await services(warehouse, out, clock, max_retries=1, retry_backoff_seconds=3.0)
    created = await first.create(ScheduleCreate(format="flaky", frequency="hourly"))
    second = ScheduleService(warehouse, exports, clock=clock, watermark_lag_seconds=0)
    await second.start(run_loop=False)
    try:
        await warehouse.insert_arrow("transactions", make_transactions(10, ingested_at=now - timedelta(minutes=1)))
        _FailingWriter.failures_left = 1
        clock.now = now + timedelta(hours=1)
        assert await first.tick() == [created.id]
        for _ in range(200):
            if (await first.get(created.id)).schedule.consecutive_failures:
                break
            await asyncio.sleep(0.02)
        clock.now = now + timedelta(hours=2)
        assert await run_due(second, created.id) == [created.id]  # exports the 10 rows, during the backoff
        await first.wait_idle(created.id)
        runs = (await second.get(created.id)).last_runs
        assert [(job.state, job.rows) for job in runs] == [("done", 0), ("done", 10), ("failed", 0)]
    finally:
        await second.close()
        await stop(exports, first)


async def test_patch_changes_frequency_and_filters_and_a_bad_cron_is_refused(warehouse, tmp_path):
    from arbitrage.errors import ValidationError

    out = tmp_path / "exports"
    clock = Clock(datetime(2026, 1, 1, 0, 30, tzinfo=UTC))
    exports, schedules = await services(warehouse, out, clock)
    try:
        created = await schedules.create(ScheduleCreate(format="json", frequency="daily"))
        assert created.next_run_at == datetime(2026, 1, 2, tzinfo=UTC)
        updated = await schedules.update(created.id, {"frequency": "*/15 * * * *", "success_only": True})
        assert updated.cron == "*/15 * * * *" and updated.request.success_only
        assert updated.next_run_at == datetime(2026, 1, 1, 0, 45, tzinfo=UTC)
        with pytest.raises(ValidationError):
            await schedules.update(created.id, {"frequency": "every tuesday"})
        await schedules.delete(created.id)
        assert await schedules.list() == []
    finally:
        await stop(exports, schedules)
