"""Persisted export schedules and the loop that runs them.

Guarantees:
- Schedules live in the warehouse (`schedules`, one row per id, newest version wins) and
  are reloaded on start-up.
- Due times are cron times (UTC). Missed due times (the process was down) coalesce into
  one run at start-up when `run_missed_on_startup`, else they are skipped.
- A due time runs at most once, also with several processes: before running, a process
  claims `(schedule id, due time)` in `schedule_claims` with an insert de-duplication
  token, so only the first claim is stored, and runs only if its owner id reads back.
  Claims are dropped 30 days after they were made (a TTL), long after anything reads them.
- Incremental runs export rows with `previous watermark < ingested_at <= now - lag`; the
  watermark advances only when a run succeeds, so a failed run's rows go out with the next
  one and no row goes out twice.
- The stored schedules are the truth: every process reads them on each tick, and changes and
  run outcomes are applied to the stored schedule, so a schedule created through another
  process runs here too and a stale copy never undoes a change or moves the watermark back.
- A failed run is retried with exponential backoff; failures show in the schedule, in
  `health()` and in Prometheus metrics. A run whose export ended done (its files published)
  while its process stopped or died still advances the watermark, so its rows go out once.
- A run whose process died (its job marked failed as interrupted, at start-up or by the
  export sweep) is a failed run like any other: counted once, by one process (it claims the
  job), and retried while retries are left; its due time is not silently used up. A run
  whose cancel was asked before its process died ends cancelled instead, and is not retried.
- So is a due time whose process died after claiming it but before writing its job row: a
  run stores the due time as `last_due` only once its job row exists (a due time it decides
  to skip, at once), so a claim newer than `last_due` without a job is a run a crash lost.
  Once the claim is older than the export stale time (at start-up with the embedded
  warehouse, at once: no other process can be writing that job), it is recorded as a failed
  job, one per due time whichever processes see it, then counted and retried as above.
- A cron that matches no date (31 February) is refused on input; one found in stored
  schedules (older versions accepted it) leaves that schedule idle, shown with its
  `frequency_error` and in `health()`, without holding up the others.
- A schedule records who created it (`principal`); its runs' jobs are theirs. Given an owner,
  `get`, `list`, `update`, `delete` and `run_now` treat another owner's schedule as one that
  does not exist.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pyarrow as pa
from prometheus_client import Counter, Gauge

from arbitrage.clock import utc_now
from arbitrage.errors import ArbitrageError, ValidationError
from arbitrage.export import (
    ACTIVE_STATES,
    INTERRUPTED_ERROR,
    ExportJob,
    ExportRequest,
    ExportService,
    plan_export,
    redact_url,
    table_columns,
)
from arbitrage.schedule._model import (
    Schedule,
    ScheduleCreate,
    ScheduleDetail,
    cron_error,
    cron_of,
    latest_due,
    next_due,
)
from arbitrage.security import visible_to
from arbitrage.storage import Warehouse, ch_time
from arbitrage.telemetry import METRICS, traced

log = logging.getLogger(__name__)

SCHEDULES_TABLE = "schedules"
_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_.:@ -]+$")
CLAIMS_TABLE = "schedule_claims"
INTERRUPTED_LOOK_SECONDS = 60.0
"""How often the loop looks for runs that another process's shutdown or sweep marked interrupted."""
UNSTARTED_ERROR = "interrupted: the process that claimed this due time stopped before it started the export"
"""The error of the job recorded for a claimed due time whose process died before it submitted a job."""

RUNS = Counter(
    "arbitrage_schedule_runs",
    "Scheduled export runs by outcome (done, failed, cancelled).",
    ["outcome"],
    registry=METRICS.registry,
)
FAILING = Gauge("arbitrage_schedules_failing", "Schedules whose latest run failed.", registry=METRICS.registry)


class ScheduleNotFound(ArbitrageError):
    """No schedule has this id."""


class ScheduleBusy(ArbitrageError):
    """The schedule is running already; a second run would race on its watermark."""


class ScheduleService:
    """Create, change, list and run export schedules.

    Args:
        warehouse: where schedules and claims are stored.
        exports: runs each scheduled export as a job.
        run_missed_on_startup: run once at start-up a schedule whose due time passed while
            the process was down (else wait for its next due time).
        max_retries: extra attempts after a failed run.
        retry_backoff_seconds: wait before the first retry; doubles for each next one.
        poll_seconds: how often the loop looks for due schedules.
        watermark_lag_seconds: incremental runs leave out rows ingested in the last seconds,
            so rows still being inserted are taken by the next run rather than missed.
        clock: current time (tests pass a fake one).
    """

    def __init__(
        self,
        warehouse: Warehouse,
        exports: ExportService,
        *,
        run_missed_on_startup: bool = True,
        max_retries: int = 3,
        retry_backoff_seconds: float = 30.0,
        poll_seconds: float = 15.0,
        watermark_lag_seconds: float = 5.0,
        clock: Callable[[], datetime] | None = None,
        unsettled_since: Callable[[], datetime | None] | None = None,
    ) -> None:
        self._warehouse = warehouse
        self._unsettled_since = unsettled_since
        """This process's insert in flight (`IngestService.unsettled_since`): no watermark passes it."""
        self._exports = exports
        self._run_missed = run_missed_on_startup
        self._max_retries = max_retries
        self._backoff = retry_backoff_seconds
        self._poll = poll_seconds
        self._lag = timedelta(seconds=watermark_lag_seconds)
        self._clock = clock or utc_now
        self._schedules: dict[str, Schedule] = {}
        self._running: dict[str, asyncio.Task[ExportJob | None]] = {}
        self._lock = asyncio.Lock()
        self._loop: asyncio.Task[None] | None = None
        self._last_version = 0
        self._closing = False
        """Set by `close`: runs stopped now are interrupted (retried after a restart), not cancelled."""
        self._interrupted_seen = -1
        """`exports.interrupted_marked` when runs a crash ended were last looked for."""
        self._next_interrupted_look = 0.0
        self.owner = exports.owner + ":" + secrets.token_hex(2)
        # Counted at each scrape, so it is current without anyone asking /health first.
        FAILING.set_function(lambda: sum(1 for s in self._schedules.values() if s.consecutive_failures > 0))

    async def start(self, *, run_loop: bool = True) -> None:
        """Load schedules, count runs a crash ended, skip missed due times unless told to run them, start the loop."""
        self._schedules = {s.id: s for s in await self._load()}
        for schedule in self._schedules.values():
            if schedule.frequency_error:
                log.warning(
                    "schedule %s will not run, its cron %r %s: change its frequency or delete it",
                    schedule.id,
                    schedule.cron,
                    schedule.frequency_error,
                )
        if not self._run_missed:
            now = self._clock()
            for schedule in self._schedules.values():
                if schedule.frequency_error:
                    continue
                due = latest_due(schedule.cron, now)
                if due > (schedule.last_due or schedule.created_at):
                    schedule.last_due = due
                    await self._save(schedule)
        await self._recover_interrupted(at_start=True)
        if run_loop:
            self._loop = asyncio.create_task(self._run_loop(), name="export-schedules")

    async def close(self) -> None:
        """Stop the loop and the runs in progress; their jobs end interrupted, to be retried after a restart."""
        self._closing = True
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        for task in list(self._running.values()):
            task.cancel()
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def create(self, body: ScheduleCreate, *, principal: str = "") -> Schedule:
        """Validate and store a new schedule owned by `principal`. Raises `ValidationError`/`UnknownFormat`."""
        now = self._clock()
        schedule = self._build(f"sch-{secrets.token_hex(6)}", body, created_at=now)
        schedule.principal = principal or None
        await self._check_export(schedule)
        async with self._lock:
            await self._save(schedule)
            self._schedules[schedule.id] = schedule
        return self._view(schedule)

    async def update(self, schedule_id: str, changes: Mapping[str, Any], *, principal: str | None = None) -> Schedule:
        """Apply a partial update (any `ScheduleCreate` field; null clears an option); `principal` as in `get`."""
        async with self._lock:
            current = await self._stored(schedule_id, principal)
            body = current.create_body()
            body.update(changes)
            try:
                parsed = msgspec.convert({k: v for k, v in body.items() if v is not None}, ScheduleCreate)
            except msgspec.ValidationError as exc:
                raise ValidationError(_field_of(str(exc)), str(exc)) from exc
            updated = self._build(current.id, parsed, created_at=current.created_at)
            for name in (
                "watermark",
                "last_due",
                "last_success_at",
                "last_job_id",
                "last_error",
                "consecutive_failures",
                "principal",
            ):
                setattr(updated, name, getattr(current, name))
            if updated.cron != current.cron or (updated.enabled and not current.enabled):
                # From now on: due times of another cron, or of the time it was off, are not caught up.
                updated.last_due = max(current.last_due or current.created_at, self._clock())
            await self._check_export(updated)
            await self._save(updated)
            self._schedules[schedule_id] = updated
        return self._view(updated)

    async def delete(self, schedule_id: str, *, principal: str | None = None) -> None:
        """Remove a schedule; a run in progress is cancelled. `principal` as in `get`."""
        async with self._lock:
            schedule = await self._stored(schedule_id, principal)
            task = self._running.get(schedule_id)
            if task is not None:
                task.cancel()
            self._schedules.pop(schedule_id, None)
            await self._save(schedule, deleted=True)

    async def get(self, schedule_id: str, *, runs: int = 10, principal: str | None = None) -> ScheduleDetail:
        """A schedule with its next run time and its latest runs.

        `principal`: only a schedule of this owner (`Identity.owner_scope`), None any; its runs are
        the owner's jobs.

        Raises:
            ScheduleNotFound: no such schedule, or another owner's (the same answer: an id someone
                else holds does not tell that it exists).
        """
        running = set(self._running)  # before the read: a run that ends during it may have saved after it
        schedule = self._view(await self._stored(schedule_id, principal), running)
        last_runs = await self._exports.list(limit=runs, schedule_id=schedule_id, principal=principal)
        return ScheduleDetail(schedule=schedule, last_runs=last_runs)

    async def list(self, *, principal: str | None = None) -> list[Schedule]:
        """Every schedule (of `principal`, as in `get`), oldest first."""
        running = set(self._running)
        await self._refresh()
        schedules = [s for s in self._schedules.values() if visible_to(s.principal, principal)]
        return [self._view(s, running) for s in sorted(schedules, key=lambda s: s.created_at)]

    async def run_now(self, schedule_id: str, *, principal: str | None = None) -> ExportJob:
        """Run a schedule outside its timetable; returns the started job. `principal` as in `get`.

        Raises:
            ScheduleBusy: a run of this schedule is in progress.
        """
        started: asyncio.Future[ExportJob] = asyncio.get_running_loop().create_future()
        async with self._lock:
            schedule = await self._stored(schedule_id, principal)
            if schedule_id in self._running or await self._runs_elsewhere(schedule_id):
                raise ScheduleBusy(f"schedule {schedule_id} is running")
            self._spawn(schedule, due=None, started=started)
        return await started

    async def wait_idle(self, schedule_id: str) -> None:
        """Wait for the schedule's run in progress, if any (tests, shutdown)."""
        task = self._running.get(schedule_id)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def tick(self) -> builtins.list[str]:
        """Start every schedule that is due now and whose due time this process claims.

        Runs that a stopped or dead process left are counted (and retried) first: at once when
        this process's export sweep marked jobs interrupted (with a shared ClickHouse it marks
        them only after start-up), else once a minute (another process may have marked them).
        """
        await self._refresh()
        if (
            self._exports.interrupted_marked != self._interrupted_seen
            or time.monotonic() >= self._next_interrupted_look
        ):
            await self._recover_interrupted()
        now = self._clock()
        started = []
        for schedule in list(self._schedules.values()):
            if not schedule.enabled or schedule.frequency_error or schedule.id in self._running:
                continue
            due = latest_due(schedule.cron, now)
            if due <= (schedule.last_due or schedule.created_at):
                continue
            if not await self._claim(schedule.id, due):
                schedule.last_due = due  # another process runs it
                continue
            async with self._lock:
                current = await self._reload(schedule.id)
                if current is None:
                    continue
                current.last_due = due
                # Checked again after the awaits: a run started meanwhile (run_now) covers these rows.
                runnable = current.enabled and not current.frequency_error and current.id not in self._running
                if runnable and await self._runs_elsewhere(current.id):
                    log.info("schedule %s skips due time %s: another process is still running it", current.id, due)
                    runnable = False
                if not runnable:
                    await self._save(current)  # skipped on purpose: recovery must not take it for lost
                    continue
                self._spawn(current, due=due)  # `_run` saves `last_due` once the job row exists
            started.append(schedule.id)
        return started

    def health(self) -> dict[str, Any]:
        """`degraded` while any schedule's latest run failed or its cron never fires, naming them."""
        failing = [
            {"id": s.id, "name": s.name, "consecutive_failures": s.consecutive_failures, "last_error": s.last_error}
            for s in self._schedules.values()
            if s.consecutive_failures > 0
        ]
        unrunnable = [
            {"id": s.id, "name": s.name, "cron": s.cron, "frequency_error": s.frequency_error}
            for s in self._schedules.values()
            if s.frequency_error
        ]
        return {
            "status": "degraded" if failing or unrunnable else "healthy",
            "schedules": len(self._schedules),
            "failing": failing,
            "unrunnable": unrunnable,
        }

    def _spawn(
        self,
        schedule: Schedule,
        *,
        due: datetime | None,
        started: asyncio.Future[ExportJob] | None = None,
        attempt: int = 1,
        delay: float = 0.0,
    ) -> None:
        task = asyncio.create_task(
            self._run(schedule.id, due, started, attempt=attempt, delay=delay), name=f"schedule-{schedule.id}"
        )
        self._running[schedule.id] = task
        task.add_done_callback(lambda _: self._running.pop(schedule.id, None))

    @traced("schedule.run")
    async def _run(
        self,
        schedule_id: str,
        due: datetime | None,
        started: asyncio.Future[ExportJob] | None,
        *,
        attempt: int = 1,
        delay: float = 0.0,
    ) -> ExportJob | None:
        """Run attempts from `attempt` on (a later one after `delay`) until one succeeds or retries run out."""
        job: ExportJob | None = None
        while True:
            if delay > 0:
                await asyncio.sleep(delay)
            schedule = self._schedules.get(schedule_id) if attempt == 1 else await self._retrying(schedule_id)
            if schedule is None:
                return job
            upto = self._upto()
            try:
                schedule = await self._caught_up(schedule)
                after = schedule.watermark if schedule.incremental else None
                if after is not None and upto <= after:
                    upto = after
                request = msgspec.structs.replace(schedule.request, destination=schedule.upload_to)
                job = await self._exports.submit(
                    schedule.format,
                    request,
                    schedule_id=schedule.id,
                    due_at=due,
                    ingested_after=after,
                    ingested_upto=upto,
                    attempt=attempt,
                    principal=schedule.principal or "",
                )
                if started is not None and not started.done():
                    started.set_result(job)
                if due is not None and attempt == 1:
                    await self._save_due(schedule_id, due)
                job = await self._exports.wait(job.id)
            except asyncio.CancelledError:
                if job is not None:
                    stopped = await (self._exports.interrupt if self._closing else self._exports.cancel)(job.id)
                    if stopped.state == "done":  # it was publishing its files, which no stop undoes
                        await self._record_done(schedule_id, stopped, upto)
                raise
            except Exception as exc:
                if started is not None and not started.done():
                    started.set_exception(exc)
                    return None
                job = None
                error = f"{type(exc).__name__}: {exc}"
            else:
                error = job.error or job.state
            if job is not None and job.state == "done":
                await self._record_done(schedule_id, job, upto)
                return job
            async with self._lock:
                # As stored, not the copy the run started from: a PATCH or DELETE that reached
                # another process meanwhile must not be undone by saving that copy back.
                schedule = await self._reload(schedule_id)
                if schedule is None:
                    return job
                if job is not None and job.state == "cancelled":
                    RUNS.labels("cancelled").inc()
                    return job
                schedule.consecutive_failures += 1
                schedule.last_error = error
                schedule.last_job_id = job.id if job is not None else schedule.last_job_id
                await self._save(schedule)
            RUNS.labels("failed").inc()
            log.warning("scheduled export %s failed (attempt %d): %s", schedule_id, attempt, error)
            self.health()
            if attempt > self._max_retries:
                return job
            delay = self._retry_delay(attempt)
            attempt += 1

    async def _record_done(self, schedule_id: str, job: ExportJob, upto: datetime) -> None:
        """Store a successful run on the schedule as stored: the watermark moves to what it exported."""
        async with self._lock:
            schedule = await self._reload(schedule_id)  # a change made through another process is kept
            if schedule is None:
                return
            if schedule.incremental:
                schedule.watermark = upto
            schedule.last_success_at = self._clock()
            schedule.last_job_id = job.id
            schedule.last_error = None
            schedule.consecutive_failures = 0
            await self._save(schedule)
        RUNS.labels("done").inc()

    async def _caught_up(self, schedule: Schedule) -> Schedule:
        """The schedule to run from: with its latest run stored if that one's process died before storing it."""
        latest = await self._exports.list(limit=1, schedule_id=schedule.id)
        if not latest or latest[0].state != "done" or latest[0].id == schedule.last_job_id:
            return schedule
        async with self._lock:
            return await self._adopt_done(schedule.id, latest[0]) or schedule

    async def _adopt_done(self, schedule_id: str, job: ExportJob) -> Schedule | None:
        """Store a run whose export ended done but whose process died before it stored that on the schedule.

        Its files and manifest are published: left out, the watermark would stay behind and the
        next run would export its rows again. It is taken only when it started from the stored
        watermark, so the watermark never skips rows; another process storing it too stores the
        same. The caller holds the lock; returns the schedule as stored then (None once deleted).
        """
        schedule = await self._reload(schedule_id)
        if schedule is None or schedule.last_job_id == job.id:
            return schedule
        if schedule.incremental:
            if job.watermark is None or job.ingested_after != schedule.watermark:
                return schedule
            schedule.watermark = job.watermark
        schedule.last_success_at = job.finished_at or self._clock()
        schedule.last_job_id = job.id
        schedule.last_error = None
        schedule.consecutive_failures = 0
        if job.due_at is not None and job.due_at > (schedule.last_due or schedule.created_at):
            schedule.last_due = job.due_at
        await self._save(schedule)
        log.warning("scheduled export %s: stored run %s, which ended done as its process stopped", schedule_id, job.id)
        return schedule

    def _upto(self) -> datetime:
        """Where a run's rows end: the lag before now, and before any insert of this process still
        in flight, whose rows are not visible yet and would be left behind the watermark for good."""
        upto = self._clock() - self._lag
        unsettled = self._unsettled_since() if self._unsettled_since is not None else None
        if unsettled is not None and unsettled <= upto:
            upto = unsettled - timedelta(milliseconds=1)
        return upto

    def _retry_delay(self, failed_attempt: int) -> float:
        return self._backoff * 2.0 ** (failed_attempt - 1)

    async def _save_due(self, schedule_id: str, due: datetime) -> None:
        """Store the claimed due time as `last_due`, now that its job row exists (on the stored schedule:
        another process may have changed it since `tick` read it)."""
        async with self._lock:
            schedule = await self._reload(schedule_id)
            if schedule is not None and due > (schedule.last_due or schedule.created_at):
                schedule.last_due = due
                await self._save(schedule)

    async def _recover_interrupted(self, *, at_start: bool = False) -> None:
        """Count each schedule's newest run that a dead process left as failed; retry it if retries are left.

        Its due time was claimed before the process died, so without this the run would just
        be gone: no failure, no retry. A run counts once: the schedule then names its job as
        `last_job_id`, and of several processes only the one that claims the job counts it.
        Claimed due times that never got a job are recorded as failed jobs first.
        """
        marked = self._exports.interrupted_marked
        everything = at_start and self._exports.sole_owner  # no other process can be claiming
        grace = timedelta(seconds=0 if everything else self._exports.stale_after_seconds)
        await self._record_unstarted(claimed_before=datetime.now(UTC) - grace)
        latest = await self._exports.latest_of_schedules()
        for schedule_id, job in latest.items():
            known = self._schedules.get(schedule_id)
            if job.state == "done" and known is not None and known.last_job_id != job.id:
                async with self._lock:
                    if schedule_id not in self._running:
                        await self._adopt_done(schedule_id, job)
                continue
            if (
                job.state != "failed"
                or job.error not in (INTERRUPTED_ERROR, UNSTARTED_ERROR)
                or known is None
                or known.last_job_id == job.id
                or schedule_id in self._running
            ):
                continue
            if not await self._claim(schedule_id, job.created_at, token=f"{schedule_id}@{job.id}"):
                continue  # another process counts it
            async with self._lock:
                schedule = await self._reload(schedule_id)
                if schedule is None or schedule.last_job_id == job.id or schedule_id in self._running:
                    continue
                schedule.consecutive_failures += 1
                schedule.last_error = job.error
                schedule.last_job_id = job.id
                if job.due_at is not None and job.due_at > (schedule.last_due or schedule.created_at):
                    schedule.last_due = job.due_at  # a run lost before its job row had not stored it
                await self._save(schedule)
                RUNS.labels("failed").inc()
                retry = job.attempt <= self._max_retries and schedule.enabled
                log.warning(
                    "scheduled export %s was interrupted (job %s, attempt %d)%s",
                    schedule_id,
                    job.id,
                    job.attempt,
                    ", retrying" if retry else "",
                )
                if retry:
                    failed_at = job.finished_at or datetime.now(UTC)
                    waited = (datetime.now(UTC) - failed_at).total_seconds()
                    delay = max(0.0, self._retry_delay(job.attempt) - waited)
                    self._spawn(schedule, due=job.due_at, attempt=job.attempt + 1, delay=delay)
        self._interrupted_seen = marked
        self._next_interrupted_look = time.monotonic() + INTERRUPTED_LOOK_SECONDS
        self.health()

    async def _record_unstarted(self, *, claimed_before: datetime) -> None:
        """Record as failed each schedule's newest due time claimed before `claimed_before` that got no job.

        A claim newer than the stored `last_due` means the claiming process has not written
        the job row yet, or died first; after `claimed_before` it is taken for dead. Only
        the newest claim counts: a later run exported the rows of an earlier lost one, as
        missed due times coalesce. The newest claim may also be one `_recover_interrupted`
        made for a job (keyed by the job's `created_at`): that job exists, so it is left too.
        """
        db = self._warehouse.database
        claims = await self._warehouse.query_arrow(
            f"SELECT schedule_id, due_at, claimed_at FROM {db}.{CLAIMS_TABLE} ORDER BY due_at DESC LIMIT 1 BY schedule_id",
            {},
        )
        stored = {s.id: s for s in await self._load()}
        for claim in claims.to_pylist():
            schedule = stored.get(claim["schedule_id"])
            due = claim["due_at"]
            if (
                schedule is None
                or schedule.id in self._running
                or claim["claimed_at"] > claimed_before
                or due <= (schedule.last_due or schedule.created_at)
                or await self._exports.has_scheduled_job(schedule.id, due)
            ):
                continue
            job = await self._exports.record_unstarted(
                schedule.format,
                msgspec.structs.replace(schedule.request, destination=schedule.upload_to),
                schedule_id=schedule.id,
                due_at=due,
                claimed_at=claim["claimed_at"],
                error=UNSTARTED_ERROR,
                principal=schedule.principal or "",
            )
            log.warning(
                "schedule %s: due time %s was claimed but never run; recorded as job %s", schedule.id, due, job.id
            )

    async def _claim(self, schedule_id: str, due: datetime, *, token: str | None = None) -> bool:
        """Claim a due time (or, with its own `token`, another one-off event); True when this process won it."""
        params = {"sid": schedule_id, "due": ch_time(due), "owner": self.owner}
        # SETTINGS takes literals only (no query parameters); the token is built from our own
        # schedule id and a formatted time or job id, checked here to hold nothing but safe characters.
        token = token or f"{schedule_id}@{ch_time(due)}"
        if not _SAFE_TOKEN.match(token):
            raise ValueError(f"unexpected characters in claim token {token!r}")
        table = f"{self._warehouse.database}.{CLAIMS_TABLE}"
        await self._warehouse.execute(
            f"INSERT INTO {table} SETTINGS insert_deduplication_token = '{token}' "
            "SELECT {sid:String}, {due:DateTime64(3, 'UTC')}, {owner:String}, now64(3)",
            params,
        )
        winner = await self._warehouse.query_arrow(
            f"SELECT owner FROM {table} WHERE schedule_id = {{sid:String}} AND due_at = {{due:DateTime64(3, 'UTC')}} "
            "ORDER BY claimed_at LIMIT 1",
            params,
        )
        claimed: bool = winner.num_rows == 1 and winner.column("owner")[0].as_py() == self.owner
        return claimed

    def _build(self, schedule_id: str, body: ScheduleCreate, *, created_at: datetime) -> Schedule:
        if body.destination and body.upload_to:
            raise ValidationError("upload_to", "give upload_to or destination, not both")
        upload_to = body.upload_to or body.destination
        if upload_to and redact_url(upload_to) != upload_to.split("?", 1)[0]:
            raise ValidationError("upload_to", "must not embed credentials; configure them under [export]")
        request_fields = {f: getattr(body, f) for f in ExportRequest.__struct_fields__}
        request_fields["destination"] = None
        return Schedule(
            id=schedule_id,
            name=body.name,
            format=body.format,
            frequency=body.frequency,
            cron=cron_of(body.frequency),
            request=ExportRequest(**request_fields),
            upload_to=upload_to,
            incremental=body.incremental,
            enabled=body.enabled,
            created_at=created_at,
            updated_at=self._clock(),
        )

    async def _check_export(self, schedule: Schedule) -> None:
        plan_export(schedule.format, schedule.request, await table_columns(self._warehouse))

    async def _stored(self, schedule_id: str, principal: str | None = None) -> Schedule:
        """The schedule as stored now (another process may have created or changed it), if `principal`'s.

        Raises:
            ScheduleNotFound: no such schedule, or another owner's.
        """
        schedule = await self._reload(schedule_id)
        if schedule is None or not visible_to(schedule.principal, principal):
            raise ScheduleNotFound(f"no schedule {schedule_id!r}")
        return schedule

    async def _refresh(self) -> None:
        """Replace the schedules in memory by the stored ones.

        Other processes on the same ClickHouse create, change, delete and run schedules: without
        this, one created elsewhere would never run here (nor at all once its process is gone),
        and a stale copy saved back would undo their changes or move the watermark back. A due
        time another process claimed is kept from memory until that process stores it.
        """
        stored = {s.id: s for s in await self._load()}
        for schedule_id, schedule in stored.items():
            known = self._schedules.get(schedule_id)
            if known is not None and known.last_due and known.last_due > (schedule.last_due or schedule.created_at):
                schedule.last_due = known.last_due
        self._schedules = stored

    def _view(self, schedule: Schedule, running: set[str] | None = None) -> Schedule:
        """The schedule as answered. `running`: the schedules running when it was read (default: now).

        Taken before the read, a run said ended has stored everything the answer shows of it;
        taken after, a run that ended during the read showed ended with its watermark unmoved.
        """
        base = max(schedule.last_due or schedule.created_at, schedule.created_at)
        return msgspec.structs.replace(
            schedule,
            next_run_at=next_due(schedule.cron, base) if schedule.enabled and not schedule.frequency_error else None,
            running=schedule.id in (self._running if running is None else running),
        )

    def _next_version(self) -> int:
        self._last_version = max(time.time_ns(), self._last_version + 1)
        return self._last_version

    async def _save(self, schedule: Schedule, *, deleted: bool = False) -> None:
        schedule.updated_at = self._clock()  # the caller answers with the time it stored
        row = {
            "id": schedule.id,
            "version": self._next_version(),
            "deleted": deleted,
            "name": schedule.name,
            "format": schedule.format,
            "frequency": schedule.frequency,
            "cron": schedule.cron,
            "request": msgspec.json.encode(schedule.request).decode(),
            "upload_to": schedule.upload_to or "",
            "incremental": schedule.incremental,
            "enabled": schedule.enabled,
            "created_at": schedule.created_at,
            "updated_at": schedule.updated_at,
            "watermark": schedule.watermark,
            "last_due": schedule.last_due,
            "last_success_at": schedule.last_success_at,
            "last_job_id": schedule.last_job_id or "",
            "last_error": schedule.last_error or "",
            "consecutive_failures": schedule.consecutive_failures,
            "principal": schedule.principal or "",
        }
        await self._warehouse.insert_arrow(SCHEDULES_TABLE, pa.Table.from_pylist([row], schema=_SCHEDULE_SCHEMA))

    async def _retrying(self, schedule_id: str) -> Schedule | None:
        """The schedule as stored, for a retry; None when it is gone or another process runs it now.

        While this run waited to retry, the next due time may have fallen to another process,
        which exported rows and advanced the watermark: the retry starts from there.
        """
        async with self._lock:
            if await self._runs_elsewhere(schedule_id):
                log.info("schedule %s: retry left out, another process is running it", schedule_id)
                return None
            return await self._reload(schedule_id)

    async def _runs_elsewhere(self, schedule_id: str) -> bool:
        """Whether a job of this schedule is queued or running, in any process.

        Two runs at once would both start from the same watermark and export the same rows.
        A job of a process that died counts until the export sweep marks it failed.
        """
        for state in ACTIVE_STATES:
            if await self._exports.list(limit=1, state=state, schedule_id=schedule_id):
                return True
        return False

    async def _reload(self, schedule_id: str) -> Schedule | None:
        """The schedule as stored now, which replaces the one in memory (None, and forgotten, once deleted).

        Other processes on the same ClickHouse run it too: the watermark their runs advanced
        must bound this run, or their rows would go out twice (and saving the stale copy
        would move the stored watermark back).
        """
        stored = await self._load(schedule_id)
        if not stored:
            self._schedules.pop(schedule_id, None)
            return None
        self._schedules[schedule_id] = stored[0]
        return stored[0]

    async def _load(self, schedule_id: str | None = None) -> builtins.list[Schedule]:
        only = "" if schedule_id is None else " AND id = {id:String}"
        table = await self._warehouse.query_arrow(
            f"SELECT * FROM {self._warehouse.database}.{SCHEDULES_TABLE} FINAL WHERE NOT deleted{only} "
            "ORDER BY created_at",
            {} if schedule_id is None else {"id": schedule_id},
        )
        return [
            Schedule(
                id=row["id"],
                name=row["name"],
                format=row["format"],
                frequency=row["frequency"],
                cron=row["cron"],
                request=msgspec.json.decode(row["request"], type=ExportRequest),
                upload_to=row["upload_to"] or None,
                incremental=row["incremental"],
                enabled=row["enabled"],
                created_at=row["created_at"],
                updated_at=row["updated_at"],
                watermark=row["watermark"],
                last_due=row["last_due"],
                last_success_at=row["last_success_at"],
                last_job_id=row["last_job_id"] or None,
                last_error=row["last_error"] or None,
                consecutive_failures=row["consecutive_failures"],
                frequency_error=cron_error(row["cron"]),
                principal=row["principal"] or None,
            )
            for row in table.to_pylist()
        ]

    async def _run_loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("checking export schedules failed")
            await asyncio.sleep(self._poll)


_NAMED_FIELD = re.compile(r"(?:missing required|contains unknown) field `([^`]+)`")


def _field_of(message: str) -> str:
    """msgspec's message → the JSON path of the field at fault (`$`: the whole body), as the API names fields."""
    path = message.split("at `$", 1)[1].rstrip("`").lstrip(".") if "at `$" in message else ""
    named = _NAMED_FIELD.search(message)
    if named is not None:
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    return path or "$"


_TIME = pa.timestamp("ms", "UTC")
_SCHEDULE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("version", pa.uint64()),
        ("deleted", pa.bool_()),
        ("name", pa.string()),
        ("format", pa.string()),
        ("frequency", pa.string()),
        ("cron", pa.string()),
        ("request", pa.string()),
        ("upload_to", pa.string()),
        ("incremental", pa.bool_()),
        ("enabled", pa.bool_()),
        ("created_at", _TIME),
        ("updated_at", _TIME),
        ("watermark", _TIME),
        ("last_due", _TIME),
        ("last_success_at", _TIME),
        ("last_job_id", pa.string()),
        ("last_error", pa.string()),
        ("consecutive_failures", pa.uint32()),
        ("principal", pa.string()),
    ]
)
