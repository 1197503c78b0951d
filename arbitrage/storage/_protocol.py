"""The seam between the warehouse and everything above it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any, Protocol

import msgspec
import pyarrow as pa


class SignatureWindow(msgspec.Struct, frozen=True):
    """Where a batch's signatures could already be stored: its block times and its slots.

    A transaction's slot is fixed on chain, while sources may disagree on its block time
    (seconds against milliseconds, a collector's clock, a re-derived time): a stored copy
    counts when its block time is within the batch's range or its slot within the batch's
    slots, however far apart the two block times are. Each of the two reads a narrow
    stretch of the table: the sort key serves the first, the `slot` minmax index
    (migration 011) the second.
    """

    start: datetime
    end: datetime
    first_slot: int
    last_slot: int

    def stored_signatures(self, table: str, also: str = "") -> tuple[str, dict[str, Any]]:
        """A query for the signatures stored in the window, each row once; `also` is ANDed to its conditions."""
        in_time = "block_time BETWEEN {start:DateTime64(3, 'UTC')} AND {end:DateTime64(3, 'UTC')}"
        sql = (
            f"SELECT signature FROM {table} WHERE {in_time}{also} "
            f"UNION ALL SELECT signature FROM {table} "
            f"WHERE slot BETWEEN {{first_slot:UInt64}} AND {{last_slot:UInt64}} AND NOT ({in_time}){also}"
        )
        params = {"start": self.start, "end": self.end, "first_slot": self.first_slot, "last_slot": self.last_slot}
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

    def mutation_target(self, table: str) -> str:
        """What `ALTER TABLE … UPDATE/DELETE` names to change `table`'s rows (a cluster's are in its local tables)."""
        ...

    async def known_signatures(self, signatures: pa.Array, window: SignatureWindow) -> set[str]:
        """Which of `signatures` are stored within `window` (ingest dedup)."""
