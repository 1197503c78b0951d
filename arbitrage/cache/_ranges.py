"""Rendered bodies of block-time range reads (`/historical` pages), kept in process memory.

An entry records the block_time range its query read, and lives until ingest stores a row
inside that range: a stored batch drops the entries whose range overlaps the batch's
[min, max] block_time, and nothing else can change what such a query returns. That holds
only while this process is the table's one writer, which the embedded warehouse guarantees
(its data directory is locked to one process); the app does not build this cache for the
server backend, where other processes may write.

A reader that misses takes a `ticket` before it queries and hands it back with the body;
`put` refuses the body when a batch overlapping its range was stored since the ticket
(the query may have run before that batch was visible), so a stale page is never kept.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable
from datetime import UTC, datetime

import polars as pl

_EVERYTHING = (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))


class _Page:
    __slots__ = ("body", "end", "start")

    def __init__(self, body: bytes, start: datetime, end: datetime) -> None:
        self.body = body
        self.start = start
        self.end = end


class RangeCache:
    """Least-recently-used bodies up to `max_bytes` in total, each keyed by the caller.

    Used from the event loop only (no locking).

    Args:
        max_bytes: memory bound of the bodies; a body above a quarter of it is never kept,
            so one large read cannot push out every other page.
        history: stored batches remembered for `put` checks; a reader whose ticket is
            older than that many stores does not keep its body.
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024, history: int = 1024) -> None:
        self.max_bytes = max_bytes
        self._pages: collections.OrderedDict[Hashable, _Page] = collections.OrderedDict()
        self._bytes = 0
        self._generation = 0
        self._stored: collections.deque[tuple[int, datetime, datetime]] = collections.deque(maxlen=history)
        """(generation, first, last block_time) of the latest stored batches."""

    def __len__(self) -> int:
        return len(self._pages)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, key: Hashable) -> bytes | None:
        page = self._pages.get(key)
        if page is None:
            return None
        self._pages.move_to_end(key)
        return page.body

    def ticket(self) -> int:
        """Take before querying; pass to `put` with the body that query produced."""
        return self._generation

    def put(self, key: Hashable, start: datetime, end: datetime, body: bytes, ticket: int) -> bool:
        """Keep `body` for block times in [start, end] unless it may be stale; True when kept."""
        if len(body) > self.max_bytes // 4:
            return False
        if ticket < self._generation:
            if self._stored[0][0] > ticket + 1:
                return False
            if any(g > ticket and first <= end and last >= start for g, first, last in self._stored):
                return False
        old = self._pages.pop(key, None)
        if old is not None:
            self._bytes -= len(old.body)
        self._pages[key] = _Page(body, start, end)
        self._bytes += len(body)
        while self._bytes > self.max_bytes:
            _, evicted = self._pages.popitem(last=False)
            self._bytes -= len(evicted.body)
        return True

    async def invalidate(self, stored: pl.DataFrame) -> None:
        """Drop the pages whose range holds a stored row (an `IngestService.on_stored` listener)."""
        if stored.is_empty():
            return
        times = stored.get_column("block_time")
        first, last = times.min(), times.max()
        if not isinstance(first, datetime) or not isinstance(last, datetime):
            self._drop(*_EVERYTHING)
            return
        self._drop(_utc(first), _utc(last))

    def flush_cache(self) -> None:
        """Drop every page (`POST /admin/cache/flush`, and after merges that may collapse rows)."""
        self._drop(*_EVERYTHING)

    def _drop(self, first: datetime, last: datetime) -> None:
        self._generation += 1
        self._stored.append((self._generation, first, last))
        for key in [k for k, p in self._pages.items() if p.start <= last and p.end >= first]:
            self._bytes -= len(self._pages.pop(key).body)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
