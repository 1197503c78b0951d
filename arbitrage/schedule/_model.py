"""Schedules as users send and see them, and how a frequency becomes due times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from croniter import CroniterBadDateError, CroniterError, croniter

from arbitrage.errors import ValidationError
from arbitrage.export import ExportJob, ExportRequest

NAMED_FREQUENCIES = {"hourly": "0 * * * *", "daily": "0 0 * * *", "weekly": "0 0 * * 1"}


class ScheduleCreate(ExportRequest, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Body of `POST /schedule/export`: the export's filters and options plus when and where.

    `upload_to` is where each run writes (`<upload_to>/<job id>/`); it replaces
    `destination`, and defaults to the export dir.
    """

    format: str
    """Export format, as in `POST /export/{format}`."""
    frequency: str
    """`hourly`, `daily` (00:00 UTC), `weekly` (Monday 00:00 UTC) or a 5-field cron expression (UTC)."""
    name: str = ""
    """A label for people."""
    upload_to: str | None = None
    """Directory or fsspec URL of the runs' output; default the export dir."""
    incremental: bool = True
    """Export only rows ingested since the previous successful run (by `ingested_at`)."""
    enabled: bool = True
    """Disabled schedules keep their state but do not run on their own."""


class Schedule(msgspec.Struct, kw_only=True):
    """A stored schedule with its run state, as `GET /schedules/{id}` shows it."""

    id: str
    name: str
    format: str
    frequency: str
    cron: str
    request: ExportRequest
    upload_to: str | None
    incremental: bool
    enabled: bool
    created_at: datetime
    updated_at: datetime
    watermark: datetime | None = None
    """`ingested_at` up to which rows were exported by successful runs (incremental)."""
    last_due: datetime | None = None
    """The latest due time that was claimed and run."""
    last_success_at: datetime | None = None
    last_job_id: str | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    next_run_at: datetime | None = None
    frequency_error: str | None = None
    """Why the schedule never runs (its stored cron, accepted by an older version, matches no date)."""
    running: bool = False
    principal: str | None = None
    """Who created it (`Identity.principal`), and so owns its runs' jobs; None: no one recorded, admins only."""

    def create_body(self) -> dict[str, Any]:
        """The schedule as a `ScheduleCreate` document (the base a PATCH is applied to)."""
        body: dict[str, Any] = msgspec.to_builtins(self.request)
        body.pop("destination", None)
        body.update(
            format=self.format,
            frequency=self.frequency,
            name=self.name,
            upload_to=self.upload_to,
            incremental=self.incremental,
            enabled=self.enabled,
        )
        return {k: v for k, v in body.items() if v is not None}


class ScheduleDetail(msgspec.Struct, kw_only=True):
    """A schedule with its most recent runs."""

    schedule: Schedule
    last_runs: list[ExportJob]


def cron_of(frequency: str) -> str:
    """The cron expression of a frequency. Raises `ValidationError` for a bad one or one that never fires."""
    cron = NAMED_FREQUENCIES.get(frequency.strip().lower(), frequency.strip())
    if not croniter.is_valid(cron) or len(cron.split()) != 5:
        raise ValidationError("frequency", f"not hourly, daily, weekly or a 5-field cron expression: {frequency!r}")
    problem = cron_error(cron)
    if problem is not None:
        raise ValidationError("frequency", f"{frequency!r} {problem}")
    return cron


def cron_error(cron: str) -> str | None:
    """Why no due time can be computed for a cron, or None.

    A valid cron can still match no date (`0 0 31 2 *`); it would fail every due-time
    computation, so it is refused on input and skipped when found in stored schedules.
    """
    try:
        next_due(cron, datetime.now(UTC))
    except CroniterBadDateError:
        return "never fires: no date matches its day and month (such as 31 February)"
    except CroniterError as exc:
        return f"is not a usable cron expression: {exc}"
    return None


def latest_due(cron: str, now: datetime) -> datetime:
    """The latest due time at or before `now`."""
    return _utc(croniter(cron, now + timedelta(milliseconds=1)).get_prev(datetime))


def next_due(cron: str, after: datetime) -> datetime:
    """The first due time strictly after `after`."""
    return _utc(croniter(cron, after).get_next(datetime))


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
