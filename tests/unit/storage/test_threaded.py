"""ThreadedReader: a stream is never closed under a fetch still running in a worker thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from arbitrage.storage._threaded import ThreadedReader

pytestmark = pytest.mark.anyio


class _SlowSource:
    """Items 0, 1, ...; the second fetch blocks until released, and overlapping close is recorded."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.fetching = threading.Event()
        self.release = threading.Event()
        self._next = 0

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        self.events.append(f"fetch {self._next}")
        if self._next == 1:
            self.fetching.set()
            self.release.wait(10)
        self._next += 1
        self.events.append(f"fetched {self._next - 1}")
        if self._next > 3:
            raise StopIteration
        return self._next - 1

    def close(self) -> None:
        self.events.append("close")


async def test_a_consumer_cancelled_mid_fetch_closes_only_after_the_fetch_returns() -> None:
    source = _SlowSource()
    reader = ThreadedReader(source, source.close)

    async def consume() -> None:
        try:
            while await reader.next() is not None:
                pass
        finally:
            await reader.close()

    task = asyncio.create_task(consume())
    await asyncio.to_thread(source.fetching.wait, 10)
    task.cancel()
    await asyncio.sleep(0.05)
    assert "close" not in source.events  # still waiting for the fetch in flight
    source.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert source.events == ["fetch 0", "fetched 0", "fetch 1", "fetched 1", "close"]


async def test_items_arrive_in_order_and_the_end_is_none() -> None:
    source = _SlowSource()
    source.release.set()
    reader = ThreadedReader(source, source.close)
    items = []
    while (item := await reader.next()) is not None:
        items.append(item)
    await reader.close()
    assert items == [0, 1, 2]
    assert source.events[-1] == "close"
