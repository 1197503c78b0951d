"""Shared benchmark helpers: machine description, table printing, simulated bodies."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa

from arbitrage.config import ENV_PREFIX
from arbitrage.simulator import Simulator
from tests.e2e.server import ServerProcess
from tests.services.redis_server import RedisServer

_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def print_table(title: str, rows: list[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in rows)
    print(f"\n{title}\n" + "-" * (width + 30))
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def _suffix(n: int) -> str:
    out = ""
    for _ in range(4):
        n, r = divmod(n, 58)
        out += _ALPHABET[r]
    return out


def unique_batches(
    total: int, batch: int, *, seed: int = 1, distinct: int = 100_000, squeeze: float = 1.0
) -> Iterator[list[dict[str, Any]]]:
    """`total` records in batches; `distinct` simulated ones re-used with fresh signatures.

    Each re-use moves the records forward in time (block time and slot) by the span of the
    simulated ones, as a live feed moves: replaying the same block times over and over
    would make every record after the first round late, which a live feed never is.
    `squeeze` > 1 packs the simulated records into that many times less block time (and
    fewer slots): a denser feed, whose feature windows hold more rows.
    """
    count = min(distinct, total)
    start_at = Simulator.start_for(total)
    base = Simulator(seed=seed, start=start_at).records(count)
    if squeeze != 1.0:
        first_time, first_slot = base[0]["block_time"], base[0]["slot"]
        base = [
            r
            | {
                "block_time": first_time + int((r["block_time"] - first_time) / squeeze),
                "slot": first_slot + int((r["slot"] - first_slot) / squeeze),
            }
            for r in base
        ]
    times = [r["block_time"] for r in base]
    slots = [r["slot"] for r in base]
    time_span = max(times) - min(times) + 400
    slot_span = max(slots) - min(slots) + 1
    produced = 0
    round_ = 0
    while produced < total:
        for start in range(0, len(base), batch):
            if produced >= total:
                return
            chunk = base[start : start + batch][: total - produced]
            tag = _suffix(round_)
            shift_ms, shift_slots = round_ * time_span, round_ * slot_span
            yield [
                r
                | {
                    "signature": r["signature"][:84] + tag,
                    "block_time": r["block_time"] + shift_ms,
                    "slot": r["slot"] + shift_slots,
                }
                for r in chunk
            ]
            produced += len(chunk)
        round_ += 1


def json_bodies(total: int, batch: int, **kwargs: Any) -> list[bytes]:
    encoder = msgspec.json.Encoder()
    return [encoder.encode(chunk) for chunk in unique_batches(total, batch, **kwargs)]


def arrow_bodies(total: int, batch: int, **kwargs: Any) -> list[bytes]:
    """The same records as `json_bodies`, each batch one Arrow IPC stream (the bulk fast path)."""
    from arbitrage.ingest import RAW_SCHEMA

    bodies = []
    for chunk in unique_batches(total, batch, **kwargs):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, RAW_SCHEMA) as writer:
            writer.write_table(pa.Table.from_pylist(chunk, schema=RAW_SCHEMA))
        bodies.append(sink.getvalue().to_pybytes())
    return bodies


CONTENT_TYPES = {"json": "application/json", "arrow": "application/vnd.apache.arrow.stream"}
"""`POST /ingest` bodies a benchmark can post (`--format`), with their content type."""


def bodies_as(body_format: str, total: int, batch: int, **kwargs: Any) -> list[bytes]:
    """`json_bodies` or `arrow_bodies`, by a benchmark's `--format`."""
    return (arrow_bodies if body_format == "arrow" else json_bodies)(total, batch, **kwargs)


def process_group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in a process group (Linux /proc).

    Counts what a server and its workers spent, whatever else runs on the machine, so a
    per-row CPU cost stays comparable between a quiet and a busy box.
    """
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_after_settling(cpu_seconds: Callable[[], float], *, idle_cores: float = 0.05, timeout: float = 180.0) -> float:
    """CPU seconds once a process has gone idle: the background merges its ingest started are done.

    Ingest leaves ClickHouse merges behind; a per-row cost read before they finish is lower
    than what the same rows cost in a steady feed, so the benchmarks report both.
    """
    deadline = time.monotonic() + timeout
    before = cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(2.0)
        now = cpu_seconds()
        if now - before < idle_cores * 2.0:
            return now
        before = now
    return cpu_seconds()


INGEST_STAGES = ("decode", "derive", "dedup", "enrich", "insert", "kafka batch_store", "kafka commit")
_STAGE_SAMPLE = re.compile(
    r"^(?:arbitrage_ingest_(?:batch_duration_seconds|insert_rows)|kafka_ingest_(batch_store|commit)_seconds)"
    r'_(sum|count)(?:\{stage="(\w+)"\})? (\S+)$'
)


def ingest_stage_totals(metrics_text: str) -> dict[str, float]:
    """Cumulative seconds and counts per ingest stage, and rows per insert, from Prometheus text."""
    found = {}
    for line in metrics_text.splitlines():
        if match := _STAGE_SAMPLE.match(line):
            kafka_step, kind, stage, value = match.groups()
            name = stage or (f"kafka {kafka_step}" if kafka_step else "insert_rows")
            found[f"{name}_{kind}"] = float(value)
    return found


def ingest_stage_rows(totals: dict[str, float]) -> list[tuple[str, str]]:
    """Table rows: mean rows per insert and mean wall time per batch of each stage."""
    rows = [
        (
            "rows per insert (mean)",
            f"{totals.get('insert_rows_sum', 0) / max(totals.get('insert_rows_count', 0), 1):,.0f}",
        )
    ]
    for stage in INGEST_STAGES:
        if count := totals.get(f"{stage}_count", 0):
            rows.append(
                (f"  {stage} per batch (mean)", f"{totals[f'{stage}_sum'] / count * 1000:.1f} ms x {count:,.0f}")
            )
    return rows


def config_env(overrides: list[str]) -> dict[str, str]:
    """`section.key=value` overrides as the `ARB_SECTION__KEY` variables the server reads."""
    env = {}
    for override in overrides:
        name, separator, value = override.partition("=")
        section, dot, key = name.partition(".")
        if not (separator and dot and section and key):
            raise SystemExit(f"--set {override!r}: expected section.key=value")
        env[f"{ENV_PREFIX}{section.upper()}__{key.upper()}"] = value
    return env


def start_server(
    stack: contextlib.ExitStack, data_dir: Path, *, redis: bool = False, env: dict[str, str] | None = None
) -> ServerProcess:
    """`arbitrage serve` on `data_dir`, with `[redis]` on a redis-server of its own when `redis`; both stop with `stack`."""
    env = dict(env or {})
    if redis:
        server = RedisServer(data_dir.with_name(f"{data_dir.name}-redis")).start()
        stack.callback(server.stop)
        env["ARB_REDIS__URL"] = server.url
    return stack.enter_context(ServerProcess(data_dir, env=env))
