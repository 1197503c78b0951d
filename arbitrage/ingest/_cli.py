"""`arbitrage ingest FILE…`: load files into the warehouse, or into a running server with `--url`.

The embedded warehouse has one owner at a time, so while `arbitrage serve` runs, files go
through its `POST /ingest` instead (`--url`, with the API key of `ARBITRAGE_TOKEN` when auth
is on). Either way two chunks are in flight (one decodes while the other is stored), errors
name a record by its index in the file, and the totals end the output as one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pyarrow as pa

from arbitrage.config import Settings
from arbitrage.errors import ArbitrageError, WarehouseLocked
from arbitrage.ingest._files import Chunk, file_chunks
from arbitrage.ingest._service import IngestReport

CHUNKS_IN_FLIGHT = 2
TOKEN_ENV = "ARBITRAGE_TOKEN"
"""The API key or JWT sent with `--url` (an environment variable: a flag would show in `ps`)."""
_LOCAL_BATCH = 50_000
_HTTP_BATCH = 10_000
"""Records per POST: 10k JSON records are ≈ 12 MB, well inside the server's body limits."""
_BUSY_RETRIES = 120
_TRANSPORT_RETRIES = 5


def add_ingest_command(sub: Any) -> None:
    """Add `ingest` to the CLI's subcommands (an argparse `_SubParsersAction`)."""
    from arbitrage.cli import at_least, http_url, input_file

    parser = sub.add_parser(
        "ingest", help="load NDJSON, JSON (either may be .gz) or Parquet files into the warehouse or a running server"
    )
    parser.add_argument("files", nargs="+", type=input_file)
    parser.add_argument("--data-dir", help="storage.data_dir")
    parser.add_argument(
        "--url",
        type=http_url,
        help=f"POST to a running server's ingest endpoint instead, e.g. http://127.0.0.1:8080/ingest "
        f"(API key from ${TOKEN_ENV} when auth is on)",
    )
    parser.add_argument(
        "--batch-size",
        type=at_least(int, 1),
        help=f"records per insert (default {_LOCAL_BATCH}) or per POST with --url (default {_HTTP_BATCH})",
    )
    parser.set_defaults(handler=ingest_files)


def ingest_files(args: argparse.Namespace, settings: Settings) -> int:
    totals = _Totals()
    if args.url:
        asyncio.run(_post_files(args.files, args.url, args.batch_size or _HTTP_BATCH, totals))
    else:
        asyncio.run(_store_files(args.files, settings, args.batch_size or _LOCAL_BATCH, totals))
    print(json.dumps({"accepted": totals.accepted, "duplicates": totals.duplicates, "rejected": totals.rejected}))
    return 0 if totals.accepted or totals.duplicates or not totals.rejected else 1


class _Totals:
    def __init__(self) -> None:
        self.accepted = self.duplicates = self.rejected = 0

    def count(self, report: IngestReport, name: str, first: int, write: Callable[..., None]) -> None:
        """Add one chunk's report; `write` its first errors by their index in the file."""
        self.accepted += report.accepted
        self.duplicates += report.duplicates
        self.rejected += report.rejected
        for error in report.errors[:5]:
            write(f"{name}: record {first + error.index}: {error.field}: {error.reason}", file=sys.stderr)


async def _in_turn(
    files: list[Path], size: int, store: Callable[[Chunk], Awaitable[IngestReport]], totals: _Totals
) -> None:
    """Read every file a chunk at a time and `store(chunk)` each, `CHUNKS_IN_FLIGHT` at once, in order."""
    from tqdm import tqdm  # here: the server imports this package and has no progress bars

    in_flight: deque[tuple[asyncio.Task[IngestReport], int, int]] = deque()

    async def settle_oldest(name: str, progress: tqdm[Any]) -> None:
        task, first, count = in_flight.popleft()
        totals.count(await task, name, first, progress.write)
        progress.update(count)

    try:
        for path in files:
            with tqdm(desc=path.name, unit="tx", unit_scale=True, file=sys.stderr) as progress:
                read = 0
                for chunk in file_chunks(path, size):
                    in_flight.append((asyncio.ensure_future(store(chunk)), read, len(chunk)))
                    read += len(chunk)
                    if len(in_flight) >= CHUNKS_IN_FLIGHT:
                        await settle_oldest(path.name, progress)
                while in_flight:
                    await settle_oldest(path.name, progress)
    finally:
        for task, _, _ in in_flight:
            task.cancel()


async def _store_files(files: list[Path], settings: Settings, size: int, totals: _Totals) -> None:
    from arbitrage.app import start_services

    try:
        services = await start_services(settings, jobs=False)
    except WarehouseLocked as exc:
        raise ArbitrageError(
            f"{exc}; while the server runs, use `arbitrage ingest --url http://HOST:PORT/ingest …`"
        ) from exc

    def store(chunk: Chunk) -> Awaitable[IngestReport]:
        if isinstance(chunk, list):
            return services.ingest.ingest_records(chunk, source="file")
        return services.ingest.ingest_table(chunk, source="file")

    try:
        await _in_turn(files, size, store, totals)
    finally:
        await services.close()


async def _post_files(files: list[Path], url: str, size: int, totals: _Totals) -> None:
    token = os.environ.get(TOKEN_ENV)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=httpx.Timeout(300, connect=10), headers=headers) as client:

        async def store(chunk: Chunk) -> IngestReport:
            body, content_type = _body(chunk)
            return await _post(client, url, body, content_type)

        await _in_turn(files, size, store, totals)


def _body(chunk: Chunk) -> tuple[bytes, str]:
    if isinstance(chunk, list):
        return b"\n".join(chunk), "application/x-ndjson"
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, chunk.schema) as writer:
        writer.write_table(chunk)
    return sink.getvalue().to_pybytes(), "application/vnd.apache.arrow.stream"


async def _post(client: httpx.AsyncClient, url: str, body: bytes, content_type: str) -> IngestReport:
    """POST one chunk; wait out 503 (saturated) and resend after a dropped connection (a record
    the server already stored comes back as a duplicate, so nothing is stored twice).

    A server that cannot be reached at all stops the command at once: nothing was sent.
    """
    busy = dropped = 0
    while True:
        try:
            response = await client.post(url, content=body, headers={"Content-Type": content_type})
        except httpx.ConnectError as exc:
            raise ArbitrageError(f"{url}: cannot connect ({exc})") from exc
        except httpx.TransportError as exc:
            dropped += 1
            if dropped > _TRANSPORT_RETRIES:
                raise ArbitrageError(f"{url}: {type(exc).__name__} {_TRANSPORT_RETRIES + 1} times") from exc
            await asyncio.sleep(2.0**dropped)
            continue
        if response.status_code == 503 and busy < _BUSY_RETRIES:
            busy += 1
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
            continue
        if response.status_code in (200, 422):
            return msgspec.json.decode(response.content, type=IngestReport)
        raise ArbitrageError(_refusal(url, response))


def _refusal(url: str, response: httpx.Response) -> str:
    """One line saying why the server refused a chunk, and what to change."""
    hint = {
        401: f"set {TOKEN_ENV} to an API key with the ingest role",
        403: f"the key in {TOKEN_ENV} lacks the ingest role",
        413: "lower --batch-size",
    }.get(response.status_code)
    detail = response.text[:300].strip()
    return f"{url} answered {response.status_code}: {detail}" + (f" ({hint})" if hint else "")
