"""Aggregates, served from the materialized views and cached for a moment."""

from __future__ import annotations

import time
from typing import Annotated, Any

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import Parameter

from arbitrage.storage import TransactionReader


class _ShortCache:
    """Recent answers for a couple of seconds: aggregates change slowly, requests come often."""

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl = ttl_seconds
        self._entries: dict[object, tuple[float, Any]] = {}

    def get(self, key: object) -> Any | None:
        entry = self._entries.get(key)
        if entry and time.monotonic() - entry[0] < self.ttl:
            return entry[1]
        return None

    def put(self, key: object, value: Any) -> Any:
        if len(self._entries) > 1000:
            self._entries.clear()
        self._entries[key] = (time.monotonic(), value)
        return value


class StatsController(Controller):
    path = "/stats"
    tags = ["stats"]

    def __init__(self, owner: Any) -> None:
        super().__init__(owner)
        self._cache = _ShortCache(1.0)

    @get(description="Totals over everything stored, and the top tokens, DEXes and signers.")
    async def stats(self, reader: NamedDependency[TransactionReader]) -> dict[str, Any]:
        return self._cache.get("stats") or self._cache.put("stats", await reader.stats())

    @get("/daily", description="One row per UTC day for the last `days` days (days without data are omitted).")
    async def daily(
        self, reader: NamedDependency[TransactionReader], days: Annotated[int, Parameter(ge=1, le=3650)] = 30
    ) -> dict[str, list[dict[str, Any]]]:
        key = ("daily", days)
        return self._cache.get(key) or self._cache.put(key, {"days": await reader.daily(days)})
