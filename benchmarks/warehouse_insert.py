"""What an inserted row costs the embedded warehouse: the insert itself, and the merges it causes.

Stores simulated transactions through the ingest pipeline, reads them back as stored rows,
then times (process CPU, every chdb thread included) inserts with merges stopped, with and
without the daily views, one merge of ten equal parts as the table's settings make it
(vertical for 32k+ rows) and forced horizontal, and 12k-row inserts until their merges
settle. Usage:
    .venv/bin/python benchmarks/warehouse_insert.py [--rows 120000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arbitrage.app import start_services
from arbitrage.config import load_settings
from arbitrage.storage import EmbeddedWarehouse
from benchmarks._common import cpu_after_settling, machine, print_table, unique_batches

HORIZONTAL = "min_rows_for_wide_part = 1000000, vertical_merge_algorithm_min_rows_to_activate = 1000000"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=120_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        services = await start_services(load_settings(None, overrides={"storage.data_dir": tmp}), jobs=False)
        encoder = msgspec.json.Encoder()
        for batch in unique_batches(args.rows, 20_000, seed=3):
            await services.ingest.ingest_records([encoder.encode(r) for r in batch], source="benchmark")
        warehouse = services.warehouse
        assert isinstance(warehouse, EmbeddedWarehouse)
        db = warehouse.database
        stored = await warehouse.query_arrow(f"SELECT * FROM {db}.transactions ORDER BY block_time, signature")
        results: list[tuple[str, str]] = [("machine", machine()), ("stored rows", f"{stored.num_rows:,}")]
        await warehouse.execute("SYSTEM STOP MERGES")
        for size in (1_000, 12_000):
            for table in ("transactions", await _copy_of_transactions(warehouse, f"no_views_{size}")):
                cpu = []
                for _ in range(5):
                    started = time.process_time()
                    await warehouse.insert_arrow(table, stored.slice(0, size))
                    cpu.append(time.process_time() - started)
                views = "with" if table == "transactions" else "without"
                results.append((f"insert {size:,} rows, merges stopped, {views} daily views", _per_row(min(cpu), size)))
        part = stored.num_rows // 10
        for name, settings in (("as configured", ""), ("forced horizontal", HORIZONTAL)):
            table = await _copy_of_transactions(warehouse, f"merge_{len(results)}", settings)
            for first in range(0, part * 10, part):
                await warehouse.insert_arrow(table, stored.slice(first, part))
            await warehouse.execute(f"SYSTEM START MERGES {db}.{table}")
            cpu_after_settling(time.process_time)
            started = time.process_time()
            await warehouse.execute(f"OPTIMIZE TABLE {db}.{table} FINAL")
            cpu = time.process_time() - started
            results.append((f"merge 10 x {part:,}-row parts, {name}", _per_row(cpu, part * 10)))
        await warehouse.execute("SYSTEM START MERGES")
        cpu_after_settling(time.process_time)
        target = await _copy_of_transactions(warehouse, "settled")
        started = time.process_time()
        for first in range(0, stored.num_rows, 12_000):
            await warehouse.insert_arrow(target, stored.slice(first, 12_000))
        cpu = cpu_after_settling(time.process_time) - started
        results.append(
            ("12k-row inserts + their merges, until settled, without daily views", _per_row(cpu, stored.num_rows))
        )
        await services.close()
    print_table("Embedded warehouse: CPU per inserted row (chdb)", results)


async def _copy_of_transactions(warehouse: EmbeddedWarehouse, name: str, settings: str = "") -> str:
    """An empty table like `transactions` (settings, codecs, indexes) without its daily views."""
    await warehouse.execute(f"CREATE TABLE {warehouse.database}.{name} AS {warehouse.database}.transactions")
    if settings:
        await warehouse.execute(f"ALTER TABLE {warehouse.database}.{name} MODIFY SETTING {settings}")
    return name


def _per_row(cpu_seconds: float, rows: int) -> str:
    return f"{cpu_seconds * 1e6 / rows:.2f} us ({cpu_seconds * 1e3:,.0f} ms CPU)"


if __name__ == "__main__":
    asyncio.run(main())
