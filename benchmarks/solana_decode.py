"""Solana decoding throughput: transactions per second over the block fixture, one core.

Run: `.venv/bin/python benchmarks/solana_decode.py [--min-transactions N]`. Decodes the
192-transaction window of block 285000037 (votes, failures, swaps, one arbitrage) repeated until
at least N transactions (default 100,000), twice: from parsed dicts (`decode_block`) and from raw
JSON bytes (`decode_documents`, which includes JSON parsing), and with every transaction
`base64`-encoded as nodes and Geyser feeds send it. Target: >= 20,000 tx/s.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import time
from pathlib import Path

from arbitrage.solana import decode_block, decode_documents
from tests.unit.solana.wire import as_binary

FIXTURE = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "fixtures"
    / "solana"
    / ("block_285000037_txs_000-191.getBlock.json")
)
SLOT = 285_000_037
TARGET = 20_000


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-transactions", type=int, default=100_000)
    args = parser.parse_args()
    raw = FIXTURE.read_bytes()
    block = json.loads(raw)
    per_block = len(block["transactions"])
    repeats = -(-args.min_transactions // per_block)
    total = repeats * per_block

    kinds: collections.Counter[str] = collections.Counter()
    started = time.perf_counter()
    for _ in range(repeats):
        for result in decode_block(block, slot=SLOT):
            kinds[result.kind] += 1
    dict_seconds = time.perf_counter() - started

    raw_with_slot = json.dumps({**block, "slot": SLOT}).encode()
    started = time.perf_counter()
    decoded = 0
    for _ in range(repeats):
        for _result in decode_documents(raw_with_slot):
            decoded += 1
    bytes_seconds = time.perf_counter() - started
    assert decoded == total

    binary = {**block, "transactions": [as_binary(entry, "base64") for entry in block["transactions"]]}
    started = time.perf_counter()
    for _ in range(repeats):
        decode_block(binary, slot=SLOT)
    base64_seconds = time.perf_counter() - started

    seconds = (dict_seconds, bytes_seconds, base64_seconds)
    rows = [
        (
            "machine",
            f"{_cpu()}, {os.cpu_count()} cpus, {platform.system()} {platform.release()}",
        ),
        ("python", platform.python_version()),
        ("fixture", f"{FIXTURE.name} ({len(raw):,} bytes, {per_block} tx)"),
        ("transactions", f"{total:,} ({repeats} x {per_block})"),
        (
            "kinds per pass",
            ", ".join(f"{k}={v // repeats}" for k, v in sorted(kinds.items())),
        ),
        (
            "decode_block (dicts)",
            f"{total / dict_seconds:,.0f} tx/s ({dict_seconds:.2f} s)",
        ),
        (
            "decode_documents (bytes)",
            f"{total / bytes_seconds:,.0f} tx/s ({bytes_seconds:.2f} s, incl. JSON parse)",
        ),
        (
            "decode_block (base64 transactions)",
            f"{total / base64_seconds:,.0f} tx/s ({base64_seconds:.2f} s)",
        ),
        (
            "target",
            f">= {TARGET:,} tx/s: {'met' if min(total / s for s in seconds) >= TARGET else 'NOT met'}",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"| {'-' * width} | ----- |")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


if __name__ == "__main__":
    main()
