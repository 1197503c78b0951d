"""The newest stored transactions, kept in memory by the ingest path.

It answers the first pages of `/transactions` without a warehouse query and is the
replay buffer of the live streams: subscribers get every stored batch in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

import msgspec
import polars as pl

_KEYS = ("block_time", "signature")


class LiveEvent(msgspec.Struct, frozen=True):
    """One stored transaction as a stream event; `position` grows by one per event."""

    position: int
    signature: str
    block_time: datetime
    payload: bytes


class RecentTransactions:
    """Top `capacity` transactions by (block_time, signature), newest first, as JSON."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._frame = pl.DataFrame(
            schema={"block_time": pl.Datetime("ms", "UTC"), "signature": pl.String, "json": pl.Binary}
        )
        self._position = 0
        self._subscribers: dict[asyncio.Queue[LiveEvent | None], int] = {}

    def __len__(self) -> int:
        return len(self._frame)

    @property
    def position(self) -> int:
        return self._position

    def add(self, block_times: pl.Series, signatures: pl.Series, payloads: Sequence[bytes]) -> None:
        """Merge a stored batch and publish it to live subscribers (call from the event loop)."""
        if not payloads:
            return
        batch = pl.DataFrame(
            {"block_time": block_times, "signature": signatures, "json": pl.Series(payloads, dtype=pl.Binary)}
        )
        self._frame = pl.concat([self._frame, batch]).sort(_KEYS, descending=True).head(self.capacity)
        for block_time, signature, payload in zip(block_times.to_list(), signatures.to_list(), payloads, strict=True):
            self._position += 1
            event = LiveEvent(self._position, signature, block_time, payload)
            for queue, limit in list(self._subscribers.items()):
                if queue.qsize() >= limit:
                    del self._subscribers[queue]
                    queue.put_nowait(None)
                else:
                    queue.put_nowait(event)

    def page(self, limit: int, before: tuple[datetime, str] | None = None) -> list[bytes] | None:
        """Up to `limit` rows strictly older than `before`; None when memory cannot answer fully."""
        frame = self._frame
        if before is not None:
            at, sig = before
            frame = frame.filter(
                (pl.col("block_time") < at) | ((pl.col("block_time") == at) & (pl.col("signature") < sig))
            )
        if len(frame) < limit and len(self._frame) >= self.capacity:
            return None
        return frame.head(limit)["json"].to_list()

    def subscribe(self, max_queue: int = 10_000) -> asyncio.Queue[LiveEvent | None]:
        """A queue of new events; None in it means the subscriber fell behind and was dropped."""
        queue: asyncio.Queue[LiveEvent | None] = asyncio.Queue()
        self._subscribers[queue] = max_queue
        return queue

    def unsubscribe(self, queue: asyncio.Queue[LiveEvent | None]) -> None:
        self._subscribers.pop(queue, None)
