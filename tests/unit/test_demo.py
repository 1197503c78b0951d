"""The demo feed keeps its rate whatever an ingest costs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import pytest

from arbitrage.demo import feed_demo

pytestmark = pytest.mark.anyio


class SlowIngest:
    """Takes a quarter of a second per call, as a busy box's inserts can; counts what it was given."""

    def __init__(self) -> None:
        self.records = 0

    async def ingest_records(self, records: Sequence[bytes], *, source: str, **_: Any) -> None:
        assert source == "demo"
        await asyncio.sleep(0.25)
        self.records += len(records)


async def test_an_ingest_slower_than_a_tick_does_not_slow_the_feed() -> None:
    ingest = SlowIngest()
    feed = asyncio.create_task(feed_demo(ingest, 1000))  # type: ignore[arg-type]
    await asyncio.sleep(2.0)
    feed.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await feed
    # About 2,000 due; a tenth of the rate per call gave 100 per 0.25 s, 800 in all.
    assert 1500 <= ingest.records <= 2300
