"""Export jobs: accepted at once, run in the background, persisted in the warehouse.

A job row lives in `export_jobs` (ReplacingMergeTree: each update inserts the whole row
with a higher `version`, which is also the row's heartbeat in nanoseconds). A queued or
running job refreshes its row every few seconds (state and counters; the file list only
goes into the final row); a job whose row stops moving (its process died) is marked failed
as interrupted: with the embedded warehouse (one process owns it) at start-up and by the
periodic sweep, whatever its row's age; otherwise by the sweep once the row is stale. A job
stopped by a shutdown ends the same way. Files are staged and committed by `run_export`, so
a job that did not finish never published anything under a final name.

A job runs in the process that accepted it. A cancel asked of another process (several
processes on one ClickHouse) is stored in `export_cancels`; the owner reads it on the job's
next heartbeat and stops the job, queued or running, as if it had been asked itself. A job
whose process stops or dies before that heartbeat still ends `cancelled`, not failed as
interrupted: the shutdown and the clean-up after a crash look for a request first, so a
schedule does not retry a run someone cancelled.

A job records who submitted it (`principal`, never a credential). Given an owner, `get`,
`list`, `cancel` and `download` treat another owner's job as one that does not exist, so
an id someone else holds tells nothing.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import io
import logging
import os
import secrets
import socket
import threading
import time
import zipfile
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import msgspec
import pyarrow as pa
from prometheus_client import Counter

from arbitrage.clock import utc_now
from arbitrage.errors import ArbitrageError
from arbitrage.export._manifest import ColumnDescription, FileInfo
from arbitrage.export._request import ExportRequest
from arbitrage.export._run import (
    ExportCancelled,
    ExportPlan,
    ExportProgress,
    plan_export,
    run_export,
    table_columns,
)
from arbitrage.export._sink import MANIFEST_NAME, Destination, redact_url
from arbitrage.security import check_destination, check_destination_form, visible_to
from arbitrage.storage import Warehouse, ch_time
from arbitrage.telemetry import METRICS, traced

log = logging.getLogger(__name__)

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
ACTIVE_STATES: tuple[JobState, ...] = ("queued", "running")
JOBS_TABLE = "export_jobs"
CANCELS_TABLE = "export_cancels"
HEARTBEAT_SECONDS = 5.0
INTERRUPTED_ERROR = "interrupted: the process running this export stopped before it finished"
"""The error of a job whose process died or stopped: schedules recognise it to count and retry the run."""

JOBS_FINISHED = Counter(
    "arbitrage_export_jobs",
    "Export jobs finished, by format and final state.",
    ["format", "state"],
    registry=METRICS.registry,
)
ROWS_EXPORTED = Counter("arbitrage_export_rows", "Rows written by finished exports.", registry=METRICS.registry)

_BUILTIN = frozenset({"csv", "parquet", "json", "hdf5", "arrow", "tfrecord"})
_MEDIA_TYPES = {
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.file",
    "arrows": "application/vnd.apache.arrow.stream",
    "csv": "text/csv",
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "h5": "application/x-hdf5",
    "tfrecord": "application/octet-stream",
    "gz": "application/gzip",
    "zst": "application/zstd",
    "lz4": "application/octet-stream",
}


class JobNotFound(ArbitrageError):
    """No export job has this id."""


class JobNotDownloadable(ArbitrageError):
    """There is nothing to download: the job has not finished successfully, or its files are gone."""


class ExportJob(msgspec.Struct, kw_only=True):
    """An export job as `GET /exports/{id}` shows it."""

    id: str
    state: JobState
    format: str
    request: ExportRequest
    destination: str
    """Where the files are (credentials removed)."""
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    rows: int = 0
    """Rows written so far."""
    rows_total: int = 0
    """Rows the export will write (known once it runs)."""
    bytes: int = 0
    progress: float = 0.0
    """Fraction done, 0 to 1."""
    files: list[FileInfo] = []
    """Files written: stored once the job is done; while it runs, only its own process lists them."""
    error: str | None = None
    schedule_id: str | None = None
    due_at: datetime | None = None
    ingested_after: datetime | None = None
    watermark: datetime | None = None
    """Upper bound of `ingested_at` the export covered (its source watermark)."""
    attempt: int = 1
    principal: str | None = None
    """Who submitted it (`Identity.principal`; a scheduled run: who created the schedule). With auth on,
    only they and admins see it; None: no one recorded, admins only."""


class Download(msgspec.Struct, frozen=True):
    """A finished job's result as one file: the data file itself or a zip of all files."""

    filename: str
    media_type: str
    chunks: Iterator[bytes]


@dataclass
class _Active:
    job: ExportJob
    plan: ExportPlan
    progress: ExportProgress
    cancel: threading.Event
    """Read by the export's worker threads."""
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    """Set with `cancel`, awaited by a job still waiting for a slot."""
    task: asyncio.Task[None] | None = None
    interrupted: bool = False
    """Stopped because the process stops, not by a user: the job ends failed, as after a crash
    (unless a cancel had been asked of it through `export_cancels`)."""


def _stop(active: _Active) -> None:
    active.cancel.set()
    active.stopped.set()


def _end_stopped(active: _Active, *, cancel_asked: bool = False) -> None:
    """The final state of a job that stopped early: cancelled by a user, or interrupted by a shutdown.

    `cancel_asked`: a user asked another process to cancel it before the shutdown came.
    """
    if active.interrupted and not cancel_asked:
        active.job.state = "failed"
        active.job.error = INTERRUPTED_ERROR
    else:
        active.job.state = "cancelled"


class ExportService:
    """Accepts, runs, tracks, cancels and serves export jobs.

    Args:
        warehouse: where rows come from and jobs are recorded.
        export_dir: default destination; each job writes into `<destination>/<job id>/`.
        storage_options: fsspec options per protocol, e.g. `{"s3": {"key": …, "secret": …,
            "endpoint_url": …}}`; never shown in responses or stored.
        max_concurrent_jobs: jobs that run at once; others wait queued.
        stale_after_seconds: a running job whose row has not moved for this long belongs to
            a dead process and is marked failed.
        heartbeat_seconds: how often a queued or running job refreshes its row (and looks
            for a cancel asked of another process); well below `stale_after_seconds`.
        descriptions: column descriptions for manifests (default `column_descriptions()`).
        destination_roots: where jobs may write besides `export_dir` (`auth.export_roots`),
            checked at every submission, so a schedule's destination that a later config no
            longer allows fails its runs; None: any canonical destination (a library user).
    """

    def __init__(
        self,
        warehouse: Warehouse,
        *,
        export_dir: str,
        storage_options: Mapping[str, Mapping[str, Any]] | None = None,
        max_concurrent_jobs: int = 2,
        stale_after_seconds: float = 60.0,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        descriptions: Mapping[str, ColumnDescription] | None = None,
        destination_roots: Sequence[str] | None = None,
        sole_owner: bool | None = None,
    ) -> None:
        self._warehouse = warehouse
        self.sole_owner = warehouse.backend == "embedded" if sole_owner is None else sole_owner
        """No other process runs jobs on this warehouse (embedded: one process owns it), so a queued
        or running job this service does not run is dead, however fresh its row."""
        self._export_dir = export_dir
        self._destination_roots = destination_roots
        self._storage_options = storage_options
        self._slots = asyncio.Semaphore(max_concurrent_jobs)
        self._stale_ns = int(stale_after_seconds * 1e9)
        self.stale_after_seconds = stale_after_seconds
        """A queued or running job whose row is older than this belongs to a dead process."""
        self._heartbeat_seconds = heartbeat_seconds
        self._descriptions = descriptions
        self._active: dict[str, _Active] = {}
        self._last_version = 0
        self._sweeper: asyncio.Task[None] | None = None
        self.interrupted_marked = 0
        """Jobs this service marked interrupted so far: schedules look for their runs when it grows."""
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"

    async def start(self) -> None:
        """Fail jobs that a dead process left running, then keep sweeping for such jobs."""
        await self.fail_interrupted(all_active=self.sole_owner)
        self._sweeper = asyncio.create_task(self._sweep(), name="export-job-sweeper")

    async def close(self) -> None:
        """Stop queued and running jobs and wait for them; they end failed as interrupted (see `interrupt`)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for active in list(self._active.values()):
            active.interrupted = True
            _stop(active)
        tasks = [a.task for a in self._active.values() if a.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def submit(
        self,
        format_name: str,
        request: ExportRequest,
        *,
        schedule_id: str | None = None,
        due_at: datetime | None = None,
        ingested_after: datetime | None = None,
        ingested_upto: datetime | None = None,
        attempt: int = 1,
        principal: str = "",
    ) -> ExportJob:
        """Check the request, record a queued job and start it; return at once.

        The destination is refused unless canonical (whoever submits: API, schedule, library),
        so the job writes where the answer says and the stored destination can be read back.

        Raises:
            UnknownFormat: the format is not registered.
            ValidationError: the request names an unknown column, codec, bad range, a
                non-canonical destination, ….
        """
        if request.destination and self._destination_roots is not None:
            check_destination(request.destination, export_dir=self._export_dir, roots=self._destination_roots)
        elif request.destination:
            check_destination_form(request.destination)
        plan = plan_export(format_name, request, await table_columns(self._warehouse))
        now = utc_now()
        job, url = self._new_job(
            f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}",
            format_name,
            request,
            created_at=now,
            schedule_id=schedule_id,
            due_at=due_at,
            ingested_after=ingested_after,
            watermark=ingested_upto,
            attempt=attempt,
            principal=principal or None,
        )
        active = _Active(job=job, plan=plan, progress=ExportProgress(), cancel=threading.Event())
        self._active[job.id] = active
        await self._save(job)
        active.task = asyncio.create_task(self._run(active, url), name=f"export-{job.id}")
        return job

    async def record_unstarted(
        self,
        format_name: str,
        request: ExportRequest,
        *,
        schedule_id: str,
        due_at: datetime,
        claimed_at: datetime,
        error: str,
        principal: str = "",
    ) -> ExportJob:
        """Store, as failed with `error`, a scheduled run whose process stopped before it submitted a job.

        The id is derived from the schedule and due time, so processes that record the same
        run store one job (one row id); `claimed_at` is its creation time.
        """
        digest = hashlib.sha256(f"{schedule_id}@{due_at.isoformat()}".encode()).hexdigest()[:8]
        job, _ = self._new_job(
            f"{claimed_at:%Y%m%dT%H%M%SZ}-{digest}",
            format_name,
            request,
            created_at=claimed_at,
            schedule_id=schedule_id,
            due_at=due_at,
            principal=principal or None,
        )
        job.state = "failed"
        job.error = error
        job.finished_at = utc_now()
        await self._save(job)
        return job

    async def has_scheduled_job(self, schedule_id: str, at: datetime) -> bool:
        """Whether a job of the schedule is due at `at` or was created at `at` (a schedule's claims use both)."""
        return await self._any(
            JOBS_TABLE,
            "schedule_id = {sid:String} AND (due_at = {at:DateTime64(3, 'UTC')} OR created_at = {at:DateTime64(3, 'UTC')})",
            {"sid": schedule_id, "at": ch_time(at)},
        )

    def _new_job(self, job_id: str, format_name: str, request: ExportRequest, **fields: Any) -> tuple[ExportJob, str]:
        """A queued job and the URL it writes to (the job shows it without credentials)."""
        url = f"{(request.destination or self._export_dir).rstrip('/')}/{job_id}"
        job = ExportJob(
            id=job_id,
            state="queued",
            format=format_name,
            request=msgspec.structs.replace(
                request, destination=redact_url(request.destination) if request.destination else None
            ),
            destination=redact_url(url),
            **fields,
        )
        return job, url

    async def get(self, job_id: str, *, principal: str | None = None) -> ExportJob:
        """The job as it is now.

        `principal`: only a job of this owner (`Identity.owner_scope`; "" the unowned ones), None any.

        Raises:
            JobNotFound: no such job, or another owner's: the same answer, so a job id
                someone else holds does not tell that it exists.
        """
        active = self._active.get(job_id)
        job: ExportJob | None
        if active is not None:
            job = self._snapshot(active)
        else:
            rows = await self._query("id = {id:String}", {"id": job_id}, limit=1)
            job = rows[0] if rows else None
        if job is None or not visible_to(job.principal, principal):
            raise JobNotFound(f"no export job {job_id!r}")
        return job

    async def list(
        self,
        *,
        limit: int = 100,
        state: JobState | None = None,
        schedule_id: str | None = None,
        principal: str | None = None,
    ) -> list[ExportJob]:
        """Jobs, newest first; `principal` as in `get`."""
        conditions = ["1"]
        params: dict[str, str] = {}
        if principal is not None:
            conditions.append("principal = {principal:String}")
            params["principal"] = principal
        if state is not None:
            conditions.append("state = {state:String}")
            params["state"] = state
        if schedule_id is not None:
            conditions.append("schedule_id = {schedule_id:String}")
            params["schedule_id"] = schedule_id
        jobs = await self._query(" AND ".join(conditions), params, limit=limit)
        return [self._snapshot(self._active[j.id]) if j.id in self._active else j for j in jobs]

    async def cancel(self, job_id: str, *, principal: str | None = None) -> ExportJob:
        """Ask a queued or running job to stop; a finished job is returned unchanged.

        A job another process runs is asked through `export_cancels` and stops on its next
        heartbeat there; this waits up to two heartbeats for it to end. A returned job still
        queued or running has its cancel requested, not done. `principal` as in `get`.
        """
        job = await self.get(job_id, principal=principal)
        active = self._active.get(job_id)
        if active is None:
            if job.state not in ACTIVE_STATES:
                return job
            await self._warehouse.execute(
                f"INSERT INTO {self._warehouse.database}.{CANCELS_TABLE} "
                "SELECT {id:String}, now64(3), {owner:String}",
                {"id": job_id, "owner": self.owner},
            )
            return await self._await_end(job_id)
        _stop(active)
        if active.task is not None:
            await asyncio.wait([active.task], timeout=30)
        return await self.get(job_id)

    async def interrupt(self, job_id: str) -> ExportJob:
        """Stop a job because this process is stopping, not because anyone cancelled it.

        It ends `failed` with `INTERRUPTED_ERROR`, as it would after a crash, so a schedule
        counts and retries the run after the restart; a cancelled run is not retried. A job
        another process was asked to cancel, which this one had not read yet, ends `cancelled`.
        """
        active = self._active.get(job_id)
        if active is None:
            return await self.get(job_id)
        active.interrupted = True
        _stop(active)
        if active.task is not None:
            await asyncio.wait([active.task], timeout=30)
        return await self.get(job_id)

    async def wait(self, job_id: str, timeout: float | None = None) -> ExportJob:
        """The job once it is no longer queued or running (for the CLI, schedules, tests)."""
        active = self._active.get(job_id)
        if active is not None and active.task is not None:
            await asyncio.wait_for(asyncio.shield(active.task), timeout)
        return await self.get(job_id)

    async def _await_end(self, job_id: str) -> ExportJob:
        """The stored job once it ended, or as it is after two heartbeats (its owner had time to act)."""
        deadline = time.monotonic() + 2 * self._heartbeat_seconds
        while True:
            job = await self.get(job_id)
            if job.state not in ACTIVE_STATES or time.monotonic() >= deadline:
                return job
            await asyncio.sleep(self._heartbeat_seconds / 10)

    async def download(self, job_id: str, *, principal: str | None = None) -> Download:
        """A finished job's single file, or a zip of its files and manifest; `principal` as in `get`.

        Every file is looked up before this returns, so a file that is gone or unreadable is
        an error answer, not a response that breaks off after its headers were sent.

        Raises:
            JobNotFound, JobNotDownloadable.
        """
        job = await self.get(job_id, principal=principal)
        if job.state != "done":
            raise JobNotDownloadable(f"export {job_id} is {job.state}; only done exports can be downloaded")
        single = len(job.files) == 1
        paths = [f.path for f in job.files] + ([] if single else [MANIFEST_NAME])
        try:
            destination = Destination(self._real_destination(job), job.id, self._storage_options)
            await asyncio.to_thread(_check_files, destination, paths)
        except Exception as exc:
            log.warning("export %s cannot be downloaded from %s: %s", job.id, job.destination, exc)
            raise JobNotDownloadable(
                f"export {job_id}'s files cannot be read at {job.destination} ({type(exc).__name__}); "
                "they may have been deleted"
            ) from exc
        if single:
            name = paths[0].rsplit("/", 1)[-1]
            media = _MEDIA_TYPES.get(name.rsplit(".", 1)[-1], "application/octet-stream")
            return Download(f"{job.id}-{name}", media, destination.read_chunks(paths[0]))
        return Download(f"{job.id}.zip", "application/zip", _zip_chunks(destination, paths))

    async def fail_interrupted(self, *, all_active: bool = False) -> builtins.list[str]:
        """End the queued/running jobs of dead processes, delete their staged files; return their ids.

        A job is marked failed as interrupted, unless a cancel was asked of it: its process
        died before it read the request, and the user who asked expects it `cancelled` (a
        schedule retries an interrupted run, not a cancelled one).
        """
        stale_before = time.time_ns() - self._stale_ns
        # A job is ours if it was active when the query started (it may end and leave `_active`
        # while the query runs, its last row unread) or is active now (submitted meanwhile).
        active_before = set(self._active)
        jobs = await self._query("state IN ('queued', 'running')", {}, limit=10_000, with_version=True)
        dead = [
            job
            for job, version in jobs
            if job.id not in active_before and job.id not in self._active and (all_active or version <= stale_before)
        ]
        asked = await self._cancels_requested([job.id for job in dead]) if dead else set()
        failed: builtins.list[str] = []
        cancelled: builtins.list[str] = []
        for job in dead:
            cancel_asked = job.id in asked
            job.state, job.error = ("cancelled", None) if cancel_asked else ("failed", INTERRUPTED_ERROR)
            job.finished_at = utc_now()
            with contextlib.suppress(Exception):
                # Its own directory (`<destination>/<job id>`): whatever it holds is this job's, unfinished.
                await asyncio.to_thread(Destination(self._real_destination(job), job.id, self._storage_options).discard)
            try:
                await self._save(job)
            except Exception as exc:  # a full disk must not stop the process from starting; the sweep retries
                log.warning("export %s was interrupted; it cannot be marked so yet: %s", job.id, exc)
                continue
            (cancelled if cancel_asked else failed).append(job.id)
        self.interrupted_marked += len(failed)
        if failed:
            log.warning("marked %d interrupted export job(s) failed: %s", len(failed), ", ".join(failed))
        if cancelled:
            log.info(
                "marked %d export job(s) cancelled whose process died before it read the request: %s",
                len(cancelled),
                ", ".join(cancelled),
            )
        return failed + cancelled

    async def latest_of_schedules(self) -> dict[str, ExportJob]:
        """Each schedule's newest job, by schedule id (how a schedule notices a run a crash ended)."""
        table = await self._warehouse.query_arrow(
            f"SELECT * FROM {self._warehouse.database}.{JOBS_TABLE} FINAL WHERE schedule_id != '' "
            "ORDER BY created_at DESC, id DESC LIMIT 1 BY schedule_id",
            {},
        )
        return {row["schedule_id"]: _job_from_row(row) for row in table.to_pylist()}

    def _real_destination(self, job: ExportJob) -> str:
        # The stored destination is redacted, but `submit` refused credentials and query
        # strings (they come from storage_options), so it is the URL the job wrote to.
        return job.destination

    @traced("export.job")
    async def _run(self, active: _Active, destination_url: str) -> None:
        job = active.job
        # Queued jobs beat too: a wait for a slot can outlast `stale_after_seconds`, and another
        # process's sweep would take a silent queued row for a dead one.
        heartbeat = asyncio.create_task(self._heartbeat(active))
        try:
            async with self._slot(active):
                job.state = "running"
                job.started_at = utc_now()
                await self._save(job)
                destination = await asyncio.to_thread(Destination, destination_url, job.id, self._storage_options)
                result = await run_export(
                    self._warehouse,
                    active.plan,
                    destination,
                    job_id=job.id,
                    ingested_after=job.ingested_after,
                    ingested_upto=job.watermark or job.created_at,
                    progress=active.progress,
                    cancel=active.cancel,
                    descriptions=self._descriptions,
                )
            job.state = "done"
            job.files = result.files
            job.watermark = result.watermark
        except ExportCancelled:
            asked = False
            if active.interrupted:
                # A shutdown may come between another process's cancel request and the beat that would read it.
                with contextlib.suppress(Exception):
                    asked = await self._cancel_requested(job.id)
            _end_stopped(active, cancel_asked=asked)
        except asyncio.CancelledError:
            _end_stopped(active)
            raise
        except Exception as exc:
            log.exception("export %s failed", job.id)
            job.state = "failed"
            job.error = f"{type(exc).__name__}: {exc}"
        finally:
            heartbeat.cancel()
            # A job that did not finish deleted its staged files: listing them would mislead.
            job = self._snapshot(active, with_files=job.state == "done")
            job.finished_at = utc_now()
            if job.state == "done":
                job.progress = 1.0
            active.job = job
            JOBS_FINISHED.labels(job.format if job.format in _BUILTIN else "custom", job.state).inc()
            if job.state == "done":
                ROWS_EXPORTED.inc(job.rows)
            await self._save_ended(active)

    async def _save_ended(self, active: _Active) -> None:
        """Store an ended job's row, then forget it; while the row cannot be stored (a full disk), the
        job stays in memory, so `get` shows how it ended, and the sweep tries again."""
        try:
            await asyncio.shield(self._save(active.job))
        except Exception as exc:
            log.warning("export %s ended %s; its row could not be stored yet: %s", active.job.id, active.job.state, exc)
        else:
            self._active.pop(active.job.id, None)

    @contextlib.asynccontextmanager
    async def _slot(self, active: _Active) -> AsyncIterator[None]:
        """A run slot; a cancel while queued ends the wait, which a long export may hold for hours.

        Raises:
            ExportCancelled: the job was cancelled before it got a slot.
        """
        acquiring = asyncio.ensure_future(self._slots.acquire())
        stopping = asyncio.ensure_future(active.stopped.wait())
        try:
            await asyncio.wait([acquiring, stopping], return_when=asyncio.FIRST_COMPLETED)
            if active.cancel.is_set():
                raise ExportCancelled(f"export {active.job.id} was cancelled")
        except BaseException:
            await self._abandon(acquiring)
            raise
        finally:
            stopping.cancel()
        try:
            yield
        finally:
            self._slots.release()

    async def _abandon(self, acquiring: asyncio.Future[Any]) -> None:
        """Stop waiting for a slot; give it back if the wait had won it meanwhile."""
        if not acquiring.done():
            acquiring.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acquiring
        if not acquiring.cancelled():
            self._slots.release()

    async def _heartbeat(self, active: _Active) -> None:
        """Store the counters, and stop the job when another process was asked to cancel it.

        The file list goes only into the final row. Rewriting it every beat made each beat
        cost more as the export went on (thousands of partition files: hundreds of kB per
        beat). Nothing needs it before the end: the running process shows it from memory,
        clean-up deletes the staging prefix.
        """
        while True:
            await asyncio.sleep(self._heartbeat_seconds)
            with contextlib.suppress(Exception):
                await self._save(self._snapshot(active, with_files=False))
            if active.cancel.is_set():
                continue
            with contextlib.suppress(Exception):
                if await self._cancel_requested(active.job.id):
                    _stop(active)

    async def _cancel_requested(self, job_id: str) -> bool:
        return await self._any(CANCELS_TABLE, "job_id = {id:String}", {"id": job_id})

    async def _cancels_requested(self, job_ids: builtins.list[str]) -> set[str]:
        """Which of the jobs a cancel was asked of."""
        found = await self._warehouse.query_arrow(
            f"SELECT DISTINCT job_id FROM {self._warehouse.database}.{CANCELS_TABLE} "
            "WHERE has({ids:Array(String)}, job_id)",
            {"ids": job_ids},
        )
        return set(found.column("job_id").to_pylist())

    async def _any(self, table: str, where: str, params: dict[str, Any]) -> bool:
        """Whether `table` has a row matching `where`."""
        counted = await self._warehouse.query_arrow(
            f"SELECT count() AS n FROM {self._warehouse.database}.{table} WHERE {where}", params
        )
        found: bool = counted.column("n")[0].as_py() > 0
        return found

    async def _sweep(self) -> None:
        # A sole owner marks a job no task of its own runs at the next sweep (a start-up on a full
        # disk could not mark it), not once its row goes stale.
        sole = self.sole_owner
        pause = self._heartbeat_seconds if sole else max(self._heartbeat_seconds, self._stale_ns / 2e9)
        while True:
            await asyncio.sleep(pause)
            for active in [a for a in self._active.values() if a.job.finished_at is not None]:
                await self._save_ended(active)
            try:
                await self.fail_interrupted(all_active=sole)
            except Exception:
                log.exception("sweeping interrupted export jobs failed")

    def _snapshot(self, active: _Active, *, with_files: bool = True) -> ExportJob:
        """The job with its live counters; `with_files` adds the files written so far. A finished job as it ended."""
        if active.job.finished_at is not None:
            return active.job
        progress = active.progress
        return msgspec.structs.replace(
            active.job,
            rows=progress.rows,
            rows_total=progress.rows_total,
            bytes=progress.bytes,
            progress=progress.fraction if active.job.state != "queued" else 0.0,
            files=active.job.files or (list(progress.files) if with_files else []),
        )

    def _next_version(self) -> int:
        self._last_version = max(time.time_ns(), self._last_version + 1)
        return self._last_version

    async def _save(self, job: ExportJob) -> None:
        row = {
            "id": job.id,
            "version": self._next_version(),
            "state": job.state,
            "format": job.format,
            "request": msgspec.json.encode(job.request).decode(),
            "destination": job.destination,
            "schedule_id": job.schedule_id or "",
            "due_at": job.due_at,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "rows": job.rows,
            "rows_total": job.rows_total,
            "bytes": job.bytes,
            "progress": job.progress,
            "files": msgspec.json.encode(job.files).decode(),
            "error": job.error or "",
            "ingested_after": job.ingested_after,
            "watermark": job.watermark,
            "attempt": job.attempt,
            "owner": self.owner,
            "principal": job.principal or "",
        }
        await self._warehouse.insert_arrow(JOBS_TABLE, pa.Table.from_pylist([row], schema=_JOB_SCHEMA))

    async def _query(
        self, where: str, params: dict[str, Any], *, limit: int, with_version: bool = False
    ) -> builtins.list[Any]:
        table = await self._warehouse.query_arrow(
            f"SELECT * FROM {self._warehouse.database}.{JOBS_TABLE} FINAL WHERE {where} "
            "ORDER BY created_at DESC, id DESC LIMIT {limit:UInt32}",
            {**params, "limit": str(limit)},
        )
        jobs = []
        for row in table.to_pylist():
            job = _job_from_row(row)
            jobs.append((job, row["version"]) if with_version else job)
        return jobs


_TIME = pa.timestamp("ms", "UTC")
_JOB_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("version", pa.uint64()),
        ("state", pa.string()),
        ("format", pa.string()),
        ("request", pa.string()),
        ("destination", pa.string()),
        ("schedule_id", pa.string()),
        ("due_at", _TIME),
        ("created_at", _TIME),
        ("started_at", _TIME),
        ("finished_at", _TIME),
        ("rows", pa.uint64()),
        ("rows_total", pa.uint64()),
        ("bytes", pa.uint64()),
        ("progress", pa.float64()),
        ("files", pa.string()),
        ("error", pa.string()),
        ("ingested_after", _TIME),
        ("watermark", _TIME),
        ("attempt", pa.uint32()),
        ("owner", pa.string()),
        ("principal", pa.string()),
    ]
)


def _job_from_row(row: dict[str, Any]) -> ExportJob:
    return ExportJob(
        id=row["id"],
        state=row["state"],
        format=row["format"],
        request=msgspec.json.decode(row["request"], type=ExportRequest),
        destination=row["destination"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        rows=row["rows"],
        rows_total=row["rows_total"],
        bytes=row["bytes"],
        progress=row["progress"],
        files=msgspec.json.decode(row["files"], type=list[FileInfo]),
        error=row["error"] or None,
        schedule_id=row["schedule_id"] or None,
        due_at=row["due_at"],
        ingested_after=row["ingested_after"],
        watermark=row["watermark"],
        attempt=row["attempt"],
        principal=row["principal"] or None,
    )


class _ChunkBuffer(io.RawIOBase):
    """A write-only, unseekable stream whose written bytes are taken out as chunks."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._chunks.append(chunk)
        return len(chunk)

    def drain(self) -> Iterator[bytes]:
        chunks, self._chunks = self._chunks, []
        yield from chunks


def _check_files(destination: Destination, paths: list[str]) -> None:
    """Raise unless every file is there, by one fresh listing (not a request per file, nor the cache)."""
    destination.fs.invalidate_cache(destination.root)
    present = set(destination.fs.find(destination.root))
    missing = [path for path in paths if destination.final_path(path) not in present]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(paths)} files missing, e.g. {missing[0]}")


def _zip_chunks(destination: Destination, paths: list[str]) -> Iterator[bytes]:
    """A zip (stored, zip64) of the files, produced while reading them: memory stays flat."""
    buffer = _ChunkBuffer()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for path in paths:
            entry = zipfile.ZipInfo(path, date_time=time.gmtime()[:6])
            with archive.open(entry, "w", force_zip64=True) as member:
                for chunk in destination.read_chunks(path):
                    member.write(chunk)
                    yield from buffer.drain()
            yield from buffer.drain()
    yield from buffer.drain()
