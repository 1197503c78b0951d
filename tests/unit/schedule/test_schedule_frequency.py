"""Frequencies become cron expressions; due times are computed in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from arbitrage.errors import ValidationError
from arbitrage.schedule import cron_of
from arbitrage.schedule._model import latest_due, next_due


@pytest.mark.parametrize(
    ("frequency", "cron"),
    [
        ("hourly", "0 * * * *"),
        ("Daily", "0 0 * * *"),
        ("weekly", "0 0 * * 1"),
        ("*/5 * * * *", "*/5 * * * *"),
        ("0 0 29 2 *", "0 0 29 2 *"),  # leap days only, but it fires
    ],
)
def test_named_frequencies_and_cron_expressions_are_accepted(frequency, cron):
    assert cron_of(frequency) == cron


@pytest.mark.parametrize("frequency", ["sometimes", "* * * *", "0 0 * * * *", "61 * * * *"])
def test_anything_else_is_refused_naming_the_field(frequency):
    with pytest.raises(ValidationError) as caught:
        cron_of(frequency)
    assert caught.value.field == "frequency"


@pytest.mark.parametrize("frequency", ["0 0 31 2 *", "0 0 30 2 *", "0 12 31 4,6,9,11 *"])
def test_a_cron_that_never_fires_is_refused_saying_so(frequency):
    with pytest.raises(ValidationError) as caught:
        cron_of(frequency)
    assert caught.value.field == "frequency" and "never fires" in caught.value.reason


def test_a_due_time_at_now_counts_as_due_and_the_next_one_is_strictly_later():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert latest_due("0 * * * *", now) == now
    assert latest_due("0 * * * *", now.replace(minute=59)) == now
    assert next_due("0 * * * *", now) == datetime(2026, 1, 1, 13, 0, tzinfo=UTC)
    assert next_due("0 0 * * 1", now) == datetime(2026, 1, 5, tzinfo=UTC)
