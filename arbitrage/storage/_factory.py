"""Choose the warehouse backend from settings."""

from __future__ import annotations

from arbitrage.config import StorageSettings
from arbitrage.storage._embedded import EmbeddedWarehouse
from arbitrage.storage._protocol import Warehouse


def open_warehouse(settings: StorageSettings) -> Warehouse:
    """A warehouse for the configured backend; call `start()` on it before use."""
    if settings.backend == "clickhouse":
        from arbitrage.storage._clickhouse import ClickHouseWarehouse

        return ClickHouseWarehouse(settings)
    return EmbeddedWarehouse(
        settings.data_dir, database=settings.database, max_concurrent_queries=settings.max_concurrent_queries
    )
