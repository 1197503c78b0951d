"""Export throughput: N stored rows with every column, in each format, from the embedded warehouse.

    .venv/bin/python benchmarks/export.py [--rows 1000000] [--formats parquet,csv,...] [--warehouse DIR]

Fills a temporary embedded warehouse (or, with `--warehouse`, a kept one that later runs
with the same `--rows` reuse) with synthetic transactions (all stored columns,
1–3 legs each), then runs one export per format in a fresh child process (so peak memory is
that export's alone) and prints rows/s, MB/s, file size and peak RSS. Targets on a 2-core
box: parquet, arrow, csv ≥ 1 M rows in ≤ 5 s; json, hdf5, tfrecord ≥ 1 M rows/min.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from arbitrage.model import STORED_SCHEMA

FORMATS = ["parquet", "arrow", "csv", "json", "hdf5", "tfrecord"]
DEXES = np.array(["raydium_amm", "orca_whirlpool", "meteora_dlmm", "phoenix"])
TOKENS = np.array([f"{c * 43}{i}" for i, c in enumerate("ABCDEFGH")])


def synthetic(n: int, seed: int, start: datetime) -> pa.Table:
    """n transactions in stored shape, built column-wise (no per-row Python)."""
    rng = np.random.default_rng(seed)
    hops = rng.integers(1, 4, n)
    legs = int(hops.sum())
    row = np.repeat(np.arange(n), hops)
    leg_frame = pl.DataFrame(
        {
            "row": row,
            "dex": DEXES[rng.integers(0, len(DEXES), legs)],
            "pool": np.full(legs, "P" * 44),
            "token_in": TOKENS[rng.integers(0, len(TOKENS), legs)],
            "token_out": TOKENS[rng.integers(0, len(TOKENS), legs)],
            "amount_in": rng.integers(1, 2**60, legs, dtype=np.uint64),
            "amount_out": rng.integers(1, 2**60, legs, dtype=np.uint64),
            "decimals_in": rng.integers(5, 10, legs).astype(np.uint8),
            "decimals_out": rng.integers(5, 10, legs).astype(np.uint8),
            "reserve_in": rng.integers(1, 10**12, legs, dtype=np.uint64),
            "reserve_out": rng.integers(1, 10**12, legs, dtype=np.uint64),
            "price": rng.random(legs) * 100,
        }
    )
    grouped = leg_frame.group_by("row", maintain_order=True).agg(
        pl.struct(pl.exclude("row")).alias("legs"),
        pl.col("dex").alias("dexes"),
        pl.col("token_in").first().alias("first_in"),
        pl.col("token_out").alias("outs"),
    )
    base_ms = int(start.timestamp() * 1000)
    frame = pl.DataFrame(
        {
            "signature": pl.Series(np.arange(n) + seed * 10**9).cast(pl.String).str.pad_start(88, "5"),
            "slot": np.arange(n, dtype=np.uint64) + 250_000_000,
            "block_time": pl.Series(base_ms + np.arange(n) * 400).cast(pl.Datetime("ms", "UTC")),
            "signer": TOKENS[rng.integers(0, len(TOKENS), n)],
            "success": rng.random(n) < 0.8,
            "fee_lamports": np.full(n, 5000, np.uint64),
            "priority_fee_lamports": rng.integers(0, 10**6, n, dtype=np.uint64),
            "jito_tip_lamports": rng.integers(0, 10**6, n, dtype=np.uint64),
            "other_cost_lamports": np.zeros(n, np.uint64),
            "compute_units_consumed": rng.integers(10**4, 10**6, n, dtype=np.uint64),
            "compute_unit_limit": np.full(n, 1_400_000, np.uint64),
            "bundle_id": pl.Series(np.arange(n)).cast(pl.String),
            "leader": np.full(n, "L" * 44),
            "hops": hops.astype(np.uint8),
            "circular": rng.random(n) < 0.6,
            "gross_revenue": rng.random(n),
            "gross_revenue_sol": rng.random(n),
            "total_cost_lamports": rng.integers(5000, 10**6, n, dtype=np.uint64),
            "total_cost_sol": rng.random(n) / 1000,
            "net_profit_sol": rng.normal(0.001, 0.01, n),
            "source": np.full(n, "benchmark"),
            "kafka_partition": pl.Series([None] * n, dtype=pl.Int32),
            "kafka_offset": pl.Series([None] * n, dtype=pl.Int64),
            "ingested_at": pl.Series(np.full(n, base_ms)).cast(pl.Datetime("ms", "UTC")),
        }
    ).with_columns(
        legs=grouped["legs"],
        dexes=grouped["dexes"],
        route=pl.concat_list(grouped["first_in"], grouped["outs"]),
        start_token=grouped["first_in"],
    )
    return frame.select(list(STORED_SCHEMA)).cast(STORED_SCHEMA).to_arrow()  # type: ignore[arg-type]


async def fill(data_dir: Path, rows: int) -> None:
    from arbitrage.storage import EmbeddedWarehouse

    warehouse = EmbeddedWarehouse(data_dir)
    await warehouse.start()
    chunk = 250_000
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for i, offset in enumerate(range(0, rows, chunk)):
        size = min(chunk, rows - offset)
        await warehouse.insert_arrow("transactions", synthetic(size, i, start + timedelta(days=i)))
    await warehouse.execute(f"OPTIMIZE TABLE {warehouse.database}.transactions FINAL")
    await warehouse.close()


async def run_one(data_dir: Path, fmt: str, out: Path) -> dict[str, float]:
    from arbitrage.export import Destination, ExportRequest, plan_export, run_export, table_columns
    from arbitrage.storage import EmbeddedWarehouse

    warehouse = EmbeddedWarehouse(data_dir)
    await warehouse.start()
    columns = await table_columns(warehouse)
    plan = plan_export(fmt, ExportRequest(), columns)
    sampler = RssSampler()
    baseline = sampler.current_mb()
    sampler.start()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    result = await run_export(
        warehouse, plan, Destination(str(out), "bench"), job_id="bench", ingested_upto=datetime.now(UTC)
    )
    seconds = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    sampler.stop()
    await warehouse.close()
    return {
        "rows": result.rows,
        "bytes": result.bytes,
        "seconds": seconds,
        "user": cpu_after.ru_utime - cpu_before.ru_utime,
        "sys": cpu_after.ru_stime - cpu_before.ru_stime,
        "peak_mb": sampler.peak_mb,
        "base_mb": baseline,
        "columns": len(columns),
    }


class RssSampler(threading.Thread):
    """Peak resident memory of this process while an export runs (sampled every 20 ms)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mb = 0.0
        self._done = threading.Event()

    @staticmethod
    def current_mb() -> float:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20

    def run(self) -> None:
        while not self._done.wait(0.02):
            self.peak_mb = max(self.peak_mb, self.current_mb())

    def stop(self) -> None:
        self._done.set()
        self.join()
        self.peak_mb = max(self.peak_mb, self.current_mb())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument(
        "--warehouse", type=Path, help="keep the filled warehouse in this directory and reuse it when --rows matches"
    )
    parser.add_argument("--child", nargs=3, metavar=("DATA_DIR", "FORMAT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        data_dir, fmt, out = args.child
        print(json.dumps(asyncio.run(run_one(Path(data_dir), fmt, Path(out)))))
        return
    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        data_dir = args.warehouse or Path(tmp) / "warehouse"
        marker = data_dir / "benchmark-rows"
        if marker.exists() and marker.read_text() == str(args.rows):
            filled = "reused"
        elif data_dir.exists() and any(data_dir.iterdir()):
            parser.error(f"{data_dir} holds something other than a {args.rows:,}-row benchmark warehouse")
        else:
            started = time.perf_counter()
            asyncio.run(fill(data_dir, args.rows))
            marker.write_text(str(args.rows))
            filled = f"{time.perf_counter() - started:.1f} s to generate and insert"
        print(
            f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
        )
        print(f"rows: {args.rows:,} stored ({filled}); every table column exported")
        print()
        print(
            f"{'format':<10}{'cols':>5}{'seconds':>9}{'user s':>8}{'sys s':>7}{'rows/s':>12}{'MB/s':>9}{'size MB':>10}"
            f"{'RSS before':>12}{'peak RSS MB':>13}"
        )
        for fmt in args.formats.split(","):
            out = Path(tmp) / f"out-{fmt}"
            child = subprocess.run(
                [sys.executable, __file__, "--child", str(data_dir), fmt, str(out)],
                capture_output=True,
                text=True,
                check=False,
            )
            if child.returncode != 0:
                print(f"{fmt:<10} failed: {child.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(child.stdout.strip().splitlines()[-1])
            mb = r["bytes"] / 1e6
            print(
                f"{fmt:<10}{r['columns']:>5}{r['seconds']:>9.2f}{r['user']:>8.2f}{r['sys']:>7.2f}"
                f"{r['rows'] / r['seconds']:>12,.0f}{mb / r['seconds']:>9.1f}"
                f"{mb:>10.1f}{r['base_mb']:>12.0f}{r['peak_mb']:>13.0f}"
            )


if __name__ == "__main__":
    main()
