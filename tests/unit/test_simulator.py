"""The simulator's stream stays a valid live feed however long it runs."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from arbitrage.simulator import Simulator


def test_a_stream_started_in_the_past_catches_up_with_the_clock_and_never_runs_ahead_of_it() -> None:
    """`simulate` without `--count` or `--rate` runs forever from a start in the past; ahead of the
    clock by over an hour, every record it made was refused."""
    start = datetime.now(UTC) - timedelta(seconds=20)
    records = Simulator(seed=3, start=start).records(2_000)  # ≈ 500 slots, 200 s at 400 ms a slot
    times = [r["block_time"] for r in records]
    assert max(times) <= time.time() * 1000
    assert min(times) < (start + timedelta(seconds=5)).timestamp() * 1000
    slots = [r["slot"] for r in records]
    assert slots == sorted(slots)
