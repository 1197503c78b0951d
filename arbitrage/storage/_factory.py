"""Choose the warehouse backend from settings."""

from __future__ import annotations

from pathlib import Path

from arbitrage.config import StorageSettings
from arbitrage.storage._embedded import EmbeddedWarehouse, check_data_dir_free
from arbitrage.storage._protocol import Warehouse


def open_warehouse(settings: StorageSettings) -> Warehouse:
    """A warehouse for the configured backend; call `start()` on it before use."""
    if settings.backend == "clickhouse":
        from arbitrage.storage._clickhouse import ClickHouseWarehouse

        return ClickHouseWarehouse(settings)
    return EmbeddedWarehouse(
        settings.data_dir, database=settings.database, max_concurrent_queries=settings.max_concurrent_queries
    )


def check_storage(settings: StorageSettings) -> None:
    """What `open_warehouse` and `start()` would refuse, checked without opening anything (before `serve` forks).

    Raises:
        ConfigError: naming the `storage` key at fault.
        WarehouseLocked: another process owns the embedded data dir.
    """
    if settings.backend == "clickhouse":
        from arbitrage.storage._clickhouse import server_endpoints

        server_endpoints(settings)
    else:
        check_data_dir_free(Path(settings.data_dir))
