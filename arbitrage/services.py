"""The running process's services, built once by the app's lifespan and shared by handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from arbitrage.config import Settings
from arbitrage.ingest import IngestService
from arbitrage.storage import DamagedPart, TransactionReader, Warehouse
from arbitrage.stream import LiveFeed, RecentTransactions

HealthCheck = Callable[[], Awaitable[dict[str, Any]]]
"""Returns {"status": "healthy" | "degraded" | "unhealthy", ...}; raising means unhealthy."""


@dataclass
class Services:
    settings: Settings
    warehouse: Warehouse
    ingest: IngestService
    reader: TransactionReader
    recent: RecentTransactions
    health_checks: dict[str, HealthCheck] = field(default_factory=dict)
    """Components besides the warehouse (kafka, redis, ...) report here by name."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Services of optional modules (exports, schedules, kafka), by name."""
    feed: LiveFeed | None = None
    """The live feed (SSE, WebSocket, GraphQL subscriptions); None in tools that only read."""
    damaged_parts: list[DamagedPart] = field(default_factory=list)
    """Parts found damaged and set aside at start-up: /health reports the warehouse degraded."""

    async def close(self) -> None:
        """Stop schedules and exports, finish the insert in flight, close the live feed, then the warehouse."""
        for name in ("schedules", "exports"):
            service = self.extras.pop(name, None)
            if service is not None:
                await service.close()
        await self.ingest.drain()
        if self.feed is not None:
            await self.feed.close()
        await self.warehouse.close()
