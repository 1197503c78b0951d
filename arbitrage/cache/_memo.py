"""In-process answers of the aggregate endpoints (`/stats`, `/stats/daily`), kept for a moment."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, ClassVar

import polars as pl


class ShortCache:
    """Answers for a moment, computed once however many requests ask at the same time.

    Aggregates change slowly and are asked for often; one warehouse query per request would
    cap the server at a few hundred requests per second. Every stored batch drops the answers
    (`invalidate` is an `IngestService.on_stored` listener), and an answer computed across a
    drop is neither kept nor shared with requests that arrived after it: a read after a
    completed ingest never sees older data.
    """

    EXTRAS_KEY: ClassVar[str] = "stats_cache"
    """Where the app keeps it in `Services.extras` (found there by the handlers and the admin flush)."""

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl = ttl_seconds
        self._generation = 0
        self._entries: dict[Hashable, tuple[float, Any]] = {}
        self._inflight: dict[Hashable, tuple[int, asyncio.Future[Any]]] = {}
        """Computations under way, with the generation they began in."""

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[Any]]) -> Any:
        entry = self._entries.get(key)
        if entry and time.monotonic() - entry[0] < self.ttl:
            return entry[1]
        generation = self._generation
        running = self._inflight.get(key)
        if running is not None and running[0] == generation:
            return await asyncio.shield(running[1])
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[key] = (generation, future)
        try:
            value = await compute()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so an unawaited failure is not reported as lost
            raise
        finally:
            running = self._inflight.get(key)
            if running is not None and running[1] is future:  # else a computation begun after a drop took over
                del self._inflight[key]
        future.set_result(value)
        if generation == self._generation:
            if len(self._entries) > 1000:
                self._entries.clear()
            self._entries[key] = (time.monotonic(), value)
        return value

    async def invalidate(self, _stored: pl.DataFrame | None = None) -> None:
        """Drop every answer (ingest calls this after each stored batch)."""
        self.flush_cache()

    def flush_cache(self) -> None:
        """Drop every answer, and keep none computed before (`POST /admin/cache/flush`)."""
        self._generation += 1
        self._entries.clear()
