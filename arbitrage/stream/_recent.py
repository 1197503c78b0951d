"""The newest stored transactions, kept in memory by the ingest path.

It answers the first pages of `/transactions` without a warehouse query. Rows are kept
as columns and rendered to JSON only when someone reads them. (The live streams are fed
by `LiveFeed`, which also sees other processes' batches.)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Any, TypeVar

import polars as pl

from arbitrage.stream._render import render_transactions

_KEYS = ["block_time", "signature"]
_MAX_KEPT = 256

T = TypeVar("T")


class RecentTransactions:
    """Top `capacity` stored rows by (block_time, signature), newest first."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._frame: pl.DataFrame | None = None
        self._kept: dict[Hashable, Any] = {}
        """Pages and what callers derived from them since the last add: many readers, one render."""

    def __len__(self) -> int:
        return 0 if self._frame is None else len(self._frame)

    def add(self, stored: pl.DataFrame) -> None:
        """Merge a stored batch (call from the event loop)."""
        if stored.is_empty():
            return
        merged = stored if self._frame is None else pl.concat([self._frame, stored], how="diagonal_relaxed")
        self._frame = merged.sort(_KEYS, descending=True).head(self.capacity)
        self._kept.clear()

    def page(self, limit: int, before: tuple[datetime, str] | None = None) -> list[bytes] | None:
        """Up to `limit` rows strictly older than `before`; None when memory cannot answer fully."""
        return self.derived(("page", limit, before), lambda: self._render_page(limit, before))

    def derived(self, key: Hashable, build: Callable[[], T]) -> T:
        """`build()`, made once while the rows stay the same (the next `add` forgets it).

        For values computed only from `page` results, such as a whole encoded response;
        `key` must name everything `build` depends on besides the rows.
        """
        if key not in self._kept:
            if len(self._kept) >= _MAX_KEPT:
                self._kept.clear()
            self._kept[key] = build()
        value: T = self._kept[key]
        return value

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
