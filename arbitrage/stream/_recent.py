"""The newest stored transactions, kept in memory by the ingest path.

It answers the first pages of `/transactions` without a warehouse query and is the
source of the live streams: subscribers get every stored batch in order. Rows are kept
as columns and rendered to JSON only when someone reads them, so ingest pays nothing
for rendering when nobody is listening.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import msgspec
import polars as pl

from arbitrage.stream._render import render_transactions

_KEYS = ["block_time", "signature"]


class LiveEvent(msgspec.Struct, frozen=True):
    """One stored transaction as a stream event; `position` grows by one per event."""

    position: int
    signature: str
    block_time: datetime
    payload: bytes


class RecentTransactions:
    """Top `capacity` stored rows by (block_time, signature), newest first."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._frame: pl.DataFrame | None = None
        self._position = 0
        self._subscribers: dict[asyncio.Queue[LiveEvent | None], int] = {}
        self._pages: dict[tuple[int, tuple[datetime, str] | None], list[bytes] | None] = {}
        """Rendered pages since the last add: many readers, one render."""

    def __len__(self) -> int:
        return 0 if self._frame is None else len(self._frame)

    @property
    def position(self) -> int:
        """Events published so far; the id of the last one."""
        return self._position

    def add(self, stored: pl.DataFrame) -> None:
        """Merge a stored batch and publish it to live subscribers (call from the event loop)."""
        if stored.is_empty():
            return
        merged = stored if self._frame is None else pl.concat([self._frame, stored], how="diagonal_relaxed")
        self._frame = merged.sort(_KEYS, descending=True).head(self.capacity)
        self._pages.clear()
        first = self._position + 1
        self._position += len(stored)
        if not self._subscribers:
            return
        payloads = render_transactions(stored)
        events = [
            LiveEvent(first + i, signature, block_time, payload)
            for i, (signature, block_time, payload) in enumerate(
                zip(stored["signature"].to_list(), stored["block_time"].to_list(), payloads, strict=True)
            )
        ]
        for queue, limit in list(self._subscribers.items()):
            if queue.qsize() + len(events) > limit:
                del self._subscribers[queue]
                queue.put_nowait(None)
                continue
            for event in events:
                queue.put_nowait(event)

    def page(self, limit: int, before: tuple[datetime, str] | None = None) -> list[bytes] | None:
        """Up to `limit` rows strictly older than `before`; None when memory cannot answer fully."""
        key = (limit, before)
        if key not in self._pages:
            if len(self._pages) > 256:
                self._pages.clear()
            self._pages[key] = self._render_page(limit, before)
        return self._pages[key]

    def _render_page(self, limit: int, before: tuple[datetime, str] | None) -> list[bytes] | None:
        if self._frame is None:
            return None
        frame = self._frame
        if before is not None:
            at, sig = before
            frame = frame.filter(
                (pl.col("block_time") < at) | ((pl.col("block_time") == at) & (pl.col("signature") < sig))
            )
        if len(frame) < limit and len(self._frame) >= self.capacity:
            return None
        return render_transactions(frame.head(limit))

    def subscribe(self, max_queue: int = 10_000) -> asyncio.Queue[LiveEvent | None]:
        """A queue of new events; None in it means the subscriber fell behind and was dropped."""
        queue: asyncio.Queue[LiveEvent | None] = asyncio.Queue()
        self._subscribers[queue] = max_queue
        return queue

    def unsubscribe(self, queue: asyncio.Queue[LiveEvent | None]) -> None:
        self._subscribers.pop(queue, None)
