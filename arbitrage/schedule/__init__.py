"""Export schedules: persisted, cron-timed, incremental, run once per due time."""

from arbitrage.schedule._model import NAMED_FREQUENCIES, Schedule, ScheduleCreate, ScheduleDetail, cron_of
from arbitrage.schedule._service import ScheduleBusy, ScheduleNotFound, ScheduleService

__all__ = [
    "NAMED_FREQUENCIES",
    "Schedule",
    "ScheduleBusy",
    "ScheduleCreate",
    "ScheduleDetail",
    "ScheduleNotFound",
    "ScheduleService",
    "cron_of",
]
