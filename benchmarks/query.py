"""Read latency under load: p50/p99 at 32 concurrent clients, with >= 5 million rows stored.

Prepares a warehouse: 100k simulated transactions go through the real ingest pipeline
(features and risk included), the compression ratio of that data is recorded, then the
rows are copied inside ClickHouse with fresh signatures, one copy per earlier day, up to
`--rows` (copies compress better than fresh data, which is why the ratio is taken first).
Then the real server process answers `wrk` (Debian package; `make bench` installs it).
Usage: .venv/bin/python benchmarks/query.py [--rows 5000000] [--duration 15]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arbitrage.app import start_services
from arbitrage.config import load_settings
from benchmarks._common import json_bodies, machine, print_table
from tests.e2e.server import ServerProcess

BASE_ROWS = 100_000


async def prepare(data_dir: Path, rows: int) -> tuple[float, int, str]:
    services = await start_services(load_settings(env={}, overrides={"storage.data_dir": str(data_dir)}), jobs=False)
    warehouse = services.warehouse
    for body in json_bodies(BASE_ROWS, 10_000, seed=3):
        await services.ingest.ingest_body(body, "application/json", source="bench")
    await warehouse.execute("OPTIMIZE TABLE arbitrage.transactions FINAL")
    parts = await warehouse.query_arrow(
        "SELECT sum(data_uncompressed_bytes) AS raw, sum(data_compressed_bytes) AS packed "
        "FROM system.parts WHERE database = 'arbitrage' AND table = 'transactions' AND active"
    )
    ratio = parts.column("raw")[0].as_py() / parts.column("packed")[0].as_py()
    copies = max(0, -(-rows // BASE_ROWS) - 1)
    for day in range(1, copies + 1):
        await warehouse.execute(
            "INSERT INTO arbitrage.transactions SELECT * REPLACE ("
            f"concat(substring(signature, 1, 82), leftPad(toString({day}), 6, '1')) AS signature, "
            f"block_time - toIntervalDay({day}) AS block_time, 'bench-copy' AS source) "
            "FROM (SELECT * FROM arbitrage.transactions WHERE source = 'bench')"
        )
    total = (await warehouse.query_arrow("SELECT count() FROM arbitrage.transactions")).column(0)[0].as_py()
    newest = (await warehouse.query_arrow("SELECT max(block_time) FROM arbitrage.transactions")).column(0)[0].as_py()
    await services.close()
    return ratio, int(total), (newest - timedelta(days=1)).date().isoformat()


def wrk(url: str, duration: int, connections: int, *headers: str) -> dict[str, str]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", *(f"-H{h}" for h in headers), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = dict(re.findall(r"^\s+(50%|99%)\s+(\S+)", out, re.MULTILINE))
    found["req/s"] = re.search(r"Requests/sec:\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    found["errors"] = errors.group(1) if errors else "0"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: `make bench` installs it (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        started = datetime.now(UTC)
        ratio, total, day = asyncio.run(prepare(data, args.rows))
        prepared_s = (datetime.now(UTC) - started).total_seconds()
        with ServerProcess(data) as server:
            stream_started = datetime.now(UTC)
            with httpx.stream(
                "GET",
                f"{server.url}/historical",
                params={"start": day, "end": day, "limit": 1_000_000},
                headers={"accept": "application/x-ndjson"},
                timeout=600,
            ) as response:
                day_rows = sum(chunk.count(b"\n") for chunk in response.iter_bytes())
            stream_s = (datetime.now(UTC) - stream_started).total_seconds()
            results = {
                "/transactions?limit=100": wrk(f"{server.url}/transactions?limit=100", args.duration, args.connections),
                "/historical one day (default page)": wrk(
                    f"{server.url}/historical?start={day}&end={day}", args.duration, args.connections
                ),
                "/historical one day, gzip": wrk(
                    f"{server.url}/historical?start={day}&end={day}",
                    args.duration,
                    args.connections,
                    "Accept-Encoding: gzip",
                ),
                "/stats/daily?days=30": wrk(f"{server.url}/stats/daily?days=30", args.duration, args.connections),
            }
    rows = [
        ("machine", machine()),
        ("rows stored", f"{total:,} ({BASE_ROWS:,} through ingest, the rest copied per day)"),
        ("preparation", f"{prepared_s:.0f} s"),
        ("compression (ingested data)", f"{ratio:.1f}x uncompressed/compressed"),
        ("concurrency", f"{args.connections} connections, wrk {args.duration} s each"),
    ]
    for name, r in results.items():
        rows.append((name, f"p50 {r['50%']}  p99 {r['99%']}  {r['req/s']} req/s  non-2xx {r['errors']}"))
    rows.append(
        ("/historical full day, streamed", f"{day_rows:,} rows in {stream_s:.1f} s ({day_rows / stream_s:,.0f} rows/s)")
    )
    rows.append(("targets", "p99 <= 50 ms (/transactions, /stats/daily), <= 100 ms (one-day /historical)"))
    print_table("Read latency under load (real server, embedded chdb)", rows)


if __name__ == "__main__":
    main()
