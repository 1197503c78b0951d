"""The seam between the warehouse and everything above it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

import msgspec
import pyarrow as pa

SAME_SLOT_MARGIN = timedelta(minutes=10)
"""How far apart two copies of one transaction's block time may be and still be found."""


class SignatureWindow(msgspec.Struct, frozen=True):
    """Where a batch's signatures could already be stored: its block times and its slots.

    A transaction's slot is fixed on chain, while sources may disagree on its block time
    (seconds against milliseconds, a collector's clock): a stored copy counts when its block
    time is within the batch's range, or its slot is within the batch's slots and its block
    time within `SAME_SLOT_MARGIN` of the range (the margin keeps the read to a narrow
    stretch of the time-sorted table).
    """

    start: datetime
    end: datetime
    first_slot: int
    last_slot: int

    def where(self) -> tuple[str, dict[str, Any]]:
        """A WHERE condition on `transactions` and its query parameters."""
        sql = (
            "block_time BETWEEN {wide_start:DateTime64(3, 'UTC')} AND {wide_end:DateTime64(3, 'UTC')} "
            "AND (block_time BETWEEN {start:DateTime64(3, 'UTC')} AND {end:DateTime64(3, 'UTC')} "
            "OR slot BETWEEN {first_slot:UInt64} AND {last_slot:UInt64})"
        )
        params = {
            "wide_start": self.start - SAME_SLOT_MARGIN,
            "wide_end": self.end + SAME_SLOT_MARGIN,
            "start": self.start,
            "end": self.end,
            "first_slot": self.first_slot,
            "last_slot": self.last_slot,
        }
        return sql, params


class Warehouse(Protocol):
    """ClickHouse, embedded (chdb) or remote (asynch): same SQL, same migrations.

    Queries take ClickHouse query parameters (`{name:Type}` placeholders with a
    `params` mapping); never format values into SQL text. Results are Arrow.
    """

    backend: str
    database: str

    async def start(self) -> None:
        """Open the warehouse and apply pending migrations."""

    async def close(self) -> None:
        """Release connections and locks; safe to call twice."""

    async def ping(self) -> float:
        """Run a trivial query; return its latency in milliseconds or raise."""

    async def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement that returns nothing (DDL, OPTIMIZE, ALTER)."""

    async def query_arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run a query and return the whole result as one Arrow table."""

    def stream_arrow(
        self, sql: str, params: Mapping[str, Any] | None = None, batch_rows: int = 65_536
    ) -> AsyncIterator[pa.RecordBatch]:
        """Run a query and yield its result in record batches (memory stays flat)."""
        ...

    async def insert_arrow(self, table: str, data: pa.Table) -> None:
        """Insert an Arrow table whose column names are a subset of the table's."""

    async def known_signatures(self, signatures: pa.Array, window: SignatureWindow) -> set[str]:
        """Which of `signatures` are stored within `window` (ingest dedup)."""
