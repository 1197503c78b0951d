"""A long run of a real server under a steady mixed load: does anything grow or fail over time?

Starts `arbitrage serve` on a fresh data dir and, for `--minutes`, posts simulated batches at
`--rate` tx/s while `--readers` threads poll the hot read endpoints and `--sse` clients follow
the live stream. Every `--every` seconds it samples the server's resident memory (its whole
process group), CPU, stored rows and data-dir size, and prints one row per sample, then a
summary: memory growth after warm-up, request errors, and whether every posted record was
stored and streamed. Usage:
    .venv/bin/python benchmarks/soak.py [--minutes 10] [--rate 2000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import machine, print_table, process_group_cpu_seconds, unique_batches
from tests.e2e.server import ServerProcess

_READS = ("/transactions?limit=100", "/stats", "/stats/daily?days=30", "/health")


def process_group_rss_mb(pgid: int) -> float:
    """Resident memory of every process in the group (Granian's workers included), in MB."""
    total_kb = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != pgid:
                continue
            with open(f"/proc/{entry}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    return total_kb / 1024


def directory_mb(path: Path) -> float:
    """Bytes under `path`, skipping what ClickHouse removes meanwhile (merged and temporary parts)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(root, name)).st_size
    return total / 1e6


class Load:
    """The posting, reading and streaming threads, with their counts and errors."""

    def __init__(self, url: str, rate: int, batch: int, total: int) -> None:
        self.url = url
        self.rate = rate
        self.batch = batch
        self.total = total
        self.posted = 0
        self.posting_s = 0.0
        self.accepted = 0
        self.streamed: Counter[int] = Counter()
        self.requests = 0
        self.errors: Counter[str] = Counter()
        self.done = threading.Event()
        self._lock = threading.Lock()

    def post(self, posters: int = 2) -> None:
        """Post batches on schedule (`rate` tx/s) from `posters` kept-alive connections."""
        encoder = msgspec.json.Encoder()
        batches = unique_batches(self.total, self.batch, seed=11)
        started = time.perf_counter()
        with (
            httpx.Client(timeout=120, limits=httpx.Limits(max_connections=posters)) as client,
            ThreadPoolExecutor(posters) as pool,
        ):
            for i, records in enumerate(batches):
                body = encoder.encode(records)
                delay = started + i * self.batch / self.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(self._post_one, client, body, len(records))
        self.posting_s = time.perf_counter() - started
        self.done.set()

    def _post_one(self, client: httpx.Client, body: bytes, n: int) -> None:
        while True:
            try:
                response = client.post(f"{self.url}/ingest", content=body)
            except httpx.HTTPError as exc:
                self._error(f"POST /ingest: {type(exc).__name__}")
                return
            if response.status_code == 503:
                self._error("POST /ingest: 503 (retried)")
                time.sleep(float(response.headers.get("retry-after", "1")) / 10)
                continue
            if response.status_code != 200:
                self._error(f"POST /ingest: {response.status_code}")
                return
            with self._lock:
                self.posted += n
                self.accepted += int(response.json()["accepted"])
            return

    def read(self) -> None:
        with httpx.Client(timeout=30) as client:
            i = 0
            while not self.done.is_set():
                path = _READS[i % len(_READS)]
                i += 1
                try:
                    status = client.get(f"{self.url}{path}").status_code
                except httpx.HTTPError as exc:
                    self._error(f"GET {path}: {type(exc).__name__}")
                    continue
                with self._lock:
                    self.requests += 1
                if status != 200:
                    self._error(f"GET {path}: {status}")
                time.sleep(0.2)

    def stream(self, client_id: int) -> None:
        """Follow /sse/stream and count events until posting is done and the stream went quiet."""
        host, port = self.url.removeprefix("http://").split(":")
        quiet_since = None
        tail = b""
        try:
            with socket.create_connection((host, int(port)), timeout=2) as sock:
                sock.sendall(f"GET /sse/stream?fields=signature HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                while True:
                    try:
                        chunk = sock.recv(1 << 16)
                    except TimeoutError:
                        if self.done.is_set():
                            quiet_since = quiet_since or time.monotonic()
                            if time.monotonic() - quiet_since > 10:
                                return
                        continue
                    if not chunk:
                        self._error("SSE: closed by the server")
                        return
                    # An event starts with "\nid: "; 4 bytes kept so a marker split across reads still counts.
                    self.streamed[client_id] += (tail + chunk).count(b"\nid: ")
                    tail = chunk[-4:]
        except OSError as exc:
            self._error(f"SSE: {type(exc).__name__}")

    def _error(self, what: str) -> None:
        with self._lock:
            self.errors[what] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=2_000, help="tx/s posted")
    parser.add_argument("--batch", type=int, default=1_000, help="records per POST")
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--sse", type=int, default=4, help="live-stream clients")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    args = parser.parse_args()
    total = int(args.rate * args.minutes * 60)

    with tempfile.TemporaryDirectory() as tmp, ServerProcess(Path(tmp) / "data") as server:
        assert server.process is not None
        pgid = server.process.pid
        load = Load(server.url, args.rate, args.batch, total)
        threads = [threading.Thread(target=load.stream, args=(i,), daemon=True) for i in range(args.sse)]
        threads += [threading.Thread(target=load.read, daemon=True) for _ in range(args.readers)]
        for thread in threads:
            thread.start()
        time.sleep(1)  # the stream clients are connected before the first record
        poster = threading.Thread(target=load.post, daemon=True)
        started = time.perf_counter()
        poster.start()
        samples: list[tuple[float, int, float, float, float]] = []
        print(f"{'min':>6} {'stored':>10} {'tx/s':>8} {'RSS MB':>8} {'cores':>6} {'data MB':>8}", file=sys.stderr)
        last_cpu, last_t, last_stored = process_group_cpu_seconds(pgid), started, 0
        while True:
            finished = load.done.wait(args.every)
            now = time.perf_counter()
            cpu = process_group_cpu_seconds(pgid)
            stored = int(httpx.get(f"{server.url}/stats", timeout=60).json()["transactions"])
            rss = process_group_rss_mb(pgid)
            data = directory_mb(server.data_dir)
            rate = (stored - last_stored) / (now - last_t)
            cores = (cpu - last_cpu) / (now - last_t)
            samples.append(((now - started) / 60, stored, rss, cores, data))
            print(
                f"{(now - started) / 60:6.1f} {stored:10,} {rate:8,.0f} {rss:8,.0f} {cores:6.2f} {data:8,.0f}",
                file=sys.stderr,
            )
            last_cpu, last_t, last_stored = cpu, now, stored
            if finished:
                break
        poster.join()
        for thread in threads:
            thread.join(30)
        stored = int(httpx.get(f"{server.url}/stats", timeout=60).json()["transactions"])
        health = httpx.get(f"{server.url}/health", timeout=30).json()["status"]

    warm = [s for s in samples if s[0] >= min(2.0, samples[-1][0] / 2)]
    growth = (warm[-1][2] - warm[0][2]) / max(warm[-1][0] - warm[0][0], 1e-9) if len(warm) > 1 else 0.0
    streamed = sorted(load.streamed[i] for i in range(args.sse))
    print_table(
        f"Soak: {args.minutes:g} min at {args.rate:,} tx/s in {args.batch:,}-record POSTs (embedded chdb)",
        [
            ("machine", machine()),
            ("posted / accepted / stored", f"{load.posted:,} / {load.accepted:,} / {stored:,}"),
            ("achieved", f"{load.posted / load.posting_s:,.0f} tx/s over {load.posting_s / 60:.1f} min"),
            ("read requests", f"{load.requests:,}"),
            ("SSE events per client (min-max)", f"{streamed[0]:,}-{streamed[-1]:,}" if streamed else "-"),
            (
                "resident memory first / peak / last",
                f"{samples[0][2]:,.0f} / {max(s[2] for s in samples):,.0f} / {samples[-1][2]:,.0f} MB",
            ),
            ("memory growth after warm-up", f"{growth:+,.1f} MB per minute"),
            ("data dir", f"{samples[-1][4]:,.0f} MB"),
            ("errors", ", ".join(f"{k} x{v}" for k, v in load.errors.items()) or "none"),
            ("health at the end", health),
        ],
    )


if __name__ == "__main__":
    main()
