"""Features + risk throughput: simulated transactions through FeatureEngine and score_risk.

    python benchmarks/features.py [--rows 1000000] [--batch 10000] [--threads 1] [--squeeze 1] [--tokens 6]

Prints one table (machine, sizes, figures) so two runs can be compared. `--threads 1`
(the default) pins polars to one core, the issue's target being >= 300,000 rows/s there;
risk scoring of a 1,000-row batch should take <= 10 ms. Wall-clock figures suffer when
other processes share the cores, so the table also gives the rate per second of this
process's CPU time and the load average during the run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--slot-gap", type=float, default=3.0, help="mean slots between non-burst transactions")
    parser.add_argument("--tokens", type=int, default=6, help="tokens traded against SOL: the pairs, and their bars")
    parser.add_argument(
        "--squeeze",
        type=float,
        default=1.0,
        help="divide the time and slot between transactions by this (a denser feed: more rows per window)",
    )
    args = parser.parse_args()
    os.environ["POLARS_MAX_THREADS"] = str(args.threads)

    import polars as pl

    from arbitrage.features import FeatureEngine
    from arbitrage.features._synthetic import stored_rows
    from arbitrage.risk import score_risk

    data = stored_rows(args.rows, seed=42, mean_slot_gap=args.slot_gap, tokens=args.tokens)
    if args.squeeze != 1.0:
        first_slot, first_time = data.get_column("slot").min(), data.get_column("block_time").min()
        data = data.with_columns(
            (first_slot + (pl.col("slot") - first_slot) / args.squeeze).cast(pl.UInt64).alias("slot"),
            (first_time + (pl.col("block_time") - first_time) / args.squeeze).alias("block_time"),
        )
    engine = FeatureEngine()
    engine.process(data.head(args.batch))  # warm-up: first-call costs, not steady state
    engine = FeatureEngine()
    feature_s = risk_s = cpu_s = 0.0
    for start in range(0, data.height, args.batch):
        batch = data.slice(start, args.batch)
        c0 = time.process_time()
        t0 = time.perf_counter()
        featured = engine.process(batch)
        t1 = time.perf_counter()
        score_risk(featured)
        feature_s += t1 - t0
        risk_s += time.perf_counter() - t1
        cpu_s += time.process_time() - c0
    sample = featured.head(1_000)
    timings = []
    for _ in range(50):
        t0 = time.perf_counter()
        score_risk(sample)
        timings.append(time.perf_counter() - t0)
    span_h = (data.get_column("block_time").max() - data.get_column("block_time").min()).total_seconds() / 3600  # type: ignore[operator, union-attr]
    rows = [
        ("machine", f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip()),
        ("python / polars", f"{sys.version.split()[0]} / {pl.__version__}, polars threads {pl.thread_pool_size()}"),
        ("rows / batch", f"{data.height:,} / {args.batch:,}"),
        ("simulated span", f"{span_h:.1f} h, {data.get_column('slot').n_unique():,} slots"),
        ("density", f"{data.height / (span_h * 3600):,.0f} transactions per second of block time"),
        ("state at end", f"tail {engine.state.tail.height:,} rows, bars {engine.state.bars.height:,}"),
        ("features", f"{data.height / feature_s:,.0f} rows/s ({feature_s:.2f} s)"),
        ("risk", f"{data.height / risk_s:,.0f} rows/s ({risk_s:.2f} s)"),
        ("features + risk", f"{data.height / (feature_s + risk_s):,.0f} rows/s"),
        (
            "features + risk, CPU",
            f"{data.height / cpu_s:,.0f} rows/s of process CPU time (less sensitive to a busy machine)",
        ),
        ("load average", " / ".join(f"{x:.2f}" for x in os.getloadavg())),
        ("risk, 1,000 rows", f"median {statistics.median(timings) * 1e3:.2f} ms"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"| {'measure':<{width}} | value |\n| {'-' * width} | --- |")
    for key, value in rows:
        print(f"| {key:<{width}} | {value} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
