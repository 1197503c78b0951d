"""The warehouse: the floor every other module stands on."""

from arbitrage.storage._aggregates import rebuild_daily_aggregates
from arbitrage.storage._damage import DamagedPart, damaged_parts
from arbitrage.storage._embedded import EmbeddedWarehouse
from arbitrage.storage._factory import check_storage, open_warehouse
from arbitrage.storage._migrations import Migration, discover, migrations_dir, render
from arbitrage.storage._protocol import SignatureWindow, Warehouse
from arbitrage.storage._reads import (
    LATEST,
    HistoryExtent,
    TransactionFilter,
    TransactionReader,
    as_utc,
    ch_time,
    decode_cursor,
    encode_cursor,
)
from arbitrage.storage._retention import apply_retention, retention_status

__all__ = [
    "LATEST",
    "DamagedPart",
    "EmbeddedWarehouse",
    "HistoryExtent",
    "Migration",
    "SignatureWindow",
    "TransactionFilter",
    "TransactionReader",
    "Warehouse",
    "apply_retention",
    "as_utc",
    "ch_time",
    "check_storage",
    "damaged_parts",
    "decode_cursor",
    "discover",
    "encode_cursor",
    "migrations_dir",
    "open_warehouse",
    "rebuild_daily_aggregates",
    "render",
    "retention_status",
]
