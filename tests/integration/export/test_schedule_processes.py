"""Schedules over several processes and stops: no change undone, no schedule left out, no row exported twice."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fsspec
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from arbitrage.schedule import ScheduleCreate, ScheduleService
from arbitrage.storage import EmbeddedWarehouse
from tests.conftest import fresh_data_dir
from tests.integration.export.test_export_schedules import (
    Clock,
    _gated_run_started,
    _GatedWriter,
    exported_signatures,
    run_due,
    services,
    stop,
)

pytestmark = pytest.mark.anyio


async def test_a_patch_through_a_process_that_did_not_run_the_schedule_does_not_export_rows_again(
    warehouse, make_transactions, tmp_path
):
    """Behind a load balancer a PATCH may reach a process whose copy predates the last run's watermark."""
    out = tmp_path / "exports"
    now = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    clock = Clock(now)
    exports, first = await services(warehouse, out, clock)
    created = await first.create(ScheduleCreate(format="parquet", frequency="hourly", columns=["signature"]))
    other_exports, second = await services(warehouse, out, clock)
    try:
        await warehouse.insert_arrow("transactions", make_transactions(30, ingested_at=now - timedelta(minutes=1)))
        clock.now = now + timedelta(hours=1)
        assert await run_due(first, created.id) == [created.id]
        ran_at = clock.now
        renamed = await second.update(created.id, {"name": "renamed"})
        await warehouse.insert_arrow(
            "transactions", make_transactions(20, seed=2, ingested_at=clock.now + timedelta(minutes=1))
        )
        clock.now = now + timedelta(hours=2)
        assert await run_due(first, created.id) == [created.id]
        signatures = exported_signatures(out)
        assert len(signatures) == 50 and len(set(signatures)) == 50
        assert [job.rows for job in (await first.get(created.id)).last_runs] == [20, 30]
        assert renamed.watermark == ran_at and renamed.last_due == datetime(2026, 1, 1, 1, tzinfo=UTC)
    finally:
        await stop(other_exports, second)
        await stop(exports, first)


@pytest.mark.parametrize("change", ["disable", "delete"])
async def test_a_schedule_disabled_or_deleted_through_another_process_during_a_run_stays_so(
    warehouse, make_transactions, tmp_path, change
):
    """The process running the schedule must not store its stale copy back when the run ends."""
    out = tmp_path / "exports"
    clock = Clock(datetime(2026, 1, 1, 0, 30, tzinfo=UTC))
    exports, first = await services(warehouse, out, clock)
    other_exports, second = await services(warehouse, out, clock)
    try:
        schedule_id = await _gated_run_started(warehouse, make_transactions, clock, first, loaded_by=second)
        if change == "disable":
            assert not (await second.update(schedule_id, {"enabled": False})).enabled
        else:
            await second.delete(schedule_id)
        _GatedWriter.gate.set()
        await first.wait_idle(schedule_id)
        restarted = ScheduleService(warehouse, exports, clock=clock, watermark_lag_seconds=0)
        await restarted.start(run_loop=False)
        stored = await restarted.list()
        await restarted.close()
        if change == "disable":
            assert [(s.id, s.enabled) for s in stored] == [(schedule_id, False)]
        else:
            assert stored == []
        clock.now += timedelta(hours=1)
        assert await first.tick() == []
    finally:
        _GatedWriter.gate.set()
        await stop(other_exports, second)
        await stop(exports, first)


async def test_a_schedule_created_through_a_process_that_then_stopped_is_run_by_one_still_running(
    warehouse, make_transactions, tmp_path
):
    """A process scaled down for good must not take the schedules it happened to accept with it."""
    out = tmp_path / "exports"
    now = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    clock = Clock(now)
    exports, first = await services(warehouse, out, clock)
    other_exports, second = await services(warehouse, out, clock)
    try:
        created = await second.create(ScheduleCreate(format="parquet", frequency="hourly", columns=["signature"]))
        await stop(other_exports, second)
        await warehouse.insert_arrow("transactions", make_transactions(30, ingested_at=now - timedelta(minutes=1)))
        clock.now = now + timedelta(hours=1)
        assert await run_due(first, created.id) == [created.id]
        assert len(exported_signatures(out)) == 30
        assert [s.id for s in await first.list()] == [created.id]
    finally:
        await stop(exports, first)


class _GatedCommitFileSystem(MemoryFileSystem):
    """An fsspec file system whose first move (a commit publishing a file) waits for the test's gate."""

    protocol = "gatedcommit"
    gate = threading.Event()
    entered = threading.Event()

    def mv(self, path1: Any, path2: Any, *args: Any, **kwargs: Any) -> None:
        if not type(self).entered.is_set():
            type(self).entered.set()
            type(self).gate.wait(60)
        super().mv(path1, path2, *args, **kwargs)


def _memory_signatures(root: str) -> list[str]:
    fs = _GatedCommitFileSystem()
    signatures: list[str] = []
    for path in sorted(fs.find(root)):
        if path.endswith(".parquet") and ".staging-" not in path:
            with fs.open(path, "rb") as file:
                signatures += pq.read_table(file, columns=["signature"]).column("signature").to_pylist()
    return signatures


def _memory_job_id(root: str) -> str:
    (manifest,) = [path for path in _GatedCommitFileSystem().find(root) if path.endswith("/manifest.json")]
    return str(manifest.rsplit("/", 2)[-2])


async def test_a_run_that_committed_while_the_service_stopped_advances_the_watermark(
    warehouse, make_transactions, tmp_path
):
    """A shutdown that comes while a run publishes its files cannot stop it: its rows went out, once."""
    fsspec.register_implementation("gatedcommit", _GatedCommitFileSystem, clobber=True)
    _GatedCommitFileSystem.gate.clear()
    _GatedCommitFileSystem.entered.clear()
    root = f"gatedcommit://commit-{os.urandom(4).hex()}"
    out = tmp_path / "exports"
    now = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    clock = Clock(now)
    exports, schedules = await services(warehouse, out, clock)
    try:
        await warehouse.insert_arrow("transactions", make_transactions(30, ingested_at=now - timedelta(minutes=1)))
        created = await schedules.create(
            ScheduleCreate(format="parquet", frequency="hourly", columns=["signature"], upload_to=root)
        )
        clock.now = now + timedelta(hours=1)
        assert await schedules.tick() == [created.id]
        assert await asyncio.to_thread(_GatedCommitFileSystem.entered.wait, 30)
        stopping = asyncio.create_task(stop(exports, schedules))
        await asyncio.sleep(0.2)
        _GatedCommitFileSystem.gate.set()
        await stopping
    finally:
        _GatedCommitFileSystem.gate.set()
    assert len(_memory_signatures(root)) == 30
    stored = await warehouse.query_arrow(
        f"SELECT watermark, last_job_id FROM {warehouse.database}.schedules FINAL WHERE id = {{id:String}}",
        {"id": created.id},
    )
    # Stored by the stopping process itself, so another process running the next due time starts from it.
    assert stored.to_pylist() == [{"watermark": clock.now, "last_job_id": _memory_job_id(root)}]
    exports, schedules = await services(warehouse, out, clock)
    try:
        await schedules.wait_idle(created.id)
        await warehouse.insert_arrow(
            "transactions", make_transactions(20, seed=2, ingested_at=clock.now + timedelta(minutes=1))
        )
        clock.now = now + timedelta(hours=2)
        assert await run_due(schedules, created.id) == [created.id]
        signatures = _memory_signatures(root)
        assert len(signatures) == 50 and len(set(signatures)) == 50
        detail = await schedules.get(created.id)
        assert [(job.state, job.rows) for job in detail.last_runs] == [("done", 20), ("done", 30)]
        assert detail.schedule.consecutive_failures == 0
    finally:
        await stop(exports, schedules)
        _GatedCommitFileSystem().rm(root, recursive=True)


_REPO = Path(__file__).resolve().parents[3]
_DIES_ONCE_EXPORTED = """
import asyncio, os, sys
from datetime import UTC, datetime, timedelta
from arbitrage.export import ExportService
from arbitrage.schedule import ScheduleCreate, ScheduleService
from arbitrage.storage import EmbeddedWarehouse
from tests.integration.export.conftest import transactions

async def main(data_dir, out):
    now = [datetime(2026, 1, 1, 0, 30, tzinfo=UTC)]
    warehouse = EmbeddedWarehouse(data_dir)
    await warehouse.start()
    await warehouse.insert_arrow("transactions", transactions(30, ingested_at=now[0] - timedelta(minutes=1)))
    exports = ExportService(warehouse, export_dir=out)
    await exports.start()
    wait = exports.wait

    async def wait_then_die(job_id, timeout=None):
        job = await wait(job_id, timeout)
        print("EXPORTED", job.id, job.state, flush=True)
        os._exit(9)  # the job row says done; the schedule has not stored the run yet

    exports.wait = wait_then_die
    schedules = ScheduleService(warehouse, exports, clock=lambda: now[0], watermark_lag_seconds=0)
    await schedules.start(run_loop=False)
    await schedules.create(ScheduleCreate(format="parquet", frequency="hourly", columns=["signature"]))
    now[0] += timedelta(hours=1)
    await schedules.tick()
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_a_run_whose_process_died_right_after_its_export_was_done_is_not_exported_again(
    migrated_template, make_transactions, tmp_path
):
    """Killed between storing the job done and storing the schedule's watermark: the rows are out already."""
    data, out = fresh_data_dir(migrated_template, tmp_path / "warehouse"), tmp_path / "exports"
    child = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _DIES_ONCE_EXPORTED, str(data), str(out)],
        cwd=_REPO,
        capture_output=True,
        timeout=300,
    )
    assert child.stdout.decode().startswith("EXPORTED ") and " done" in child.stdout.decode(), child.stderr.decode()
    assert len(exported_signatures(out)) == 30
    warehouse = EmbeddedWarehouse(data)
    await warehouse.start()
    clock = Clock(datetime(2026, 1, 1, 1, 40, tzinfo=UTC))
    try:
        exports, schedules = await services(warehouse, out, clock)
        try:
            (schedule,) = await schedules.list()
            await schedules.wait_idle(schedule.id)
            await warehouse.insert_arrow(
                "transactions", make_transactions(20, seed=2, ingested_at=clock.now + timedelta(minutes=1))
            )
            clock.now = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
            assert await run_due(schedules, schedule.id) == [schedule.id]
            signatures = exported_signatures(out)
            assert len(signatures) == 50 and len(set(signatures)) == 50
            detail = await schedules.get(schedule.id)
            assert [(job.state, job.rows) for job in detail.last_runs] == [("done", 20), ("done", 30)]
            assert detail.schedule.consecutive_failures == 0 and detail.schedule.watermark == clock.now
        finally:
            await stop(exports, schedules)
    finally:
        await warehouse.close()


class _Died(BaseException):
    """Ends a task the way a killed process ends everything: no handler runs (asyncio keeps it on the task)."""


async def test_the_next_run_in_another_process_starts_after_a_done_run_whose_process_died_before_storing_it(
    warehouse, make_transactions, tmp_path
):
    """With a shared ClickHouse, the next due time may fall to a process that was running all along."""
    out = tmp_path / "exports"
    now = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    clock = Clock(now)
    exports, first = await services(warehouse, out, clock)
    created = await first.create(ScheduleCreate(format="parquet", frequency="hourly", columns=["signature"]))
    other_exports, second = await services(warehouse, out, clock)
    wait = exports.wait

    async def wait_then_die(job_id: str, timeout: float | None = None) -> Any:
        await wait(job_id, timeout)
        raise _Died  # the job row says done; the schedule has not stored the run

    exports.wait = wait_then_die  # type: ignore[method-assign]
    try:
        await warehouse.insert_arrow("transactions", make_transactions(30, ingested_at=now - timedelta(minutes=1)))
        clock.now = now + timedelta(hours=1)
        assert await first.tick() == [created.id]
        await first.wait_idle(created.id)
        assert len(exported_signatures(out)) == 30
        await warehouse.insert_arrow(
            "transactions", make_transactions(20, seed=2, ingested_at=clock.now + timedelta(minutes=1))
        )
        clock.now = now + timedelta(hours=2)
        assert await run_due(second, created.id) == [created.id]
        signatures = exported_signatures(out)
        assert len(signatures) == 50 and len(set(signatures)) == 50
        detail = await second.get(created.id)
        assert [(job.state, job.rows) for job in detail.last_runs] == [("done", 20), ("done", 30)]
        assert detail.schedule.watermark == clock.now and detail.schedule.consecutive_failures == 0
    finally:
        exports.wait = wait  # type: ignore[method-assign]
        await stop(other_exports, second)
        await stop(exports, first)
