"""The seam between the warehouse and everything above it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any, Protocol

import pyarrow as pa


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

    async def known_signatures(self, signatures: pa.Array, start: datetime, end: datetime) -> set[str]:
        """Which of `signatures` are stored with a block time in [start, end] (ingest dedup)."""
