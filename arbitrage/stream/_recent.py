"""The newest stored transactions, kept in memory by the ingest path.

It answers the first pages of `/transactions` without a warehouse query. Rows are kept
as columns and rendered to JSON only when someone reads them. (The live streams are fed
by `LiveFeed`, which also sees other processes' batches.)
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from arbitrage.stream._render import render_transactions

_KEYS = ["block_time", "signature"]


class RecentTransactions:
    """Top `capacity` stored rows by (block_time, signature), newest first."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._frame: pl.DataFrame | None = None
        self._pages: dict[tuple[int, tuple[datetime, str] | None], list[bytes] | None] = {}
        """Rendered pages since the last add: many readers, one render."""

    def __len__(self) -> int:
        return 0 if self._frame is None else len(self._frame)

    def add(self, stored: pl.DataFrame) -> None:
        """Merge a stored batch (call from the event loop)."""
        if stored.is_empty():
            return
        merged = stored if self._frame is None else pl.concat([self._frame, stored], how="diagonal_relaxed")
        self._frame = merged.sort(_KEYS, descending=True).head(self.capacity)
        self._pages.clear()

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
