"""The in-memory copy of `api_keys` against writes that land while a refresh reads."""

from __future__ import annotations

import asyncio
from typing import Any

import pyarrow as pa
import pytest

from arbitrage.security._keys import KeyStore
from arbitrage.storage import EmbeddedWarehouse

pytestmark = pytest.mark.anyio


class _HeldReads:
    """The real warehouse, with reads that wait until released: a refresh caught mid-query."""

    def __init__(self, warehouse: EmbeddedWarehouse) -> None:
        self._warehouse = warehouse
        self.database = warehouse.database
        self.hold = False
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def query_arrow(self, sql: str, params: dict[str, Any]) -> pa.Table:
        if not self.hold:
            return await self._warehouse.query_arrow(sql, params)
        table = await self._warehouse.query_arrow(sql, params)
        self.started.set()
        await self.release.wait()
        return table

    async def insert_arrow(self, table_name: str, table: pa.Table) -> None:
        await self._warehouse.insert_arrow(table_name, table)


async def _refresh_overlapping(store: KeyStore, reads: _HeldReads, write: Any) -> Any:
    reads.hold = True
    refresh = asyncio.create_task(store.reload())
    await reads.started.wait()
    reads.hold = False
    result = await write
    reads.release.set()
    await refresh
    return result


async def test_a_key_revoked_while_a_refresh_reads_stays_revoked(warehouse: EmbeddedWarehouse) -> None:
    reads = _HeldReads(warehouse)
    store = KeyStore(reads)  # type: ignore[arg-type]
    await store.start(refresh=False)
    created = await store.create("bot", ["read"])
    assert store.verify(created.token) is not None

    await _refresh_overlapping(store, reads, store.revoke(created.key.id))

    assert store.verify(created.token) is None
    await store.reload()
    assert store.verify(created.token) is None


async def test_a_key_created_while_a_refresh_reads_works_at_once(warehouse: EmbeddedWarehouse) -> None:
    reads = _HeldReads(warehouse)
    store = KeyStore(reads)  # type: ignore[arg-type]
    await store.start(refresh=False)

    created = await _refresh_overlapping(store, reads, store.create("bot", ["export"]))

    assert store.verify(created.token) == (created.key.id, frozenset({"export", "read"}))
