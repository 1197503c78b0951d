"""What `/admin/status` reports and what `/admin/warehouse/optimize` does."""

from __future__ import annotations

import asyncio
import collections
import platform
import time
from importlib import metadata
from typing import Any

from arbitrage import __version__
from arbitrage.errors import ValidationError
from arbitrage.storage import Warehouse
from arbitrage.telemetry import METRICS

_PACKAGES = ("litestar", "granian", "msgspec", "chdb", "asynch", "polars", "pyarrow", "confluent-kafka", "redis")


def versions() -> dict[str, str]:
    found = {"arbitrage": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def ingest_totals() -> dict[str, dict[str, int]]:
    """Records seen by ingest since the process started, by source and outcome."""
    totals: dict[str, dict[str, int]] = {}
    for family in METRICS.transactions.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                source, outcome = sample.labels["source"], sample.labels["outcome"]
                totals.setdefault(source, {})[outcome] = int(sample.value)
    return totals


class IngestRate:
    """Stored records per second over the last minute, from periodic samples of the counters."""

    def __init__(self, window_seconds: float = 60.0) -> None:
        self.window = window_seconds
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self.sample()

    def sample(self) -> None:
        now = time.monotonic()
        stored = sum(outcomes.get("stored", 0) for outcomes in ingest_totals().values())
        self._samples.append((now, stored))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()

    async def keep_sampling(self, every_seconds: float = 10.0) -> None:
        """Sample in the background from start-up: sampled only when `/admin/status` asked, the
        first answer was always 0.0 and a rare poll averaged over the whole gap since the last."""
        while True:
            await asyncio.sleep(every_seconds)
            self.sample()

    def per_second(self) -> float:
        self.sample()
        (first_at, first), (last_at, last) = self._samples[0], self._samples[-1]
        return round((last - first) / (last_at - first_at), 2) if last_at > first_at else 0.0


async def warehouse_status(warehouse: Warehouse) -> dict[str, Any]:
    """Active parts, rows, bytes on disk and compression per table of the app's database."""
    table = await warehouse.query_arrow(
        "SELECT table, count() AS parts, sum(rows) AS rows, sum(bytes_on_disk) AS bytes_on_disk, "
        "sum(data_compressed_bytes) AS compressed_bytes, sum(data_uncompressed_bytes) AS uncompressed_bytes "
        "FROM system.parts WHERE database = {db:String} AND active GROUP BY table ORDER BY table",
        {"db": warehouse.database},
    )
    tables = table.to_pylist()
    for row in tables:
        row["compression_ratio"] = (
            round(row["uncompressed_bytes"] / row["compressed_bytes"], 2) if row["compressed_bytes"] else None
        )
    server_version = (await warehouse.query_arrow("SELECT version() AS v")).column("v")[0].as_py()
    return {
        "backend": warehouse.backend,
        "database": warehouse.database,
        "clickhouse_version": server_version,
        "parts": sum(r["parts"] for r in tables),
        "bytes_on_disk": sum(r["bytes_on_disk"] for r in tables),
        "tables": tables,
    }


async def optimize_table(warehouse: Warehouse, table: str, *, final: bool, cluster: str = "") -> dict[str, Any]:
    """Merge a table's parts (`OPTIMIZE TABLE … [FINAL]`); the name must be a MergeTree table of the database.

    Raises:
        ValidationError: naming `table` when it is not one.
    """
    known = await warehouse.query_arrow(
        "SELECT name FROM system.tables WHERE database = {db:String} AND engine LIKE '%MergeTree%'",
        {"db": warehouse.database},
    )
    names = set(known.column("name").to_pylist())
    if table not in names:
        raise ValidationError("table", f"not a MergeTree table of {warehouse.database}: {table[:64]!r}")
    before = await _parts(warehouse, table)
    started = time.perf_counter()
    on_cluster = f" ON CLUSTER `{cluster}`" if cluster else ""
    await warehouse.execute(f"OPTIMIZE TABLE `{warehouse.database}`.`{table}`{on_cluster}{' FINAL' if final else ''}")
    return {
        "table": table,
        "final": final,
        "parts_before": before,
        "parts_after": await _parts(warehouse, table),
        "seconds": round(time.perf_counter() - started, 3),
    }


async def _parts(warehouse: Warehouse, table: str) -> int:
    result = await warehouse.query_arrow(
        "SELECT count() AS n FROM system.parts WHERE database = {db:String} AND table = {t:String} AND active",
        {"db": warehouse.database, "t": table},
    )
    return int(result.column("n")[0].as_py())
