"""Live fan-out under load: N concurrent SSE clients while transactions are ingested over HTTP.

Starts `arbitrage serve` (embedded warehouse, in-process fan-out), connects the SSE clients
from two client processes (plain asyncio sockets), then posts simulated batches at a target
rate for a while. Latency is measured per event from the `: published <unix seconds>`
comment the server puts before each batch (the moment the insert returned and the batch was
handed to the hub) to the moment the client read it. A client is starved when it received
fewer events than were stored, and over when it received more (an event delivered twice).

    python benchmarks/fanout.py --clients 200 --rates 2000,5000,10000 --seconds 10 [--redis]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    CONTENT_TYPES,
    bodies_as,
    machine,
    print_table,
    process_group_cpu_seconds,
    start_server,
)
from tests.e2e.server import ServerProcess

FIELDS = "signature,net_profit_sol"


_EVENT = b"\nid: "
_PUBLISHED = b": published "


class _SseCounter(asyncio.Protocol):
    """Counts events as bytes arrive and records (latency of the newest batch, events) per read.

    A bare Protocol sees each read once as the transport received it: no stream buffer to
    copy into and out of. These clients share the server's two cores, so their cost is kept low.
    """

    def __init__(self, latencies: list[tuple[float, int]]) -> None:
        self.latencies = latencies
        self.count = 0
        self.published = 0.0
        self.tail = b""
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        # A marker split across reads lies within the last bytes of the one before and the
        # first of this one: look there too, without copying the whole read.
        seam = self.tail + data[:64]
        events = data.count(_EVENT) + seam.count(_EVENT, max(len(self.tail) - 4, 0), len(self.tail) + 4)
        self._note_published(seam)
        self._note_published(data)
        self.tail = data[-40:]
        if events:
            self.count += events
            self.latencies.append((now - self.published, events))

    def _note_published(self, data: bytes) -> None:
        marker = data.find(_PUBLISHED)
        while marker >= 0:
            end = data.find(b"\n", marker)
            if end < 0:
                return
            self.published = float(data[marker + len(_PUBLISHED) : end])
            marker = data.find(_PUBLISHED, end)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def _client(host: str, port: int, stop: Any, latencies: list[tuple[float, int]]) -> int:
    """Read the stream until `stop(events received)` says so or the server closes it; the events received."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(lambda: _SseCounter(latencies), host, port)
    transport.write(f"GET /sse/stream?fields={FIELDS} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    try:
        while not stop(protocol.count) and not protocol.closed.done():
            await asyncio.wait([protocol.closed], timeout=0.5)
    finally:
        transport.close()
    return protocol.count


def _client_process(host: str, port: int, n: int, stored: Any, out: Any) -> None:
    """Clients stop once they hold every stored event, or 15 s after ingest ended (`stored` set)."""
    latencies: list[tuple[float, int]] = []
    grace: list[float] = []

    def stop(count: int) -> bool:
        total = stored.value
        if total < 0:
            return False
        if not grace:
            grace.append(time.monotonic() + 15)
        return count >= total or time.monotonic() > grace[0]

    async def run() -> list[int]:
        return await asyncio.gather(*(_client(host, port, stop, latencies) for _ in range(n)))

    cpu = time.process_time()  # after the imports: what reading the streams costs
    counts = asyncio.run(run())
    out.put((counts, latencies, time.process_time() - cpu))


def _ingest(url: str, bodies: list[bytes], rate: int, batch: int, posters: int, fmt: str) -> tuple[int, float]:
    """Post `batch`-record bodies at `rate` tx/s from `posters` threads (or as fast as the server takes them)."""
    headers = {"content-type": CONTENT_TYPES[fmt]}
    # One client, one kept-alive connection per poster thread, as a real producer would hold.
    client = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=posters))
    started = time.perf_counter()

    def post(i: int) -> int:
        delay = started + i * batch / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        while True:
            response = client.post(f"{url}/ingest", content=bodies[i], headers=headers)
            if response.status_code != 503:
                return int(response.json()["accepted"])
            time.sleep(0.05)

    with client, ThreadPoolExecutor(posters) as pool:
        stored = sum(pool.map(post, range(len(bodies))))
    return stored, time.perf_counter() - started


def run_level(
    server: ServerProcess, clients: int, rate: int, seconds: float, batch: int, posters: int, fmt: str
) -> dict[str, Any]:
    bodies = bodies_as(fmt, int(rate * seconds), batch, seed=rate)  # before the clients, so they wait less
    context = mp.get_context("spawn")
    out: Any = context.Queue()
    stored_total: Any = context.Value("q", -1)
    procs = [
        context.Process(target=_client_process, args=("127.0.0.1", server.port, n, stored_total, out))
        for n in (clients // 2, clients - clients // 2)
    ]
    for proc in procs:
        proc.start()
    time.sleep(3)  # let every client connect before the first event
    server_cpu = process_group_cpu_seconds(server.process.pid)
    started = time.perf_counter()
    stored, elapsed = _ingest(server.url, bodies, rate, batch, posters, fmt)
    stored_total.value = stored
    results = [out.get(timeout=120) for _ in procs]
    busy = time.perf_counter() - started
    server_cpu = process_group_cpu_seconds(server.process.pid) - server_cpu
    for proc in procs:
        proc.join(30)
    counts = [c for result in results for c in result[0]]
    samples = np.array([s for result in results for s in result[1]], dtype=float).reshape(-1, 2)
    return {
        "rate": rate,
        "stored": stored,
        "achieved": stored / elapsed,
        "p50": _weighted_percentile(samples, 50),
        "p99": _weighted_percentile(samples, 99),
        "min_received": min(counts),
        "starved": sum(1 for c in counts if c < stored),
        "over": sum(1 for c in counts if c > stored),
        # Cores busy from the first post until every client held every event (clients: their whole run).
        "server_cores": server_cpu / busy,
        "client_cores": sum(result[2] for result in results) / busy,
    }


def _weighted_percentile(samples: np.ndarray, q: float) -> float:
    """Percentile of per-event latency (ms) from (latency, events) samples."""
    if not len(samples):
        return float("nan")
    order = np.argsort(samples[:, 0])
    cumulative = np.cumsum(samples[order, 1])
    index = np.searchsorted(cumulative, cumulative[-1] * q / 100)
    return float(samples[order][min(index, len(order) - 1), 0] * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rates", default="2000,5000,10000", help="target ingest rates, tx/s")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=1000, help="records per POST /ingest")
    parser.add_argument(
        "--posters", type=int, default=4, help="connections posting at once, each waiting for its answer"
    )
    parser.add_argument(
        "--format",
        choices=sorted(CONTENT_TYPES),
        default="json",
        help="body format: JSON, as a live collector posts, or Arrow IPC, the bulk path (ingest then costs less)",
    )
    parser.add_argument(
        "--redis", action="store_true", help="fan out through a redis-server of its own (the multi-process path)"
    )
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {"ARB_STREAM__CLIENT_QUEUE_EVENTS": "200000"}
        for rate in (int(r) for r in args.rates.split(",")):
            # A fresh server (and Redis) per level, so one level's backlog does not leak into the next.
            with contextlib.ExitStack() as stack:
                server = start_server(stack, Path(tmp) / f"data-{rate}", redis=args.redis, env=env)
                rows.append(run_level(server, args.clients, rate, args.seconds, args.batch, args.posters, args.format))
    print_table(
        "SSE fan-out",
        [
            ("machine", machine()),
            ("clients", f"{args.clients} SSE (fields={FIELDS}), 2 client processes"),
            ("fan-out", "through Redis pub/sub (rows back from Redis)" if args.redis else "in-process"),
            (
                "ingest",
                f"POST /ingest from {args.posters} threads, {args.batch} {args.format} records per request, "
                f"{args.seconds:.0f} s per level",
            ),
        ],
    )
    print(
        f"\n{'target tx/s':>11} {'achieved':>9} {'stored':>8} {'p50 ms':>8} {'p99 ms':>8} {'min recv':>9} {'starved':>8} {'over':>5} {'server cores':>12} {'client cores':>12}"
    )
    for r in rows:
        print(
            f"{r['rate']:>11} {r['achieved']:>9.0f} {r['stored']:>8} {r['p50']:>8.1f} {r['p99']:>8.1f} "
            f"{r['min_received']:>9} {r['starved']:>8} {r['over']:>5} {r['server_cores']:>12.2f} {r['client_cores']:>12.2f}"
        )


if __name__ == "__main__":
    main()
