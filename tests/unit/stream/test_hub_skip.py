"""The hub moves past positions it is told will never come, also when they lie ahead of a gap."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from arbitrage.stream import LiveBatch, StreamFilter, StreamHub
from arbitrage.stream._events import LiveEvent

pytestmark = pytest.mark.anyio


def _batch(first: int, last: int) -> LiveBatch:
    now = datetime.now(UTC)
    return LiveBatch([LiveEvent(p, f"sig{p}", now, b"{}") for p in range(first, last + 1)])


async def test_positions_skipped_ahead_of_a_gap_are_passed_once_the_gap_fills() -> None:
    hub = StreamHub(reorder_timeout=60)
    hub.start_at(0)
    subscription = hub.subscribe(StreamFilter(), 1_000)
    hub.accept(_batch(1, 3))
    hub.skip(8, 10)  # another process's failed insert, told before 4-7 arrived
    hub.accept(_batch(11, 12))
    assert hub.position == 3  # 4-7 are still on their way
    hub.accept(_batch(4, 7))
    assert hub.position == 12  # no reorder timeout waited for 8-10
    delivered = [e.position for batch, _ in await subscription.next() or [] for e in batch.events]
    assert delivered == [1, 2, 3, 4, 5, 6, 7, 11, 12]


async def test_a_skip_behind_the_feed_is_forgotten() -> None:
    hub = StreamHub(reorder_timeout=60)
    hub.start_at(0)
    hub.accept(_batch(1, 5))
    hub.skip(2, 4)
    hub.accept(_batch(6, 6))
    assert hub.position == 6
