"""`arbitrage ingest FILE…`: load files into the warehouse, or into a running server with `--url`.

The embedded warehouse has one owner at a time, so while `arbitrage serve` runs, files go
through its `POST /ingest` instead (`--url`, with the API key of `ARBITRAGE_TOKEN` when auth
is on). Either way two chunks are in flight (one decodes while the other is stored), errors
name a record by its index in the file, and the totals end the output as one JSON line, also
when a chunk stops the command (its error names the file and the record to resume from).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pyarrow as pa

from arbitrage.config import Settings
from arbitrage.errors import ArbitrageError, WarehouseLocked
from arbitrage.ingest._files import Chunk, file_chunks
from arbitrage.ingest._service import IngestReport, RecordError

CHUNKS_IN_FLIGHT = 2
TOKEN_ENV = "ARBITRAGE_TOKEN"
"""The API key or JWT sent with `--url` (an environment variable: a flag would show in `ps`)."""
_LOCAL_BATCH = 50_000
_HTTP_BATCH = 10_000
"""Records per POST: 10k JSON records are ≈ 12 MB, well inside the server's body limits."""
_BUSY_RETRIES = 120
_TRANSPORT_RETRIES = 5


def add_ingest_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of the CLI's `ingest` command."""
    from arbitrage.cli import at_least, http_url, input_file

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
    try:
        if args.url:
            asyncio.run(_post_files(args.files, args.url, args.batch_size or _HTTP_BATCH, totals))
        else:
            asyncio.run(_store_files(args.files, settings, args.batch_size or _LOCAL_BATCH, totals))
    except _Stopped:
        totals.report()  # what is stored for sure, before the error line and exit 1
        raise
    return totals.report()


class _Stopped(ArbitrageError):
    """A chunk failed or a file broke off: the message names the file and the record to resume from."""


def post_ndjson(url: str, bodies: Iterable[tuple[bytes, int]], name: str) -> int:
    """POST NDJSON bodies (each with its record count) one after the other, as `ingest --url`
    does: busy answers waited out, errors named by record, then the totals. Returns the exit code."""
    totals = _Totals()

    async def send() -> None:
        async with _client() as client:
            uploader = _Uploader(client, url)
            first = 0
            for body, count in bodies:
                report = await uploader.post(body, "application/x-ndjson", count)
                totals.count(report, name, first, print)
                first += count

    try:
        asyncio.run(send())
    except ArbitrageError:
        totals.report()  # what was stored before the error line and exit 1
        raise
    return totals.report()


class _Totals:
    def __init__(self) -> None:
        self.accepted = self.duplicates = self.rejected = 0

    def report(self) -> int:
        """Print the totals as the last line of stdout; the exit code: 1 when every record was rejected."""
        print(json.dumps({"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected}))
        return 0 if self.accepted or self.duplicates or not self.rejected else 1

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
        try:
            report = await task
        except ArbitrageError as exc:  # where to resume: the records before are counted
            raise _Stopped(f"{name}: stopped at record {first}: {exc}") from exc
        totals.count(report, name, first, progress.write)
        progress.update(count)

    try:
        for path in files:
            with tqdm(desc=path.name, unit="tx", unit_scale=True, file=sys.stderr) as progress:
                read = 0
                chunks = file_chunks(path, size)
                while True:
                    try:
                        chunk = next(chunks, None)
                    except ArbitrageError as exc:  # cut short: what was read before it is stored and counted
                        while in_flight:
                            await settle_oldest(path.name, progress)
                        raise _Stopped(f"{path}: stopped at record {read}: {exc.__cause__ or exc}") from exc
                    if chunk is None:
                        break
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


def _client() -> httpx.AsyncClient:
    token = os.environ.get(TOKEN_ENV)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(timeout=httpx.Timeout(300, connect=10), headers=headers)


async def _post_files(files: list[Path], url: str, size: int, totals: _Totals) -> None:
    async with _client() as client:
        uploader = _Uploader(client, url)

        async def store(chunk: Chunk) -> IngestReport:
            body, content_type = _body(chunk)
            return await uploader.post(body, content_type, len(chunk))

        await _in_turn(files, size, store, totals)


def _body(chunk: Chunk) -> tuple[bytes, str]:
    """NDJSON for JSON records, Arrow IPC for columns.

    A JSON array's element may span lines (a pretty-printed file): its line breaks become
    spaces, which JSON reads the same (inside a string a line break is always escaped).
    """
    if isinstance(chunk, list):
        return b"\n".join(_one_line(record) for record in chunk), "application/x-ndjson"
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, chunk.schema) as writer:
        writer.write_table(chunk)
    return sink.getvalue().to_pybytes(), "application/vnd.apache.arrow.stream"


class _Uploader:
    """POSTs chunks to one ingest URL; remembers whether the server ever answered."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client = client
        self.url = url
        self.answered = False

    async def post(self, body: bytes, content_type: str, records: int) -> IngestReport:
        """POST one chunk of `records` records; wait out 503 (saturated) and resend after a
        dropped connection (a record the server already stored comes back as a duplicate, so
        nothing is stored twice).

        A server that never answered stops the command at once (a wrong URL, nothing was sent);
        once it has, a refused connection is waited out too (a restart).
        """
        busy = dropped = 0
        while True:
            try:
                response = await self.client.post(self.url, content=body, headers={"Content-Type": content_type})
            except httpx.TransportError as exc:
                if isinstance(exc, httpx.ConnectError) and not self.answered:
                    raise ArbitrageError(f"{self.url}: cannot connect ({exc})") from exc
                dropped += 1
                if dropped > _TRANSPORT_RETRIES:
                    raise ArbitrageError(f"{self.url}: {type(exc).__name__} {_TRANSPORT_RETRIES + 1} times") from exc
                await asyncio.sleep(2.0**dropped)
                continue
            self.answered = True
            if response.status_code == 503 and busy < _BUSY_RETRIES:
                busy += 1
                await asyncio.sleep(_retry_after(response))
                continue
            if response.status_code in (200, 422):
                return msgspec.json.decode(response.content, type=IngestReport)
            unreadable = _unreadable_json(response, content_type, records)
            if unreadable is not None:
                return unreadable
            raise ArbitrageError(_refusal(self.url, response))


def _one_line(record: bytes) -> bytes:
    if b"\n" in record or b"\r" in record:
        return record.replace(b"\r", b" ").replace(b"\n", b" ")
    return record


def _retry_after(response: httpx.Response) -> float:
    """Seconds to wait before asking again: `Retry-After` in seconds, else 1 (a proxy may send a date)."""
    try:
        return max(float(response.headers.get("Retry-After", "1")), 0.0)
    except ValueError:
        return 1.0


def _unreadable_json(response: httpx.Response, content_type: str, records: int) -> IngestReport | None:
    """A JSON chunk the server refused whole because none of its lines is JSON: every record of
    it rejected (the server keeps it as a dead letter), as without `--url`. None for other refusals."""
    if response.status_code != 400 or content_type != "application/x-ndjson":
        return None
    try:
        answer = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        return None
    extra = answer.get("extra") if isinstance(answer, dict) else None
    if not isinstance(extra, dict) or extra.get("field") != "$":
        return None
    return IngestReport(0, 0, records, [RecordError(index, "$", "not JSON") for index in range(records)])


def _refusal(url: str, response: httpx.Response) -> str:
    """One line saying why the server refused a chunk, and what to change."""
    hint = {
        401: f"set {TOKEN_ENV} to an API key with the ingest role",
        403: f"the key in {TOKEN_ENV} lacks the ingest role",
        413: "lower --batch-size",
    }.get(response.status_code)
    detail = response.text[:300].strip()
    return f"{url} answered {response.status_code}: {detail}" + (f" ({hint})" if hint else "")
