"""The clickhouse backend against a real server (set ARB_TEST_CLICKHOUSE_URL to run).

Example: ARB_TEST_CLICKHOUSE_URL=clickhouse://default:@127.0.0.1:9000/arbitrage_test
(optionally ARB_TEST_CLICKHOUSE_CLUSTER=<name> for the cluster layout). Each test uses a
fresh database, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import msgspec
import pyarrow as pa
import pytest

from arbitrage.config import StorageSettings
from arbitrage.model import STORED_COLUMNS
from arbitrage.simulator import Simulator
from arbitrage.storage import (
    SignatureWindow,
    apply_retention,
    discover,
    migrations_dir,
    open_warehouse,
    retention_status,
)
from arbitrage.storage._clickhouse import ClickHouseWarehouse

URL = os.environ.get("ARB_TEST_CLICKHOUSE_URL", "")
CLUSTER = os.environ.get("ARB_TEST_CLICKHOUSE_CLUSTER", "")

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not URL, reason="ARB_TEST_CLICKHOUSE_URL is not set (no ClickHouse server to test against)"),
]


@pytest.fixture
async def server() -> AsyncIterator[ClickHouseWarehouse]:
    database = f"arb_test_{uuid.uuid4().hex[:12]}"
    settings = StorageSettings(backend="clickhouse", url=URL, database=database, cluster=CLUSTER, pool_size=4)
    store = open_warehouse(settings)
    assert isinstance(store, ClickHouseWarehouse)
    await store.start()
    try:
        yield store
    finally:
        on_cluster = f" ON CLUSTER {CLUSTER}" if CLUSTER else ""
        await store.execute(f"DROP DATABASE IF EXISTS {database}{on_cluster} SYNC")
        await store.close()


async def test_migrations_create_every_model_column_and_are_recorded_once(server: ClickHouseWarehouse) -> None:
    table = await server.query_arrow(
        "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = 'transactions'",
        {"db": server.database},
    )
    stored = dict(zip(table.column("name").to_pylist(), table.column("type").to_pylist(), strict=True))
    for column in STORED_COLUMNS:
        assert stored.get(column.name) == column.clickhouse_type, column.name
    versions = await server.query_arrow(f"SELECT DISTINCT version FROM {server.database}.schema_migrations")
    assert sorted(versions.column("version").to_pylist()) == [m.version for m in discover(migrations_dir())]


async def test_ping_reports_a_latency(server: ClickHouseWarehouse) -> None:
    assert await server.ping() >= 0


async def test_an_arrow_insert_reads_back_and_streams_in_batches(server: ClickHouseWarehouse) -> None:
    data = pa.table(
        {
            "received_at": pa.array([datetime(2025, 1, 1, tzinfo=UTC)] * 1000, pa.timestamp("ms", "UTC")),
            "source": ["test"] * 1000,
            "record_index": pa.array(range(1000), pa.uint32()),
            "field": ["f"] * 1000,
            "reason": ["it's \\ weird\t"] * 1000,
            "raw": [b"{}"] * 1000,
        }
    )
    await server.insert_arrow("dead_letters", data)
    table = await server.query_arrow(
        f"SELECT count() AS n, any(reason) AS reason FROM {server.database}.dead_letters WHERE source = {{s:String}}",
        {"s": "test"},
    )
    assert table.to_pylist() == [{"n": 1000, "reason": "it's \\ weird\t"}]
    batches = [
        b
        async for b in server.stream_arrow(
            f"SELECT record_index FROM {server.database}.dead_letters ORDER BY record_index", batch_rows=100
        )
    ]
    assert sum(b.num_rows for b in batches) == 1000
    assert len(batches) > 1


async def test_known_signatures_finds_exactly_the_stored_ones_in_the_window(server: ClickHouseWarehouse) -> None:
    from arbitrage.app import start_services
    from arbitrage.config import load_settings

    settings = load_settings(
        env={},
        overrides={
            "storage.backend": "clickhouse",
            "storage.url": URL,
            "storage.database": server.database,
            "storage.cluster": CLUSTER,
        },
    )
    services = await start_services(settings)
    try:
        records = Simulator(seed=3).records(50)

        report = await services.ingest.ingest_records([msgspec.json.encode(r) for r in records], source="test")
        assert report.accepted == 50
        again = await services.ingest.ingest_records([msgspec.json.encode(r) for r in records], source="test")
        assert (again.accepted, again.duplicates) == (0, 50)
    finally:
        await services.warehouse.close()
    signatures = pa.array([r["signature"] for r in records[:10]] + ["NotStored1111111111111111111111111111111111111"])
    now = datetime.now(UTC)
    window = SignatureWindow(now - timedelta(days=3650), now + timedelta(days=1), 0, 2**63)
    found = await server.known_signatures(signatures, window)
    assert found == {r["signature"] for r in records[:10]}


async def test_execute_binds_typed_parameters_safely(server: ClickHouseWarehouse) -> None:
    await server.execute(
        f"INSERT INTO {server.database}.dead_letters (received_at, source, record_index, field, reason, raw) "
        "SELECT {at:DateTime64(3, 'UTC')}, {source:String}, {i:UInt32}, 'f', {reason:String}, ''",
        {"at": "2025-01-01 00:00:00.123", "source": "x'); DROP TABLE t; --", "i": 7, "reason": "a\\b"},
    )
    table = await server.query_arrow(
        f"SELECT source, record_index, reason, toUnixTimestamp64Milli(received_at) AS ms FROM {server.database}.dead_letters"
    )
    assert table.to_pylist() == [
        {"source": "x'); DROP TABLE t; --", "record_index": 7, "reason": "a\\b", "ms": 1735689600123}
    ]


async def test_retention_is_set_on_the_tables_holding_the_rows_and_an_unchanged_one_alters_nothing(
    server: ClickHouseWarehouse,
) -> None:
    assert await apply_retention(server, 3) == ["transactions", "dead_letters"]
    assert await apply_retention(server, 3) == []
    status = await retention_status(server, 3)
    assert status == {"retention_days": 3, "oldest_block_time": None}
    assert await apply_retention(server, 0) == ["transactions", "dead_letters"]
    assert await apply_retention(server, 0) == []
