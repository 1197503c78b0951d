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
MAX_KEPT_BYTES = 32 * 2**20
"""Rendered bytes `derived` keeps at most: each distinct (limit, cursor) read between two stores
keeps its page; 256 reads of up to 300 rows kept 90 MiB, of 1,000-row pages they would keep over 1 GiB."""
_CUT_AFTER = 2
"""Unmerged rows, in multiples of `capacity`, that make an add cut them down (bounds the memory held)."""

T = TypeVar("T")


class RecentTransactions:
    """Top `capacity` stored rows by (block_time, signature), newest first.

    It answers pages only when this process sees every store; with `capacity` 0 it keeps
    nothing and answers nothing (a shared ClickHouse server also takes other processes' rows).
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._top: pl.DataFrame | None = None
        self._added: list[pl.DataFrame] = []
        """Batches not merged into `_top` yet: merging (a sort of 100+ columns) waits for a read,
        since it runs on the event loop; past `_CUT_AFTER` times `capacity` rows an add only cuts them."""
        self._kept: dict[Hashable, Any] = {}
        """Pages and what callers derived from them since the last add: many readers, one render."""
        self._kept_bytes = 0

    def __len__(self) -> int:
        frame = self._frame()
        return 0 if frame is None else len(frame)

    def add(self, stored: pl.DataFrame) -> None:
        """Take a stored batch (call from the event loop)."""
        if stored.is_empty() or not self.capacity:
            return
        self._added.append(stored)
        self._forget_kept()
        if sum(len(frame) for frame in self._added) >= _CUT_AFTER * self.capacity:
            frames = ([] if self._top is None else [self._top]) + self._added
            self._top, self._added = None, _cut(frames, self.capacity)
            if sum(len(frame) for frame in self._added) >= _CUT_AFTER * self.capacity:  # many equal block times
                self._frame()

    def _frame(self) -> pl.DataFrame | None:
        """The newest `capacity` rows, newest first, with every batch added so far merged in."""
        if self._added:
            frames = ([] if self._top is None else [self._top]) + self._added
            self._top = _newest(frames, self.capacity)
            self._added = []
        return self._top

    def page(self, limit: int, before: tuple[datetime, str] | None = None) -> list[bytes] | None:
        """Up to `limit` rows strictly older than `before`; None when memory cannot answer fully."""
        return self.derived(("page", limit, before), lambda: self._render_page(limit, before))

    def derived(self, key: Hashable, build: Callable[[], T]) -> T:
        """`build()`, made once while the rows stay the same (the next `add`, or `MAX_KEPT_BYTES`, forgets it).

        For values computed only from `page` results, such as a whole encoded response;
        `key` must name everything `build` depends on besides the rows.
        """
        if key in self._kept:
            kept: T = self._kept[key]
            return kept
        value = build()
        size = _rendered_bytes(value)
        if len(self._kept) >= _MAX_KEPT or self._kept_bytes + size > MAX_KEPT_BYTES:
            self._forget_kept()
        self._kept[key] = value
        self._kept_bytes += size
        return value

    def _forget_kept(self) -> None:
        self._kept.clear()
        self._kept_bytes = 0

    def _render_page(self, limit: int, before: tuple[datetime, str] | None) -> list[bytes] | None:
        top = self._frame()
        if top is None or not self.capacity:
            return None
        frame = top
        if before is not None:
            frame = frame.filter(_older_than(*before))
        if len(frame) < limit and len(top) >= self.capacity:
            return None
        return render_transactions(frame.head(limit))


def _rendered_bytes(value: object) -> int:
    """The size of a page (a list of rows) or of a body built from one; 0 for anything else."""
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, list):
        return sum(len(row) for row in value if isinstance(row, bytes))
    return 0


def _newest(frames: list[pl.DataFrame], capacity: int) -> pl.DataFrame:
    """The `capacity` newest rows of `frames`, newest first.

    Each frame is cut at the `capacity`-th newest key before the sort: sorting gathers every
    column (nested legs included), and most of the rows would be dropped after it.
    """
    keys = pl.concat([frame.select(_KEYS) for frame in frames], how="vertical_relaxed")
    if len(keys) > capacity:
        kept = ~_older_than(*keys.sort(_KEYS, descending=True).row(capacity - 1))
        frames = [frame.filter(kept) for frame in frames]
    merged = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
    return merged.sort(_KEYS, descending=True).head(capacity)


def _cut(frames: list[pl.DataFrame], capacity: int) -> list[pl.DataFrame]:
    """The rows of `frames` at or after the `capacity`-th newest block time, unsorted.

    They hold the `capacity` newest rows, and rows of equal block time beyond them. Cheaper
    than `_newest` on a large batch (a selection on one integer column instead of a sort of
    the keys, then of 100+ columns): 20 ms for a 55k-row insert, on the event loop.
    """
    times = pl.concat([frame.get_column("block_time") for frame in frames])
    if len(times) <= capacity:
        return frames
    oldest_kept = times.top_k(capacity).min()
    kept = (frame.filter(pl.col("block_time") >= oldest_kept) for frame in frames)
    return [frame for frame in kept if not frame.is_empty()]


def _older_than(at: datetime, signature: str) -> pl.Expr:
    """Rows before (`at`, `signature`) in the (block_time, signature) order."""
    return (pl.col("block_time") < at) | ((pl.col("block_time") == at) & (pl.col("signature") < signature))
