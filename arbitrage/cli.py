"""`arbitrage serve | migrate | ingest | simulate | config show | keys`.

Settings come from `--config` (or `ARB_CONFIG`, or `./config.toml`), then `ARB_*`
variables, then flags. A configuration error exits with code 2 and names the key, as a bad
argument does (argparse); a failure the user can fix (a file, the network, a busy data dir)
prints one line and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
import mmap
import os
import shutil
import sys
import tempfile
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import msgspec

from arbitrage import __version__
from arbitrage.config import Settings, default_config_path, load_settings, redacted
from arbitrage.errors import ArbitrageError, ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

    from arbitrage.ingest import IngestReport

EXIT_CONFIG = 2
SETTINGS_ENV = "ARBITRAGE_SETTINGS_JSON"
"""How `serve` hands its resolved settings to the Granian worker that builds the app."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        settings = load_settings(args.config or default_config_path(), overrides=_flag_overrides(args))
        return int(args.handler(args, settings) or 0)
    except ConfigError as exc:
        print(f"arbitrage: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ArbitrageError as exc:
        print(f"arbitrage: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"arbitrage: {exc.filename}: {exc.strerror}" if exc.filename else f"arbitrage: {exc}", file=sys.stderr)
        return 1
    except httpx.TransportError as exc:
        print(f"arbitrage: {exc.request.url}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


Number = TypeVar("Number", int, float)


def at_least(kind: type[Number], minimum: Number) -> Callable[[str], Number]:
    """An argparse `type=` that refuses numbers below `minimum` (exit 2, naming the flag)."""

    def parse(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if not value >= minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value

    return parse


def _input_file(text: str) -> Path:
    """An argparse `type=` for a file to read: it must exist and not be a directory."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a directory, not a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def _http_url(text: str) -> str:
    """An argparse `type=` for a URL to POST to."""
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {text!r}")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arbitrage", description="Solana arbitrage data backend.")
    parser.add_argument("--version", action="version", version=f"arbitrage {__version__}")
    parser.add_argument("--config", help="config.toml to read (default: $ARB_CONFIG or ./config.toml)")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="serve the HTTP API (Granian, ASGI)")
    serve.add_argument("--host", help="server.host")
    serve.add_argument("--port", type=int, help="server.port")
    serve.add_argument("--data-dir", help="storage.data_dir")
    serve.add_argument("--workers", type=int, help="server.workers")
    serve.add_argument("--demo", action="store_true", default=None, help="feed simulated transactions (demo.enabled)")
    serve.add_argument("--demo-rate", type=float, help="demo.rate, transactions per second")
    serve.set_defaults(handler=_serve)

    migrate = sub.add_parser("migrate", help="apply pending warehouse migrations and exit")
    migrate.add_argument("--data-dir", help="storage.data_dir")
    migrate.set_defaults(handler=_migrate)

    ingest = sub.add_parser("ingest", help="load NDJSON, JSON (either may be .gz) or Parquet files into the warehouse")
    ingest.add_argument("files", nargs="+", type=_input_file)
    ingest.add_argument("--data-dir", help="storage.data_dir")
    ingest.add_argument(
        "--batch-size", type=at_least(int, 1), default=50_000, help="records per insert (default 50000)"
    )
    ingest.set_defaults(handler=_ingest)

    simulate = sub.add_parser("simulate", help="emit simulated arbitrage transactions as NDJSON")
    simulate.add_argument("--count", type=at_least(int, 0), default=1000, help="how many (0 = endless)")
    simulate.add_argument(
        "--rate", type=at_least(float, 0.0), default=0.0, help="records per second (0 = as fast as possible)"
    )
    simulate.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    simulate.add_argument("--out", type=Path, help="write to this file instead of stdout")
    simulate.add_argument(
        "--url", type=_http_url, help="POST batches to this ingest URL instead, e.g. http://127.0.0.1:8080/ingest"
    )
    simulate.add_argument("--batch-size", type=at_least(int, 1), default=10_000, help="records per POST with --url")
    simulate.set_defaults(handler=_simulate)

    config = sub.add_parser("config", help="configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser("show", help="print the effective configuration, secrets redacted")
    show.set_defaults(handler=_config_show)

    from arbitrage.export import add_export_command
    from arbitrage.security import add_keys_command

    add_export_command(sub)
    add_keys_command(sub)
    return parser


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    mapping = {
        "host": "server.host",
        "port": "server.port",
        "workers": "server.workers",
        "data_dir": "storage.data_dir",
        "demo": "demo.enabled",
        "demo_rate": "demo.rate",
    }
    return {key: getattr(args, flag) for flag, key in mapping.items() if getattr(args, flag, None) is not None}


def _serve(_: argparse.Namespace, settings: Settings) -> int:
    """Replace this process with Granian serving the app (same PID, for supervisors).

    Granian forks its workers; by then this process has imported chdb and started threads
    (command registration imports every module), and a forked chdb deadlocks. Exec'ing a
    fresh interpreter gives the workers a clean start.
    """
    if settings.storage.backend == "embedded" and settings.server.workers != 1:
        raise ConfigError("server.workers: the embedded warehouse allows one process; use 1 or the clickhouse backend")
    from arbitrage.security import check_bind
    from arbitrage.storage import check_data_dir_free

    check_bind(settings.server.host, settings.auth.enabled)
    if settings.storage.backend == "embedded":  # before Granian: its worker would fail only after "Listening at"
        check_data_dir_free(Path(settings.storage.data_dir))
    os.environ[SETTINGS_ENV] = msgspec.json.encode(settings).decode()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(
        sys.executable,
        [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--factory",
            "--host",
            settings.server.host,
            "--port",
            str(settings.server.port),
            "--workers",
            str(settings.server.workers),
            "--log-level",
            settings.telemetry.log_level.lower(),
            "arbitrage.cli:app_from_environment",
        ],
    )


def app_from_environment() -> Any:
    """Granian's app factory: rebuild the settings `serve` resolved."""
    from arbitrage.app import create_app
    from arbitrage.telemetry import configure_logging

    raw = os.environ.get(SETTINGS_ENV)
    settings = msgspec.json.decode(raw, type=Settings) if raw else load_settings(default_config_path())
    configure_logging(settings.telemetry.log_level, settings.telemetry.log_format)
    return create_app(settings)


def _migrate(_: argparse.Namespace, settings: Settings) -> int:
    from arbitrage.storage import open_warehouse

    async def run() -> None:
        warehouse = open_warehouse(settings.storage)
        await warehouse.start()
        await warehouse.close()

    asyncio.run(run())
    print(f"migrations applied ({settings.storage.backend} warehouse, database {settings.storage.database})")
    return 0


_FILE_CHUNKS_IN_FLIGHT = 2


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from arbitrage.app import start_services

    async def run() -> tuple[int, int, int]:
        services = await start_services(settings, jobs=False)
        totals = [0, 0, 0]
        # Two chunks in flight, as Kafka keeps two batches: one decodes while the other is stored.
        in_flight: deque[tuple[asyncio.Task[IngestReport], int, int]] = deque()

        async def settle_oldest(name: str, progress: tqdm[Any]) -> None:
            """Count the oldest chunk's report; errors name a record by its index in the file."""
            task, first, size = in_flight.popleft()
            report = await task
            totals[0] += report.accepted
            totals[1] += report.duplicates
            totals[2] += report.rejected
            for error in report.errors[:5]:
                tqdm.write(f"{name}: record {first + error.index}: {error.field}: {error.reason}", file=sys.stderr)
            progress.update(size)

        try:
            for path in args.files:
                with tqdm(desc=path.name, unit="tx", unit_scale=True, file=sys.stderr) as progress:
                    read = 0
                    for chunk in _file_chunks(path, args.batch_size):
                        if isinstance(chunk, list):
                            store = services.ingest.ingest_records(chunk, source="file")
                        else:
                            store = services.ingest.ingest_table(chunk, source="file")
                        in_flight.append((asyncio.create_task(store), read, len(chunk)))
                        read += len(chunk)
                        if len(in_flight) >= _FILE_CHUNKS_IN_FLIGHT:
                            await settle_oldest(path.name, progress)
                    while in_flight:
                        await settle_oldest(path.name, progress)
        finally:
            for task, _, _ in in_flight:
                task.cancel()
            await services.close()
        return totals[0], totals[1], totals[2]

    accepted, duplicates, rejected = asyncio.run(run())
    print(json.dumps({"accepted": accepted, "duplicates": duplicates, "rejected": rejected}))
    return 0 if accepted or duplicates or not rejected else 1


def _file_chunks(path: Path, size: int) -> Iterator[list[bytes] | pa.Table]:
    """Records of a file, `size` at a time: JSON bytes (NDJSON, JSON array, either gzipped as
    `.gz`) or columns (Parquet).

    A file that does not decode as a whole (a truncated Parquet or gzip file, a broken JSON
    array) stops the command with one line naming it; bad records are reported one by one by
    ingest.
    """
    import pyarrow as pa

    try:
        yield from _records(path, size)
    except (pa.ArrowException, msgspec.DecodeError, gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ArbitrageError(f"{path}: {exc}") from exc


def _records(path: Path, size: int) -> Iterator[list[bytes] | pa.Table]:
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=size):
            yield pa.Table.from_batches([batch])
        return
    with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as handle:
        head = handle.read(1)
        while head.isspace():
            head = handle.read(1)
        handle.seek(0)
        if head == b"[":
            yield from _array_records(handle, size)
            return
        chunk: list[bytes] = []
        for line in handle:
            if line.strip():
                chunk.append(line.rstrip(b"\r\n"))
                if len(chunk) >= size:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk


def _array_records(handle: io.BufferedIOBase, size: int) -> Iterator[list[bytes]]:
    """A JSON array's records, mapped rather than read: its pages belong to the file and the
    OS can drop them, so a file larger than memory costs only a small handle per record.
    A gzipped array is inflated into a temporary file first, to be mapped the same way."""
    if isinstance(handle, gzip.GzipFile):
        with tempfile.TemporaryFile() as inflated:
            shutil.copyfileobj(handle, inflated, 1 << 20)
            yield from _array_records(inflated, size)
        return
    with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        items = msgspec.json.decode(mapped, type=list[msgspec.Raw])
        try:
            for start in range(0, len(items), size):
                yield [bytes(item) for item in items[start : start + size]]
        finally:
            del items


def _simulate(args: argparse.Namespace, _: Settings) -> int:
    from arbitrage.simulator import Simulator

    if args.rate:
        simulator = Simulator(seed=args.seed, realtime=True)
    else:
        simulator = Simulator(seed=args.seed, start=Simulator.start_for(args.count or 1_000_000))
    stream = simulator.stream()
    encoder = msgspec.json.Encoder()
    remaining = args.count if args.count > 0 else None
    chunk_size = args.batch_size if args.url else 1000
    if args.rate:
        chunk_size = max(1, min(chunk_size, int(args.rate / 10) or 1))
    started = time.monotonic()
    sent = 0
    out = args.out.open("wb") if args.out else sys.stdout.buffer
    client = None
    if args.url:
        import httpx

        client = httpx.Client(timeout=60)
    try:
        while remaining is None or remaining > 0:
            n = chunk_size if remaining is None else min(chunk_size, remaining)
            lines = [encoder.encode(next(stream)) for _ in range(n)]
            body = b"\n".join(lines) + b"\n"
            if client is not None:
                response = client.post(args.url, content=body, headers={"content-type": "application/x-ndjson"})
                if response.status_code >= 400 and response.status_code != 422:
                    raise ArbitrageError(f"{args.url} answered {response.status_code}: {response.text[:200]}")
            else:
                out.write(body)
            sent += n
            if remaining is not None:
                remaining -= n
            if args.rate:
                delay = started + sent / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
    except BrokenPipeError:
        return 0
    finally:
        if args.out:
            out.close()
        if client is not None:
            client.close()
    return 0


def _config_show(_: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(redacted(settings), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
