"""Aggregates, served from the materialized views and cached for a moment."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import Parameter

from arbitrage.security import requires
from arbitrage.storage import TransactionReader


class _ShortCache:
    """Answers for a moment, computed once however many requests ask at the same time.

    Aggregates change slowly and are asked for often; one warehouse query per request
    would cap the server at a few hundred requests per second.
    """

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl = ttl_seconds
        self._entries: dict[object, tuple[float, Any]] = {}
        self._inflight: dict[object, asyncio.Future[Any]] = {}

    async def get(self, key: object, compute: Callable[[], Awaitable[Any]]) -> Any:
        entry = self._entries.get(key)
        if entry and time.monotonic() - entry[0] < self.ttl:
            return entry[1]
        if key in self._inflight:
            return await asyncio.shield(self._inflight[key])
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value = await compute()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so an unawaited failure is not reported as lost
            raise
        finally:
            del self._inflight[key]
        future.set_result(value)
        if len(self._entries) > 1000:
            self._entries.clear()
        self._entries[key] = (time.monotonic(), value)
        return value


class StatsController(Controller):
    path = "/stats"
    tags = ["stats"]
    guards = [requires("read")]

    def __init__(self, owner: Any) -> None:
        super().__init__(owner)
        self._cache = _ShortCache(1.0)

    @get(
        description="Totals over everything stored, and the top tokens, DEXes and signers. `net_profit_sol` sums "
        "the transactions whose profit is known (circular routes that touch SOL); `total_cost_sol` sums every "
        "transaction's cost, so gross revenue minus cost need not equal it."
    )
    async def stats(self, reader: NamedDependency[TransactionReader]) -> dict[str, Any]:
        return await self._cache.get("stats", reader.stats)  # type: ignore[no-any-return]

    @get("/daily", description="One row per UTC day for the last `days` days (days without data are omitted).")
    async def daily(
        self, reader: NamedDependency[TransactionReader], days: Annotated[int, Parameter(ge=1, le=3650)] = 30
    ) -> dict[str, list[dict[str, Any]]]:
        async def compute() -> dict[str, list[dict[str, Any]]]:
            return {"days": await reader.daily(days)}

        return await self._cache.get(("daily", days), compute)  # type: ignore[no-any-return]
