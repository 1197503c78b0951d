"""A subscription's waits: batches in order, the drop, and a keep-alive only after a whole idle wait."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from arbitrage.stream import Idle, LiveBatch, StreamFilter, StreamHub
from arbitrage.stream._events import LiveEvent

pytestmark = pytest.mark.anyio


def _batch(first: int, last: int) -> LiveBatch:
    now = datetime.now(UTC)
    return LiveBatch([LiveEvent(p, f"sig{p}", now, b"{}") for p in range(first, last + 1)])


def _hub() -> StreamHub:
    hub = StreamHub()
    hub.start_at(0)
    return hub


async def test_a_wait_with_nothing_coming_goes_idle_after_its_idle_seconds() -> None:
    subscription = _hub().subscribe(StreamFilter(), 1_000)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert isinstance(await subscription.next_or_idle(0.2), Idle)
    assert loop.time() - started >= 0.2
    assert isinstance(await subscription.next_or_idle(0.2), Idle)  # and again on the next wait


async def test_batches_that_keep_coming_sooner_than_the_idle_time_never_make_a_wait_idle() -> None:
    """Waits of 0.1 s each, for 0.6 s in all, against an idle time of 0.25 s: the timer armed at
    the first wait must measure the wait in progress when it fires, not the first one."""
    hub = _hub()
    subscription = hub.subscribe(StreamFilter(), 1_000)

    async def feed() -> None:
        for position in range(1, 7):
            await asyncio.sleep(0.1)
            hub.accept(_batch(position, position))

    feeding = asyncio.create_task(feed())
    received = []
    while len(received) < 6:
        items = await subscription.next_or_idle(0.25)
        assert not isinstance(items, Idle) and items is not None
        received += [e.position for batch, _ in items for e in batch.events]
    await feeding
    assert received == [1, 2, 3, 4, 5, 6]
    assert isinstance(await subscription.next_or_idle(0.25), Idle)


async def test_what_queued_while_the_client_was_busy_comes_in_one_wake_up_in_order() -> None:
    hub = _hub()
    subscription = hub.subscribe(StreamFilter(), 1_000)
    for position in range(1, 4):
        hub.accept(_batch(position, position))
    items = await subscription.next()
    assert items is not None
    assert [e.position for batch, _ in items for e in batch.events] == [1, 2, 3]
    assert subscription.queued_events == 0


async def test_a_dropped_subscription_wakes_its_waiting_reader_with_none() -> None:
    hub = _hub()
    subscription = hub.subscribe(StreamFilter(), 2)
    waiting = asyncio.create_task(subscription.next_or_idle(30))
    await asyncio.sleep(0)
    hub.accept(_batch(1, 2))  # fills the bound while the reader has not run yet
    hub.accept(_batch(3, 3))  # over it: dropped
    assert await asyncio.wait_for(waiting, 1) is None
    assert await subscription.next() is None
