"""Schedules: incremental runs export each row once, persistence, missed runs, leases, retries."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pyarrow.parquet as pq
import pytest

import arbitrage.schedule._service as schedule_service
from arbitrage.export import ExportService, register_exporter
from arbitrage.ingest import IngestService
from arbitrage.schedule import Schedule, ScheduleBusy, ScheduleCreate, ScheduleService
from arbitrage.storage import EmbeddedWarehouse
from arbitrage.stream import RecentTransactions
from tests.conftest import fresh_data_dir
from tests.integration.ingest.test_service import _HeldFirstInsert, _until

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


async def test_rows_of_an_insert_still_in_flight_when_a_run_starts_go_out_with_the_next_run(
    warehouse, records, tmp_path
):
    """Rows are stamped when their insert starts, which may then wait (for a thread, for the
    warehouse) longer than the lag: no run's watermark may pass them before they are visible."""
    out = tmp_path / "exports"
    held = _HeldFirstInsert(warehouse)
    ingest = IngestService(held, RecentTransactions(1000))  # type: ignore[arg-type]
    clock = Clock(datetime.now(UTC))
    exports, schedules = await services(warehouse, out, clock, unsettled_since=ingest.unsettled_since)
    try:
        schedule = await schedules.create(ScheduleCreate(format="parquet", frequency="hourly", columns=["signature"]))
        storing = asyncio.create_task(ingest.ingest_body(msgspec.json.encode(records[:50]), None, source="test"))
        await _until(lambda: held.inserted_rows)
        clock.now = datetime.now(UTC)
        first = await schedules.run_now(schedule.id)
        await schedules.wait_idle(schedule.id)
        held.release.set()
        assert (await storing).accepted == 50
        clock.now = datetime.now(UTC) + timedelta(seconds=1)
        second = await schedules.run_now(schedule.id)
        await schedules.wait_idle(schedule.id)
        assert [(await exports.get(job.id)).rows for job in (first, second)] == [0, 50]
        assert len(set(exported_signatures(out))) == 50
    finally:
        held.release.set()
        await stop(exports, schedules)


async def test_a_schedule_enabled_again_runs_at_its_next_due_time_not_for_the_time_it_was_off(
    warehouse, make_transactions, tmp_path
):
    clock = Clock(datetime(2026, 1, 1, 0, 30, tzinfo=UTC))
    exports, schedules = await services(warehouse, tmp_path / "exports", clock)
    try:
        created = await schedules.create(ScheduleCreate(format="parquet", frequency="hourly", columns=["signature"]))
        await schedules.update(created.id, {"enabled": False})
        clock.now = datetime(2026, 1, 1, 3, 20, tzinfo=UTC)
        assert await run_due(schedules, created.id) == []
        enabled = await schedules.update(created.id, {"enabled": True})
        assert enabled.next_run_at == datetime(2026, 1, 1, 4, tzinfo=UTC)
        assert await run_due(schedules, created.id) == []
        clock.now = datetime(2026, 1, 1, 4, 0, 5, tzinfo=UTC)
        assert await run_due(schedules, created.id) == [created.id]
    finally:
        await stop(exports, schedules)


async def test_a_run_to_a_destination_the_config_no_longer_allows_fails_naming_it(
    warehouse, make_transactions, tmp_path
):
    """Created when `auth.export_roots` allowed it; a later, narrower config must hold for its runs too."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    clock = Clock(datetime(2026, 1, 1, 0, 30, tzinfo=UTC))
    exports = ExportService(warehouse, export_dir=str(tmp_path / "exports"), destination_roots=[])
    await exports.start()
    schedules = ScheduleService(warehouse, exports, clock=clock, watermark_lag_seconds=0, max_retries=0)
    await schedules.start(run_loop=False)
    try:
        created = await schedules.create(
            ScheduleCreate(format="parquet", frequency="hourly", columns=["signature"], upload_to=str(elsewhere))
        )
        await warehouse.insert_arrow("transactions", make_transactions(10, ingested_at=clock.now))
        clock.now += timedelta(hours=1)
        assert await run_due(schedules, created.id) == [created.id]
        detail = await schedules.get(created.id)
        assert "destination" in (detail.schedule.last_error or "")
        assert "export_roots" in (detail.schedule.last_error or "")
        assert not list(elsewhere.iterdir())
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


async def _gated_run_started(
    warehouse: Any,
    make_transactions: Any,
    clock: Clock,
    runner: ScheduleService,
    *,
    loaded_by: ScheduleService | None = None,
) -> str:
    """30 rows, an hourly `gated-parquet` schedule, and its first run held inside its first write.

    `loaded_by` starts after the schedule exists, as a process started later would.
    """
    register_exporter("gated-parquet", _GatedWriter)
    _GatedWriter.gate.clear()
    _GatedWriter.entered.clear()
    now = clock.now
    await warehouse.insert_arrow("transactions", make_transactions(30, ingested_at=now - timedelta(minutes=1)))
    created = await runner.create(ScheduleCreate(format="gated-parquet", frequency="hourly", columns=["signature"]))
    if loaded_by is not None:
        await loaded_by.start(run_loop=False)
    clock.now = now + timedelta(hours=1)
    assert await runner.tick() == [created.id]
    await asyncio.to_thread(_GatedWriter.entered.wait, 30)
    return created.id


async def test_a_due_time_is_not_run_while_another_process_still_runs_the_schedule(
    warehouse, make_transactions, tmp_path
):
    out = tmp_path / "exports"
    now = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    clock = Clock(now)
    exports, first = await services(warehouse, out, clock)
    other_exports, second = await services(warehouse, out, clock)
    try:
        schedule_id = await _gated_run_started(warehouse, make_transactions, clock, first, loaded_by=second)
        clock.now = now + timedelta(hours=2)
        assert await second.tick() == []  # the first process's run has not advanced the watermark yet
        with pytest.raises(ScheduleBusy):
            await second.run_now(schedule_id)
        _GatedWriter.gate.set()
        await first.wait_idle(schedule_id)
        await second.wait_idle(schedule_id)
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
        for change, field in (({"nope": 1}, "nope"), ({"format": None}, "format"), ({"format": 3}, "format")):
            with pytest.raises(ValidationError) as refused:
                await schedules.update(created.id, change)
            assert refused.value.field == field, "named as a JSON path, as the create endpoint names it"
        await schedules.delete(created.id)
        assert await schedules.list() == []
    finally:
        await stop(exports, schedules)


_CRASHING_PROCESS = """
import asyncio, sys, time
from datetime import UTC, datetime, timedelta
from arbitrage.export import ExportService, register_exporter
from arbitrage.schedule import ScheduleCreate, ScheduleService
from arbitrage.storage import EmbeddedWarehouse
from tests.integration.export.conftest import transactions

class Stuck:
    compressions = ("none",)
    default_compression = "none"
    nested_types = True
    def extension(self, options): return "parquet"
    def open(self, sink, schema, options): pass
    def write(self, batch): time.sleep(3600)
    def close(self): pass

async def main(data_dir, out, cancel_elsewhere):
    register_exporter("crash-test", Stuck)
    now = [datetime(2026, 1, 1, 0, 30, tzinfo=UTC)]
    warehouse = EmbeddedWarehouse(data_dir)
    await warehouse.start()
    await warehouse.insert_arrow("transactions", transactions(30, ingested_at=now[0] - timedelta(minutes=1)))
    # Asked to cancel elsewhere, the owner is killed before its next heartbeat could read it.
    exports = ExportService(warehouse, export_dir=out, heartbeat_seconds=3600 if cancel_elsewhere else 5)
    await exports.start()
    schedules = ScheduleService(warehouse, exports, clock=lambda: now[0], watermark_lag_seconds=0)
    await schedules.start(run_loop=False)
    created = await schedules.create(ScheduleCreate(format="crash-test", frequency="hourly", columns=["signature"]))
    now[0] += timedelta(hours=1)
    await schedules.tick()
    while not (jobs := await exports.list(state="running", schedule_id=created.id)):
        await asyncio.sleep(0.05)
    if cancel_elsewhere:  # a DELETE that reached another process on the same ClickHouse
        asked = await ExportService(warehouse, export_dir=out, heartbeat_seconds=0.05).cancel(jobs[0].id)
        assert asked.state == "running", asked
    print("RUNNING", jobs[0].id, flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] == "cancel-elsewhere"))
"""


def crash_mid_run(data_dir: Path, out: Path, log: Path, *, cancel_elsewhere: bool = False) -> str:
    """Run an hourly schedule in a real process, SIGKILL it mid-export; the job id it was running.

    `cancel_elsewhere`: a cancel of the job was asked of another process first, and stored.
    """
    root = Path(__file__).resolve().parents[3]
    mode = "cancel-elsewhere" if cancel_elsewhere else "run"
    with log.open("wb") as errors:
        child = subprocess.Popen(
            [sys.executable, "-c", _CRASHING_PROCESS, str(data_dir), str(out), mode],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        try:
            assert child.stdout is not None
            line = child.stdout.readline().decode()
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(30)
            assert child.stdout is not None
            child.stdout.close()
    assert line.startswith("RUNNING "), log.read_text()
    return line.split()[1]


class _PlainParquet:
    compressions = ("none",)
    default_compression = "none"
    nested_types = True

    def extension(self, options: Any) -> str:
        return "parquet"

    def open(self, sink: Any, schema: Any, options: Any) -> None:
        self._writer = pq.ParquetWriter(sink, schema)

    def write(self, batch: Any) -> None:
        self._writer.write_batch(batch)

    def close(self) -> None:
        self._writer.close()


async def test_a_run_killed_mid_export_is_counted_failed_after_restart_and_not_twice(migrated_template, tmp_path):
    data, out = fresh_data_dir(migrated_template, tmp_path / "warehouse"), tmp_path / "exports"
    job_id = await asyncio.to_thread(crash_mid_run, data, out, tmp_path / "child.log")
    register_exporter("crash-test", _PlainParquet)  # the same format, now able to finish
    warehouse = EmbeddedWarehouse(data)
    await warehouse.start()
    clock = Clock(datetime(2026, 1, 1, 1, 40, tzinfo=UTC))
    try:
        # With a shared ClickHouse the export sweep marks the job interrupted after start-up:
        # the schedule's next tick counts it.
        exports = ExportService(warehouse, export_dir=str(out))
        schedules = ScheduleService(warehouse, exports, clock=clock, max_retries=0)
        await schedules.start(run_loop=False)
        try:
            (schedule,) = await schedules.list()
            assert schedule.consecutive_failures == 0
            await exports.start()
            assert await schedules.tick() == []
            detail = await schedules.get(schedule.id)
            assert detail.schedule.consecutive_failures == 1 and detail.schedule.last_job_id == job_id
        finally:
            await stop(exports, schedules)
        for _restart in range(2):
            exports, schedules = await services(warehouse, out, clock, max_retries=0)
            try:
                await schedules.wait_idle(schedule.id)
                detail = await schedules.get(schedule.id)
                assert [(job.id, job.state) for job in detail.last_runs] == [(job_id, "failed")]
                assert detail.schedule.consecutive_failures == 1 and detail.schedule.last_job_id == job_id
                assert "interrupted" in (detail.schedule.last_error or "")
                assert schedules.health()["status"] == "degraded"
            finally:
                await stop(exports, schedules)
        exports, schedules = await services(warehouse, out, clock, max_retries=0)
        try:
            clock.now = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
            assert await run_due(schedules, schedule.id) == [schedule.id]
            detail = await schedules.get(schedule.id)
            assert [(job.state, job.rows) for job in detail.last_runs] == [("done", 30), ("failed", 0)]
            assert detail.schedule.consecutive_failures == 0 and schedules.health()["status"] == "healthy"
        finally:
            await stop(exports, schedules)
    finally:
        await warehouse.close()


async def test_a_run_killed_mid_export_is_retried_after_restart(migrated_template, tmp_path):
    data, out = fresh_data_dir(migrated_template, tmp_path / "warehouse"), tmp_path / "exports"
    job_id = await asyncio.to_thread(crash_mid_run, data, out, tmp_path / "child.log")
    async with _restarted_after_crash(data, out) as (schedules, clock, schedule):
        detail = await schedules.get(schedule.id)
        runs = [(job.state, job.attempt, job.rows, job.due_at) for job in detail.last_runs]
        due = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
        assert runs == [("done", 2, 30, due), ("failed", 1, 0, due)] and detail.last_runs[1].id == job_id
        assert detail.schedule.consecutive_failures == 0 and detail.schedule.watermark == clock.now
        assert len(exported_signatures(out)) == 30 and not list(out.rglob(".staging-*"))
        assert await run_due(schedules, schedule.id) == []  # that due time is done: it does not run again


@contextlib.asynccontextmanager
async def _restarted_after_crash(data: Path, out: Path) -> AsyncIterator[tuple[ScheduleService, Clock, Schedule]]:
    """The services of a restart on `crash_mid_run`'s data dir, 40 minutes later, once its one schedule is idle."""
    register_exporter("crash-test", _PlainParquet)
    warehouse = EmbeddedWarehouse(data)
    await warehouse.start()
    clock = Clock(datetime(2026, 1, 1, 1, 40, tzinfo=UTC))
    exports, schedules = await services(warehouse, out, clock, max_retries=1)
    try:
        (schedule,) = await schedules.list()
        await schedules.wait_idle(schedule.id)
        yield schedules, clock, schedule
    finally:
        await stop(exports, schedules)
        await warehouse.close()


async def test_a_run_cancelled_through_another_process_ends_cancelled_and_is_not_retried_when_its_process_dies(
    migrated_template, tmp_path
):
    """Someone cancelled tonight's export; its process died before it read the request: it must not run again."""
    data, out = fresh_data_dir(migrated_template, tmp_path / "warehouse"), tmp_path / "exports"
    job_id = await asyncio.to_thread(crash_mid_run, data, out, tmp_path / "child.log", cancel_elsewhere=True)
    async with _restarted_after_crash(data, out) as (schedules, clock, schedule):
        detail = await schedules.get(schedule.id)
        assert [(job.id, job.state, job.error) for job in detail.last_runs] == [(job_id, "cancelled", None)]
        assert detail.schedule.consecutive_failures == 0 and schedules.health()["status"] == "healthy"
        assert not list(out.rglob(".staging-*"))
        assert await run_due(schedules, schedule.id) == []  # its due time is not run again either
        clock.now = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
        assert await run_due(schedules, schedule.id) == [schedule.id]  # the next one exports its rows
        runs = (await schedules.get(schedule.id)).last_runs
        assert [(job.state, job.rows) for job in runs] == [("done", 30), ("cancelled", 0)]


async def test_a_run_stopped_by_a_shutdown_is_retried_after_restart(warehouse, make_transactions, tmp_path):
    """A deploy in the middle of a nightly export must not quietly drop that night's run."""
    out = tmp_path / "exports"
    clock = Clock(datetime(2026, 1, 1, 0, 30, tzinfo=UTC))
    exports, schedules = await services(warehouse, out, clock, max_retries=1)
    try:
        schedule_id = await _gated_run_started(warehouse, make_transactions, clock, schedules)
        stopping = asyncio.create_task(stop(exports, schedules))
        await asyncio.sleep(0.05)
        _GatedWriter.gate.set()
        await stopping
    finally:
        _GatedWriter.gate.set()
    exports, schedules = await services(warehouse, out, clock, max_retries=1)
    try:
        await schedules.wait_idle(schedule_id)
        detail = await schedules.get(schedule_id)
        assert [(job.state, job.attempt) for job in detail.last_runs] == [("done", 2), ("failed", 1)]
        assert "interrupted" in (detail.last_runs[1].error or "") and detail.last_runs[0].rows == 30
        assert detail.schedule.consecutive_failures == 0 and len(exported_signatures(out)) == 30
    finally:
        await stop(exports, schedules)


async def test_a_run_another_process_stopped_is_retried_by_one_still_running(
    warehouse, make_transactions, tmp_path, monkeypatch
):
    """With several processes on one ClickHouse, one that stops for good must not take its run with it."""
    monkeypatch.setattr(schedule_service, "INTERRUPTED_LOOK_SECONDS", 0.0)
    out = tmp_path / "exports"
    clock = Clock(datetime(2026, 1, 1, 0, 30, tzinfo=UTC))
    exports, first = await services(warehouse, out, clock, max_retries=1)
    other_exports, second = await services(warehouse, out, clock, max_retries=1)
    try:
        schedule_id = await _gated_run_started(warehouse, make_transactions, clock, first, loaded_by=second)
        stopping = asyncio.create_task(stop(exports, first))
        await asyncio.sleep(0.05)
        _GatedWriter.gate.set()
        await stopping
        assert await second.tick() == []  # no due time, but the stopped run is picked up
        await second.wait_idle(schedule_id)
        runs = (await second.get(schedule_id)).last_runs
        assert [(job.state, job.attempt, job.rows) for job in runs][:1] == [("done", 2, 30)]
        assert [job.state for job in runs] == ["done", "failed"]
    finally:
        _GatedWriter.gate.set()
        await stop(other_exports, second)


async def _claimed_by_a_process_that_dies(
    warehouse: Any, make_transactions: Any, out: Path, clock: Clock, *, loaded_by: ScheduleService | None = None
) -> tuple[str, datetime]:
    """30 rows, an hourly schedule, and its first due time claimed by a process that dies before writing the job.

    `loaded_by` starts after the schedule exists, as a process started later would.
    """
    exports, doomed = await services(warehouse, out, clock, max_retries=1)
    await warehouse.insert_arrow("transactions", make_transactions(30, ingested_at=clock.now - timedelta(minutes=1)))
    created = await doomed.create(ScheduleCreate(format="parquet", frequency="hourly", columns=["signature"]))
    if loaded_by is not None:
        await loaded_by.start(run_loop=False)
    clock.now += timedelta(hours=1)
    due = clock.now.replace(minute=0)
    assert await doomed._claim(created.id, due)
    await stop(exports, doomed)  # nothing after the claim was written: no job row, no `last_due`
    return created.id, due


async def _assert_the_lost_due_time_was_counted_and_retried(
    schedules: ScheduleService, schedule_id: str, due: datetime, out: Path
) -> None:
    await schedules.wait_idle(schedule_id)
    detail = await schedules.get(schedule_id)
    runs = [(job.state, job.attempt, job.rows, job.due_at) for job in detail.last_runs]
    assert runs == [("done", 2, 30, due), ("failed", 1, 0, due)]
    assert "before it started" in (detail.last_runs[1].error or "")
    assert detail.schedule.consecutive_failures == 0 and detail.schedule.last_due == due
    assert len(exported_signatures(out)) == 30
    assert await run_due(schedules, schedule_id) == []  # that due time is done: it does not run again


async def test_a_due_time_claimed_by_a_process_that_died_before_writing_its_job_is_retried_after_restart(
    warehouse, make_transactions, tmp_path
):
    """The crash window between claiming a due time and writing its job row must not use the due time up."""
    out = tmp_path / "exports"
    clock = Clock(datetime(2026, 1, 1, 0, 30, tzinfo=UTC))
    schedule_id, due = await _claimed_by_a_process_that_dies(warehouse, make_transactions, out, clock)
    exports, schedules = await services(warehouse, out, clock, max_retries=1)
    try:
        await _assert_the_lost_due_time_was_counted_and_retried(schedules, schedule_id, due, out)
    finally:
        await stop(exports, schedules)


async def test_a_due_time_another_process_claimed_then_died_with_is_retried_once_the_claim_is_stale(
    warehouse, make_transactions, tmp_path, monkeypatch
):
    """With several processes on one ClickHouse, a fresh claim without a job may be one still being started."""
    monkeypatch.setattr(schedule_service, "INTERRUPTED_LOOK_SECONDS", 0.0)
    clock, out = Clock(datetime(2026, 1, 1, 0, 30, tzinfo=UTC)), tmp_path / "exports"
    # A claim without a job counts as lost once it is older than the export stale time.
    survivor_exports = ExportService(warehouse, export_dir=str(out), stale_after_seconds=1.0)
    await survivor_exports.start()
    survivor = ScheduleService(
        warehouse, survivor_exports, clock=clock, watermark_lag_seconds=0, retry_backoff_seconds=0.01, max_retries=1
    )
    try:
        schedule_id, due = await _claimed_by_a_process_that_dies(
            warehouse, make_transactions, out, clock, loaded_by=survivor
        )
        assert await survivor.tick() == []
        assert (await survivor.get(schedule_id)).last_runs == []  # not yet: its process may be writing the job
        await asyncio.sleep(1.1)  # the claim grows older than the stale time
        assert await survivor.tick() == []
        await _assert_the_lost_due_time_was_counted_and_retried(survivor, schedule_id, due, out)
    finally:
        await stop(survivor_exports, survivor)


async def test_claims_are_dropped_thirty_days_after_they_were_made_so_the_table_stops_growing(warehouse, tmp_path):
    """A row per schedule and due time, which every process reads whole each minute to find lost claims."""
    exports, schedules = await services(warehouse, tmp_path / "exports", Clock(datetime(2026, 1, 1, tzinfo=UTC)))
    table = f"{warehouse.database}.schedule_claims"
    try:
        assert await schedules._claim("sch-fresh", datetime(2026, 1, 1, 1, tzinfo=UTC))
        for schedule_id, days_ago in (("sch-expired", 31), ("sch-recounted", 29)):
            # The claim that counts an interrupted run is keyed by the job's old creation time.
            await warehouse.execute(
                f"INSERT INTO {table} SELECT {{sid:String}}, toDateTime64('2025-01-01 00:00:00', 3, 'UTC'), "
                "'another process', now64(3) - toIntervalDay({days:UInt32})",
                {"sid": schedule_id, "days": days_ago},
            )
        await warehouse.execute(f"OPTIMIZE TABLE {table} FINAL")  # what a background merge does in time
        kept = await warehouse.query_arrow(f"SELECT schedule_id FROM {table} ORDER BY schedule_id")
        assert kept.column("schedule_id").to_pylist() == ["sch-fresh", "sch-recounted"]
    finally:
        await stop(exports, schedules)


class _PausedReads(ScheduleService):
    """Reads of one schedule wait at a gate once read: a run can then end while an answer is being made."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.gate.set()

    async def _stored(self, schedule_id: str, principal: str | None = None) -> Schedule:
        schedule = await super()._stored(schedule_id, principal)
        await self.gate.wait()
        return schedule


async def test_a_schedule_answered_not_running_shows_its_last_run_stored(warehouse, make_transactions, tmp_path):
    """A run that ended while the answer was read must not show as ended with its watermark unmoved."""
    await warehouse.insert_arrow(
        "transactions", make_transactions(20, ingested_at=datetime.now(UTC) - timedelta(hours=1))
    )
    exports = ExportService(warehouse, export_dir=str(tmp_path / "exports"))
    await exports.start()
    schedules = _PausedReads(warehouse, exports, watermark_lag_seconds=0)
    await schedules.start(run_loop=False)
    try:
        schedule = await schedules.create(ScheduleCreate(format="csv", frequency="daily", columns=["signature"]))
        job = await schedules.run_now(schedule.id)
        async with schedules._lock:  # the run's bookkeeping waits for it, once its export is done
            assert (await exports.wait(job.id)).state == "done"
            schedules.gate.clear()
            answer = asyncio.create_task(schedules.get(schedule.id))
            await asyncio.sleep(0.2)  # the answer has read the schedule
        await schedules.wait_idle(schedule.id)  # the run stores its watermark and ends
        schedules.gate.set()
        detail = await answer
        assert detail.schedule.watermark is None  # read before the run stored it ...
        assert detail.schedule.running  # ... so the answer must not say the run ended
        assert (await schedules.get(schedule.id)).schedule.watermark is not None
    finally:
        await schedules.close()
        await exports.close()
