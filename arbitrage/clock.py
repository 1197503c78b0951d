"""The time the service stamps on what it records (jobs, schedules, keys)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Now, to the whole millisecond the warehouse keeps (`DateTime64(3)`): an answer that shows
    a time it has just stored shows it as every later read of it will."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
