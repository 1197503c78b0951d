"""Ingest throughput with telemetry off, with metrics (the default), and with metrics + tracing.

Each run is a fresh process on a fresh embedded warehouse that stores the same simulated
records through the real ingest path (decode → derive → dedup → features → risk → insert,
`IngestService.ingest_records`, 10 k-record batches). Modes:
- `off`: Prometheus metric updates replaced by no-ops, tracing none;
- `metrics`: as shipped by default (metrics on, tracing none);
- `metrics+tracing`: metrics on, tracing on with every span exported (console exporter
  into /dev/null, so span building, batching and serialising are all paid).
Runs alternate between modes and the median of `--repeats` is reported. Target: ≤ 5 %.

    .venv/bin/python benchmarks/overhead.py [--records 300000] [--batch 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import machine, print_table, unique_batches

MODES = ("off", "metrics", "metrics+tracing")


def disable_metrics() -> None:
    """Make every prometheus_client update a no-op (what 'no metrics' would cost)."""
    from prometheus_client import Counter, Gauge, Histogram
    from prometheus_client.metrics import MetricWrapperBase

    def same(self: object, *args: object, **kwargs: object) -> object:
        return self

    def nothing(self: object, *args: object, **kwargs: object) -> None:
        return None

    MetricWrapperBase.labels = same  # type: ignore[assignment,method-assign]
    Counter.inc = nothing  # type: ignore[method-assign]
    Gauge.inc = Gauge.dec = Gauge.set = nothing  # type: ignore[method-assign]
    Histogram.observe = nothing  # type: ignore[method-assign]


def worker(mode: str, records: int, batch: int) -> dict[str, float]:
    import msgspec

    from arbitrage.app import start_services
    from arbitrage.config import load_settings
    from arbitrage.telemetry import configure_tracing, flush_tracing

    if mode == "off":
        disable_metrics()
    if mode == "metrics+tracing":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        configure_tracing("console", exporter=ConsoleSpanExporter(out=open(os.devnull, "w")))  # noqa: SIM115
    encoder = msgspec.json.Encoder()
    chunks = [[encoder.encode(r) for r in b] for b in unique_batches(records + batch, batch, seed=11)]

    async def run(data_dir: str) -> dict[str, float]:
        settings = load_settings(env={}, overrides={"storage.data_dir": data_dir})
        services = await start_services(settings)
        try:
            await services.ingest.ingest_records(chunks[0], source="bench")  # warm-up, not timed
            gc.collect()
            started = time.perf_counter()
            cpu = time.process_time()
            stored = 0
            for chunk in chunks[1:]:
                stored += (await services.ingest.ingest_records(chunk, source="bench")).accepted
            elapsed = time.perf_counter() - started
            cpu_seconds = time.process_time() - cpu
            flush_tracing()
        finally:
            close = getattr(services, "close", None) or services.warehouse.close
            await close()
        return {"stored": stored, "elapsed": elapsed, "cpu": cpu_seconds}

    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(run(str(Path(tmp) / "data")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.records, args.batch)))
        return

    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for repeat in range(args.repeats):
        for mode in MODES:
            print(f"run {repeat + 1}/{args.repeats}: {mode} ...", file=sys.stderr, flush=True)
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    mode,
                    "--records",
                    str(args.records),
                    "--batch",
                    str(args.batch),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            results[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))

    def rate(mode: str, key: str) -> float:
        return statistics.median(r["stored"] / r[key] for r in results[mode])

    base_wall, base_cpu = rate("off", "elapsed"), rate("off", "cpu")
    rows: list[tuple[str, object]] = [
        ("machine", machine()),
        ("records per run (timed)", f"{args.records:,} in {args.batch:,}-record batches, median of {args.repeats}"),
    ]
    for mode in MODES:
        wall, cpu = rate(mode, "elapsed"), rate(mode, "cpu")
        rows.append(
            (
                mode,
                f"{wall:>9,.0f} tx/s wall ({(base_wall - wall) / base_wall:+6.1%} overhead)   "
                f"{cpu:>9,.0f} tx/CPU-s ({(base_cpu - cpu) / base_cpu:+6.1%})",
            )
        )
    rows.append(("target", "<= 5 % overhead with tracing and metrics on"))
    print_table("Telemetry overhead on the ingest path (embedded chdb, features and risk as wired)", rows)


if __name__ == "__main__":
    main()
