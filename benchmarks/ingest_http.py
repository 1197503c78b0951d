"""Transactions stored per second through POST /ingest, from a separate client process.

Starts `arbitrage serve` on a fresh data dir, posts 10k-record batches (JSON, or Arrow
IPC with `--format arrow`) from this process over several connections, and prints a table.
The first `--warmup` records are posted untimed and reported apart: a fresh process pays
for its first touch of every page it grows into (on a VM that hands freed memory back to
its host, several seconds of kernel time for the first 2 GB), which is not the sustained
rate. Usage:
    .venv/bin/python benchmarks/ingest_http.py [--records 1000000] [--warmup 300000] [--batch 10000] [--connections 16] [--format json] [--squeeze 1] [--set ingest.insert_min_rows=100000] [--redis] [--kafka]

`--kafka` turns `[kafka]` on against a Tansu broker of its own (on the same cores), so every
stored row's derived records are published by the relay too; the table adds how long the
relay took, after the last answer, to publish everything.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    CONTENT_TYPES,
    bodies_as,
    config_env,
    cpu_after_settling,
    ingest_stage_rows,
    ingest_stage_totals,
    machine,
    print_table,
    process_group_cpu_seconds,
    start_server,
)
from tests.services.kafka_broker import start_broker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--warmup", type=int, default=300_000, help="records posted before the timed ones")
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--format", choices=sorted(CONTENT_TYPES), default="json", help="body format (arrow: the IPC bulk fast path)"
    )
    parser.add_argument(
        "--squeeze", type=float, default=1.0, help="pack the simulated feed into N times less block time (denser)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a config override for the server, e.g. ingest.insert_min_rows=100000 (repeatable)",
    )
    parser.add_argument(
        "--redis",
        action="store_true",
        help="with a redis-server of its own as [redis] (cache, live feed through pub/sub)",
    )
    parser.add_argument(
        "--kafka", action="store_true", help="[kafka] on, against a Tansu broker of its own: the relay publishes too"
    )
    args = parser.parse_args()
    warmup_batches = max(1, -(-args.warmup // args.batch))  # at least one: its rate is printed
    total = args.records + warmup_batches * args.batch
    print(f"preparing {total:,} records ...", file=sys.stderr)
    all_bodies = bodies_as(args.format, total, args.batch, squeeze=args.squeeze)
    warmup, bodies = all_bodies[:warmup_batches], all_bodies[warmup_batches:]
    content_type = CONTENT_TYPES[args.format]
    megabytes = sum(len(b) for b in bodies) / 1e6
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        env = config_env(args.set)
        if args.kafka:
            broker = start_broker("tansu")
            stack.callback(broker.stop)
            env |= {"ARB_KAFKA__ENABLED": "true", "ARB_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap}
        server = start_server(stack, tmp / "data", redis=args.redis, env=env)
        client = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=args.connections))
        retries = 0

        def post(body: bytes) -> int:
            nonlocal retries
            while True:
                response = client.post(f"{server.url}/ingest", content=body, headers={"content-type": content_type})
                if response.status_code == 503:
                    retries += 1
                    time.sleep(float(response.headers.get("retry-after", "1")) / 10)
                    continue
                response.raise_for_status()
                return int(response.json()["accepted"])

        assert server.process is not None
        with ThreadPoolExecutor(args.connections) as pool:
            warmup_started = time.perf_counter()
            warmup_accepted = sum(pool.map(post, warmup))
            warmup_elapsed = time.perf_counter() - warmup_started
            metrics_before = stage_metrics(server.url)
            cpu_before = process_group_cpu_seconds(server.process.pid)
            started, client_started = time.perf_counter(), time.process_time()
            accepted = sum(pool.map(post, bodies))
            elapsed, client_cpu = time.perf_counter() - started, time.process_time() - client_started
        relay_lag = relay_drained(server.url) if args.kafka else None
        server_cpu = process_group_cpu_seconds(server.process.pid) - cpu_before
        metrics = {k: v - metrics_before.get(k, 0.0) for k, v in stage_metrics(server.url).items()}
        stored = httpx.get(f"{server.url}/stats", timeout=60).json()["transactions"]
        parts = httpx.get(f"{server.url}/health").json()
        pid = server.process.pid
        settled_cpu = cpu_after_settling(lambda: process_group_cpu_seconds(pid)) - cpu_before
        client.close()
    print_table(
        f"POST /ingest throughput ({args.format}, embedded chdb, features and risk as wired)",
        [
            ("machine", machine()),
            ("records posted (timed)", f"{len(bodies):,} batches x {args.batch:,}"),
            ("feed density", f"{args.squeeze:g} x the simulator's"),
            ("body size", f"{megabytes:,.0f} MB {args.format}"),
            ("client connections", args.connections),
            ("redis", "on (live feed through pub/sub, no client)" if args.redis else "off"),
            (
                "kafka",
                "off" if relay_lag is None else f"on (Tansu); relay done {relay_lag:.1f} s after the last answer",
            ),
            ("config overrides", ", ".join(args.set) or "none"),
            ("elapsed", f"{elapsed:.1f} s"),
            ("stored (timed)", f"{accepted:,}"),
            ("stored total (/stats)", f"{stored:,}"),
            ("503 retries", retries),
            (
                "warm-up, fresh process (untimed)",
                f"{warmup_accepted:,} in {warmup_elapsed:.1f} s = {warmup_accepted / warmup_elapsed:,.0f} tx/s",
            ),
            ("throughput", f"{accepted / elapsed:,.0f} tx/s"),
            ("server CPU", f"{server_cpu:.1f} s = {server_cpu / max(accepted, 1) * 1e6:.1f} us per stored row"),
            ("server cores busy", f"{server_cpu / elapsed:.2f}"),
            ("client cores busy (same machine)", f"{client_cpu / elapsed:.2f}"),
            (
                "server CPU once merges settle",
                f"{settled_cpu:.1f} s = {settled_cpu / max(accepted, 1) * 1e6:.1f} us per stored row",
            ),
            ("target", ">= 100,000 tx/s"),
            ("health", parts["status"]),
            *ingest_stage_rows(metrics),
        ],
    )


def relay_drained(url: str) -> float:
    """Seconds until the relay has published every stored row (its /health component shows none waiting)."""
    started = time.perf_counter()
    while True:
        relay = httpx.get(f"{url}/health", timeout=30).json()["components"]["kafka_relay"]
        if relay["status"] == "healthy" and not relay["waiting_rows"] and not relay["reading_back"]:
            return time.perf_counter() - started
        time.sleep(0.1)


def stage_metrics(url: str) -> dict[str, float]:
    return ingest_stage_totals(httpx.get(f"{url}/metrics", timeout=30).text)


if __name__ == "__main__":
    main()
