"""Export jobs: background runs, persistence across restarts, cancel, download, S3, custom formats."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs

from arbitrage.config import load_settings
from arbitrage.export import (
    ExportRequest,
    ExportService,
    UnknownFormat,
    WriterOptions,
    register_exporter,
)
from arbitrage.storage import EmbeddedWarehouse
from tests.integration.export.conftest import export_api, wait_done

pytestmark = pytest.mark.anyio


@pytest.fixture
async def filled(warehouse: EmbeddedWarehouse, make_transactions) -> EmbeddedWarehouse:
    await warehouse.insert_arrow("transactions", make_transactions(500))
    return warehouse


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """The export dir (beside, not around, the test's warehouse)."""
    return tmp_path / "exports"


def published(root: Path) -> list[str]:
    """Final-named files under root (staging prefixes excluded)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".staging-" not in str(p))


async def test_a_job_answers_at_once_and_finishes_with_rows_bytes_and_files(filled, out):
    service = ExportService(filled, export_dir=str(out))
    await service.start()
    try:
        job = await service.submit("parquet", ExportRequest(chunk_rows=200))
        assert job.state == "queued"
        done = await service.wait(job.id, timeout=60)
        assert done.state == "done" and done.rows == 500 and done.progress == 1.0
        assert [f.rows for f in done.files] == [200, 200, 100]
        assert done.bytes == sum(f.bytes for f in done.files) > 0
        assert published(out / job.id) == ["manifest.json", *(f.path for f in done.files)]
        listed = await service.list()
        assert [j.id for j in listed] == [job.id] and listed[0].state == "done"
    finally:
        await service.close()


async def test_jobs_and_their_history_survive_a_restart(filled, out):
    service = ExportService(filled, export_dir=str(out))
    await service.start()
    job = await service.submit("csv", ExportRequest())
    await service.wait(job.id, timeout=60)
    await service.close()
    await filled.close()
    await filled.start()
    again = ExportService(filled, export_dir=str(out))
    await again.start()
    try:
        restored = await again.get(job.id)
        assert restored.state == "done" and restored.rows == 500 and restored.files[0].path == "part-00000.csv"
    finally:
        await again.close()


class _SlowWriter:
    """A parquet writer that blocks on every batch until the test lets it go."""

    compressions: ClassVar[tuple[str, ...]] = ("none",)
    default_compression: ClassVar[str] = "none"
    nested_types: ClassVar[bool] = True
    gate = threading.Event()
    entered = threading.Event()

    def extension(self, options: WriterOptions) -> str:
        return "parquet"

    def open(self, sink: BinaryIO, schema: pa.Schema, options: WriterOptions) -> None:
        self._writer = pq.ParquetWriter(sink, schema)

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)
        type(self).entered.set()
        type(self).gate.wait(30)

    def close(self) -> None:
        self._writer.close()


async def _slow_service(filled: Any, out: Path, **options: Any) -> ExportService:
    """A started service with `slow-parquet` registered and its gate closed: jobs hold in their first write."""
    register_exporter("slow-parquet", _SlowWriter)
    _SlowWriter.gate.clear()
    _SlowWriter.entered.clear()
    service = ExportService(filled, export_dir=str(out), **options)
    await service.start()
    return service


async def test_a_cancelled_job_publishes_nothing(filled, out):
    service = await _slow_service(filled, out)
    try:
        job = await service.submit("slow-parquet", ExportRequest(chunk_rows=100))
        await asyncio.to_thread(_SlowWriter.entered.wait, 30)
        running = await service.get(job.id)
        assert running.state == "running" and running.rows_total == 500
        cancelling = asyncio.create_task(service.cancel(job.id))
        await asyncio.sleep(0.05)
        _SlowWriter.gate.set()
        cancelled = await cancelling
        assert cancelled.state == "cancelled"
        assert published(out) == []
        assert not list(out.rglob(".staging-*"))
        assert not (out / job.id).exists(), "no empty directory named after the job"
    finally:
        _SlowWriter.gate.set()
        await service.close()


async def test_an_interrupted_job_is_marked_failed_on_restart_and_its_partial_files_removed(filled, out):
    service = await _slow_service(filled, out)
    job = await service.submit("slow-parquet", ExportRequest(chunk_rows=100))
    await asyncio.to_thread(_SlowWriter.entered.wait, 30)
    assert list(out.rglob(".staging-*/*.parquet"))  # a partial file exists, staged
    # The process "dies": its task is dropped without any clean-up running.
    task = service._active[job.id].task
    assert task is not None
    service._active.clear()
    service._sweeper.cancel()  # type: ignore[union-attr]
    # It died while publishing: one file had its final name already, without a manifest.
    (out / job.id / "part-00000.parquet").write_bytes(b"PAR1")
    (out / "other-export").mkdir()
    restarted = ExportService(filled, export_dir=str(out))
    await restarted.start()
    try:
        failed = await restarted.get(job.id)
        assert failed.state == "failed" and "interrupted" in (failed.error or "")
        assert published(out) == []
        assert not list(out.rglob(".staging-*"))
        assert not (out / job.id).exists()
        assert (out / "other-export").is_dir()
    finally:
        _SlowWriter.gate.set()
        await asyncio.gather(task, return_exceptions=True)
        await restarted.close()


async def test_a_restart_that_cannot_mark_an_interrupted_job_still_starts_and_the_sweep_marks_it_later(filled, out):
    """On a full disk the job's row cannot be written: the process must start anyway (it serves reads)."""
    service = await _slow_service(filled, out)
    job = await service.submit("slow-parquet", ExportRequest(chunk_rows=100))
    await asyncio.to_thread(_SlowWriter.entered.wait, 30)
    task = service._active[job.id].task
    assert task is not None
    service._active.clear()
    service._sweeper.cancel()  # type: ignore[union-attr]
    jobs_table = f"{filled.database}.export_jobs"
    await filled.execute(f"ALTER TABLE {jobs_table} ADD CONSTRAINT refuse_all CHECK 0")
    # Its row never goes stale: the process owns the embedded warehouse, so the job is dead anyway.
    restarted = ExportService(filled, export_dir=str(out), stale_after_seconds=3600, heartbeat_seconds=0.05)
    try:
        await restarted.start()
        assert (await restarted.get(job.id)).state == "running"
        assert restarted.interrupted_marked == 0
        await filled.execute(f"ALTER TABLE {jobs_table} DROP CONSTRAINT refuse_all")
        for _ in range(100):
            if (await restarted.get(job.id)).state != "running":
                break
            await asyncio.sleep(0.05)
        failed = await restarted.get(job.id)
        assert failed.state == "failed" and "interrupted" in (failed.error or "")
        assert restarted.interrupted_marked == 1
    finally:
        _SlowWriter.gate.set()
        await asyncio.gather(task, return_exceptions=True)
        await restarted.close()


async def test_download_streams_one_file_or_a_zip_of_many_with_the_manifest(filled, out):
    service = ExportService(filled, export_dir=str(out))
    await service.start()
    try:
        single = await service.wait((await service.submit("arrow", ExportRequest())).id, timeout=60)
        download = await service.download(single.id)
        assert download.filename.endswith(".arrow")
        data = b"".join(download.chunks)
        assert pa.ipc.open_file(pa.BufferReader(data)).read_all().num_rows == 500
        many = await service.wait((await service.submit("csv", ExportRequest(partition_by=["dex"]))).id, timeout=60)
        download = await service.download(many.id)
        assert download.media_type == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(b"".join(download.chunks)))
        assert sorted(archive.namelist()) == sorted([f.path for f in many.files] + ["manifest.json"])
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest["rows"] == 500
    finally:
        await service.close()


async def test_an_unknown_format_lists_the_known_ones(filled, out):
    service = ExportService(filled, export_dir=str(out))
    with pytest.raises(UnknownFormat) as caught:
        await service.submit("xlsx", ExportRequest())
    assert {"csv", "parquet", "json", "hdf5", "arrow", "tfrecord"} <= set(caught.value.known)


class _TsvWriter:
    """A user-defined format: tab-separated signature and profit."""

    compressions: ClassVar[tuple[str, ...]] = ("none",)
    default_compression: ClassVar[str] = "none"
    nested_types: ClassVar[bool] = False

    def extension(self, options: WriterOptions) -> str:
        return "tsv"

    def open(self, sink: BinaryIO, schema: pa.Schema, options: WriterOptions) -> None:
        self._sink = sink

    def write(self, batch: pa.RecordBatch) -> None:
        for signature, profit in zip(
            batch.column("signature").to_pylist(), batch.column("net_profit_sol").to_pylist(), strict=True
        ):
            self._sink.write(f"{signature}\t{profit}\n".encode())

    def close(self) -> None:
        pass


async def test_a_registered_custom_format_exports_without_code_changes(filled, out):
    register_exporter("tsv", _TsvWriter)
    service = ExportService(filled, export_dir=str(out))
    await service.start()
    try:
        job = await service.wait(
            (await service.submit("tsv", ExportRequest(columns=["signature", "net_profit_sol"]))).id, timeout=60
        )
        assert job.state == "done"
        lines = (out / job.id / "part-00000.tsv").read_text().splitlines()
        assert len(lines) == 500 and lines[0].count("\t") == 1
    finally:
        await service.close()


async def test_an_s3_destination_gets_the_files_and_manifest_and_no_credentials_are_echoed(
    filled, out, s3_options, s3_bucket
):
    service = ExportService(filled, export_dir=str(out), storage_options=s3_options)
    await service.start()
    try:
        job = await service.submit("parquet", ExportRequest(destination=f"s3://{s3_bucket}/nightly/", chunk_rows=300))
        done = await service.wait(job.id, timeout=60)
        assert done.state == "done", done.error
        fs = s3fs.S3FileSystem(**s3_options["s3"])
        prefix = f"{s3_bucket}/nightly/{job.id}"
        keys = sorted(k.removeprefix(prefix + "/") for k in fs.find(f"{s3_bucket}/nightly/"))
        assert keys == ["manifest.json", "part-00000.parquet", "part-00001.parquet"]
        with fs.open(f"{prefix}/part-00000.parquet", "rb") as handle:
            assert pq.read_table(handle).num_rows == 300
        shown = json.dumps([done.destination, done.request.destination, str(done)])
        assert "testing" not in shown and done.destination == f"s3://{s3_bucket}/nightly/{job.id}"
        download = await service.download(job.id)
        assert zipfile.ZipFile(io.BytesIO(b"".join(download.chunks))).read("manifest.json")
    finally:
        await service.close()


async def test_a_failed_s3_export_leaves_no_final_named_object(filled, out, s3_options, s3_bucket):
    service = await _slow_service(filled, out, storage_options=s3_options)
    try:
        job = await service.submit("slow-parquet", ExportRequest(destination=f"s3://{s3_bucket}/x", chunk_rows=100))
        await asyncio.to_thread(_SlowWriter.entered.wait, 30)
        cancelling = asyncio.create_task(service.cancel(job.id))
        await asyncio.sleep(0.05)
        _SlowWriter.gate.set()
        assert (await cancelling).state == "cancelled"
        fs = s3fs.S3FileSystem(**s3_options["s3"])
        fs.invalidate_cache()
        assert fs.find(f"{s3_bucket}/") == []
    finally:
        _SlowWriter.gate.set()
        await service.close()


async def test_a_destination_with_embedded_credentials_is_refused(filled, out):
    from arbitrage.errors import ValidationError

    service = ExportService(filled, export_dir=str(out))
    with pytest.raises(ValidationError) as caught:
        await service.submit("csv", ExportRequest(destination="s3://key:secret@bucket/prefix"))
    assert caught.value.field == "destination"


async def test_cancelling_a_queued_job_does_not_wait_for_a_free_slot(filled, out):
    service = await _slow_service(filled, out, max_concurrent_jobs=1)
    try:
        # Five blocked writes of 100 rows: the running job holds the only slot far longer than cancel waits.
        running = await service.submit("slow-parquet", ExportRequest(chunk_rows=100))
        await asyncio.to_thread(_SlowWriter.entered.wait, 30)
        queued = await service.submit("csv", ExportRequest())
        cancelled = await service.cancel(queued.id)
        assert cancelled.state == "cancelled" and cancelled.rows == 0
        assert (await service.get(running.id)).state == "running"
        assert [job.state for job in await service.list(state="cancelled")] == ["cancelled"]
        _SlowWriter.gate.set()
        assert (await service.wait(running.id, timeout=60)).state == "done"
        later = await service.submit("csv", ExportRequest())
        assert (await service.wait(later.id, timeout=60)).state == "done"  # the slot was given back
    finally:
        _SlowWriter.gate.set()
        await service.close()


class _GatedWriter:
    """A tiny text writer that blocks in file number `block_at` until released, or fails in it."""

    compressions: ClassVar[tuple[str, ...]] = ("none",)
    default_compression: ClassVar[str] = "none"
    nested_types: ClassVar[bool] = True
    opened = 0
    block_at = 0
    fail = False
    gate = threading.Event()
    entered = threading.Event()

    @classmethod
    def reset(cls, block_at: int, *, fail: bool = False) -> None:
        cls.opened, cls.block_at, cls.fail = 0, block_at, fail
        cls.gate.clear()
        cls.entered.clear()

    def extension(self, options: WriterOptions) -> str:
        return "txt"

    def open(self, sink: BinaryIO, schema: pa.Schema, options: WriterOptions) -> None:
        self._sink = sink
        type(self).opened += 1
        self._number = type(self).opened

    def write(self, batch: pa.RecordBatch) -> None:
        if self._number == type(self).block_at:
            if type(self).fail:
                raise OSError("disk full")
            type(self).entered.set()
            type(self).gate.wait(30)
        self._sink.write(f"{batch.num_rows}\n".encode())

    def close(self) -> None:
        pass


async def test_a_running_jobs_heartbeat_stores_its_counts_not_its_growing_file_list(filled, out):
    """With thousands of files, rewriting the whole list every beat made each beat cost more."""
    register_exporter("gated", _GatedWriter)
    _GatedWriter.reset(block_at=400)
    service = ExportService(filled, export_dir=str(out), heartbeat_seconds=0.05)
    await service.start()
    observer = ExportService(filled, export_dir=str(out))  # reads the stored row, as another process would
    try:
        job = await service.submit("gated", ExportRequest(chunk_rows=1, columns=["signature"]))
        await asyncio.to_thread(_GatedWriter.entered.wait, 30)
        for _ in range(200):
            stored = await observer.get(job.id)
            if stored.rows == 399:
                break
            await asyncio.sleep(0.05)
        assert stored.state == "running" and stored.rows == 399 and stored.rows_total == 500
        assert stored.progress == pytest.approx(399 / 500) and stored.bytes > 0
        beats = await filled.query_arrow(
            f"SELECT length(files) AS n FROM {filled.database}.export_jobs WHERE id = {{id:String}}", {"id": job.id}
        )
        assert max(beats.column("n").to_pylist()) < 100  # 399 files listed: ~54 kB
        assert len((await service.get(job.id)).files) == 399  # the running process still shows them
        _GatedWriter.gate.set()
        done = await service.wait(job.id, timeout=60)
        final = await observer.get(job.id)
        assert final.state == "done" and len(final.files) == 500 and final.files == done.files
    finally:
        _GatedWriter.gate.set()
        await service.close()


async def test_a_failed_job_lists_no_files_because_its_written_files_were_deleted(filled, out):
    register_exporter("gated", _GatedWriter)
    _GatedWriter.reset(block_at=3, fail=True)
    service = ExportService(filled, export_dir=str(out))
    await service.start()
    try:
        job = await service.submit("gated", ExportRequest(chunk_rows=100, columns=["signature"]))
        failed = await service.wait(job.id, timeout=60)
        assert failed.state == "failed" and "disk full" in (failed.error or "")
        assert not list(out.rglob("*.txt"))
        assert failed.files == [] and (await ExportService(filled, export_dir=str(out)).get(job.id)).files == []
    finally:
        await service.close()


async def test_a_job_queued_behind_a_long_one_is_not_taken_for_dead_by_another_process(filled, out):
    """Another process's sweep fails jobs whose row stopped moving; a queued job's row must move too."""
    service = await _slow_service(filled, out, max_concurrent_jobs=1, heartbeat_seconds=0.05)
    other_process = ExportService(filled, export_dir=str(out), stale_after_seconds=0.5)
    try:
        running = await service.submit("slow-parquet", ExportRequest(chunk_rows=100))
        await asyncio.to_thread(_SlowWriter.entered.wait, 30)
        queued = await service.submit("csv", ExportRequest())
        await asyncio.sleep(1.0)
        assert await other_process.fail_interrupted() == []
        assert (await other_process.get(queued.id)).state == "queued"
        _SlowWriter.gate.set()
        assert (await service.wait(running.id, timeout=60)).state == "done"
        assert (await service.wait(queued.id, timeout=60)).state == "done"
    finally:
        _SlowWriter.gate.set()
        await service.close()


async def test_a_job_running_at_shutdown_ends_failed_as_interrupted_not_cancelled(filled, out):
    """Nobody cancelled it: it reads as a crash would, and its staged files are gone."""
    service = await _slow_service(filled, out)
    job = await service.submit("slow-parquet", ExportRequest(chunk_rows=100))
    await _close_while_writing(service)
    stored = await ExportService(filled, export_dir=str(out)).get(job.id)
    assert stored.state == "failed" and "interrupted" in (stored.error or "") and stored.files == []
    assert published(out) == [] and not list(out.rglob(".staging-*"))
    assert not (out / job.id).exists()


async def test_a_cancel_sent_to_another_process_stops_the_running_job_in_its_owner_and_answers_202_until_then(
    filled, out
):
    """With several processes on one ClickHouse, `DELETE /exports/{id}` may reach one that does not run the job."""
    # Not the warehouse's sole owner, as on a shared ClickHouse: it leaves the owner's job alone.
    requester = ExportService(filled, export_dir=str(out), heartbeat_seconds=0.05, sole_owner=False)
    async with export_api(filled, load_settings(env={}), requester) as api:
        owner = await _slow_service(filled, out, heartbeat_seconds=0.05)
        try:
            job = await owner.submit("slow-parquet", ExportRequest(chunk_rows=100))
            await asyncio.to_thread(_SlowWriter.entered.wait, 30)
            requested = await api.delete(f"/exports/{job.id}")
            assert requested.status_code == 202 and requested.json()["state"] == "running"
            for _ in range(600):  # the owner sees the request on a heartbeat
                if owner._active[job.id].cancel.is_set():
                    break
                await asyncio.sleep(0.05)
            _SlowWriter.gate.set()
            stopped = await wait_done(api, job.id)
            assert stopped["state"] == "cancelled" and stopped["files"] == []
            assert published(out) == [] and not list(out.rglob(".staging-*"))
            again = await api.delete(f"/exports/{job.id}")
            assert again.status_code == 200 and again.json()["state"] == "cancelled"
        finally:
            _SlowWriter.gate.set()
            await owner.close()


async def test_a_job_queued_in_another_process_is_cancelled_from_this_one(filled, out):
    owner = await _slow_service(filled, out, max_concurrent_jobs=1, heartbeat_seconds=0.05)
    other_process = ExportService(filled, export_dir=str(out))
    try:
        running = await owner.submit("slow-parquet", ExportRequest(chunk_rows=100))
        await asyncio.to_thread(_SlowWriter.entered.wait, 30)
        queued = await owner.submit("csv", ExportRequest())
        cancelled = await other_process.cancel(queued.id)  # waits for the owner to act
        assert cancelled.state == "cancelled" and cancelled.rows == 0
        assert (await owner.get(queued.id)).state == "cancelled"
        assert (await other_process.get(running.id)).state == "running"
        _SlowWriter.gate.set()
        assert (await owner.wait(running.id, timeout=60)).state == "done"
        assert published(out / queued.id) == []
    finally:
        _SlowWriter.gate.set()
        await owner.close()


async def test_a_job_whose_process_dies_before_reading_a_cancel_asked_elsewhere_ends_cancelled_not_failed(filled, out):
    """The user asked to cancel it: the clean-up after the crash must not call it an interrupted run (retried)."""
    owner = await _slow_service(filled, out, heartbeat_seconds=3600)  # it dies before its next beat
    requester = ExportService(filled, export_dir=str(out), heartbeat_seconds=0.05)
    sweeper = ExportService(filled, export_dir=str(out), stale_after_seconds=0.5)
    job = await owner.submit("slow-parquet", ExportRequest(chunk_rows=100))
    await asyncio.to_thread(_SlowWriter.entered.wait, 30)
    dead = owner._active[job.id]
    try:
        assert (await requester.cancel(job.id)).state == "running"  # asked, not done yet
        # The owner "dies": its job never beats or saves again, nothing of its clean-up runs.
        owner._active.clear()
        owner._sweeper.cancel()  # type: ignore[union-attr]
        for _ in range(100):  # until the job's row is older than the sweeper's stale time
            if ended := await sweeper.fail_interrupted():
                break
            await asyncio.sleep(0.05)
        assert ended == [job.id]
        stored = await requester.get(job.id)
        assert stored.state == "cancelled" and stored.error is None and stored.files == []
        assert published(out) == [] and not list(out.rglob(".staging-*"))
    finally:
        dead.cancel.set()
        _SlowWriter.gate.set()
        await asyncio.gather(dead.task, return_exceptions=True)  # type: ignore[arg-type]


async def test_a_job_asked_elsewhere_to_cancel_ends_cancelled_when_its_process_shuts_down_before_reading_it(
    filled, out
):
    """A shutdown between the request and the owner's next heartbeat must not turn the cancel into a retried run."""
    owner = await _slow_service(filled, out, heartbeat_seconds=3600)
    requester = ExportService(filled, export_dir=str(out), heartbeat_seconds=0.05)
    job = await owner.submit("slow-parquet", ExportRequest(chunk_rows=100))
    await asyncio.to_thread(_SlowWriter.entered.wait, 30)
    assert (await requester.cancel(job.id)).state == "running"
    await _close_while_writing(owner)
    stored = await requester.get(job.id)
    assert stored.state == "cancelled" and stored.error is None and stored.files == []
    assert published(out) == [] and not list(out.rglob(".staging-*"))


class _DiskFillingWriter(_GatedWriter):
    """Fails as a full disk would: the warehouse refuses inserts too, so the job's last row cannot be stored."""

    warehouse: ClassVar[EmbeddedWarehouse]

    def write(self, batch: pa.RecordBatch) -> None:
        type(self).warehouse.fail("Cannot reserve 1.00 MiB, not enough space. (NOT_ENOUGH_SPACE)")
        raise OSError("No space left on device")


async def test_a_job_whose_end_cannot_be_stored_shows_how_it_ended_and_is_stored_once_inserts_pass(filled, out):
    """Before, it showed `running` (its last stored row) until a restart marked it interrupted."""
    register_exporter("disk-filling", _DiskFillingWriter)
    _DiskFillingWriter.warehouse = filled
    service = ExportService(filled, export_dir=str(out), heartbeat_seconds=0.05, stale_after_seconds=0.1)
    await service.start()
    try:
        job = await service.submit("disk-filling", ExportRequest(columns=["signature"]))
        failed = await service.wait(job.id, timeout=60)
        assert failed.state == "failed" and "No space left" in (failed.error or "")
        filled.fail(None)
        observer = ExportService(filled, export_dir=str(out))  # reads the stored row, as another process would
        for _ in range(100):
            stored = await observer.get(job.id)
            if stored.state != "running":
                break
            await asyncio.sleep(0.05)
        assert (stored.state, stored.error) == ("failed", failed.error)
    finally:
        filled.fail(None)
        await service.close()


async def _close_while_writing(service: ExportService) -> None:
    """Shut `service` down while its slow export is writing (waits until it is), then let the writer go."""
    try:
        await asyncio.to_thread(_SlowWriter.entered.wait, 30)
        closing = asyncio.create_task(service.close())
        await asyncio.sleep(0.05)
        _SlowWriter.gate.set()
        await closing
    finally:
        _SlowWriter.gate.set()
