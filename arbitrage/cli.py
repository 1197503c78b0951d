"""`arbitrage serve | migrate | ingest | simulate | config show | keys`.

Settings come from `--config` (or `ARB_CONFIG`, or `./config.toml`), then `ARB_*`
variables, then flags. A configuration error exits with code 2 and names the key, as a bad
argument does (argparse); a failure the user can fix (a file, the network, a busy data dir)
prints one line and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import msgspec

from arbitrage import __version__
from arbitrage.config import Settings, default_config_path, load_settings, redacted
from arbitrage.errors import ArbitrageError, ConfigError

EXIT_CONFIG = 2
SETTINGS_ENV = "ARBITRAGE_SETTINGS_JSON"
SERVE_PID_ENV = "ARBITRAGE_SERVE_PID"
"""The PID of `serve`, which becomes Granian's main process: its workers stop when it is gone."""
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
    """An argparse `type=` that refuses numbers below `minimum`, and infinity (exit 2, naming the flag)."""

    def parse(text: str) -> Number:
        value = finite(kind)(text)
        if not value >= minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value

    return parse


def finite(kind: type[Number]) -> Callable[[str], Number]:
    """An argparse `type=` that refuses NaN and infinity, which no bound or rate means."""

    def parse(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        return value

    return parse


def input_file(text: str) -> Path:
    """An argparse `type=` for a file to read: it must exist and not be a directory."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a directory, not a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def http_url(text: str) -> str:
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
    sub = cast(_Subcommands, parser.add_subparsers(dest="command", action=_Subcommands))

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

    simulate = sub.add_parser("simulate", help="emit simulated arbitrage transactions as NDJSON")
    simulate.add_argument("--count", type=at_least(int, 0), default=1000, help="how many (0 = endless)")
    simulate.add_argument(
        "--rate", type=at_least(float, 0.0), default=0.0, help="records per second (0 = as fast as possible)"
    )
    simulate.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    simulate.add_argument("--out", type=Path, help="write to this file instead of stdout")
    simulate.add_argument(
        "--url", type=http_url, help="POST batches to this ingest URL instead, e.g. http://127.0.0.1:8080/ingest"
    )
    simulate.add_argument("--batch-size", type=at_least(int, 1), default=10_000, help="records per POST with --url")
    simulate.set_defaults(handler=_simulate)

    config = sub.add_parser("config", help="configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser("show", help="print the effective configuration, secrets redacted")
    show.set_defaults(handler=_config_show)

    sub.add_deferred_parser(
        "ingest",
        ("arbitrage.ingest", "add_ingest_arguments"),
        help="load NDJSON, JSON (either may be .gz) or Parquet files into the warehouse or a running server",
    )
    sub.add_deferred_parser(
        "export",
        ("arbitrage.export", "add_export_arguments"),
        help="export stored transactions to csv, parquet, json, hdf5, arrow, tfrecord",
    )
    sub.add_deferred_parser(
        "keys", ("arbitrage.security", "add_keys_arguments"), help="create, list and revoke API keys"
    )
    return parser


class _Subcommands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Subcommands of which some import their package, and add their arguments, only when run.

    Those packages import the warehouse, polars and Litestar: a second and a half here, which
    `serve` (it execs Granian at once), `--help` and the light commands need not wait for.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: dict[str, tuple[str, str]] = {}

    def add_deferred_parser(self, name: str, add_arguments: tuple[str, str], **kwargs: Any) -> None:
        """`add_arguments` is (module, function); the function gets this command's parser."""
        self.add_parser(name, **kwargs)
        self._deferred[name] = add_arguments

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        name = str(values[0]) if values else ""  # argparse passes [command, *its arguments]
        if deferred := self._deferred.pop(name, None):
            module, function = deferred
            getattr(importlib.import_module(module), function)(self.choices[name])
        super().__call__(parser, namespace, values, option_string)


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
    from arbitrage.security import admin_token, check_bind, check_jwt_settings
    from arbitrage.storage import check_storage
    from arbitrage.telemetry import configure_logging

    configure_logging(settings.telemetry.log_level, settings.telemetry.log_format)  # what is logged before the exec

    # Configuration errors stop here with exit 2; in Granian's worker they would be a traceback
    # after "Listening at".
    check_bind(settings.server.host, settings.auth.enabled)
    address = _listen_address(settings.server.host, settings.server.port)
    check_storage(settings.storage)
    check_jwt_settings(settings)
    admin_token(settings)
    os.environ[SETTINGS_ENV] = msgspec.json.encode(settings).decode()
    os.environ[SERVE_PID_ENV] = str(os.getpid())  # the PID outlives the exec
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
            address,
            "--port",
            str(settings.server.port),
            "--workers",
            str(settings.server.workers),
            "--workers-kill-timeout",
            str(settings.server.stop_timeout_seconds),
            "--log-level",
            settings.telemetry.log_level.lower(),
            *_granian_log_config(settings.telemetry.log_format),
            "arbitrage.cli:app_from_environment",
        ],
    )


def _granian_log_config(log_format: str) -> list[str]:
    """With `log_format = "json"`, Granian's own lines (listening, workers) as JSON objects too."""
    if log_format != "json":
        return []
    return ["--log-config", str(Path(__file__).with_name("telemetry") / "granian_logging.json")]


def _listen_address(host: str, port: int) -> str:
    """The IP address Granian is to listen on for `server.host` (it takes no host names), checked by a bind.

    Granian listens with SO_REUSEPORT, so a second server on a port in use starts without a
    word and the kernel splits connections between the two: answers from two data dirs in
    turn. A socket without that option cannot bind where one listens, which tells; nor can
    it bind an address that is not this machine's, which Granian reports with a backtrace.

    Raises:
        ConfigError: naming `server.host` or `server.port`.
    """
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"server.host: cannot resolve {host!r} ({exc.strerror})") from None
    # A name with both: IPv4, where clients of `localhost` most often connect.
    family, kind, protocol, _, address = min(found, key=lambda entry: entry[0] != socket.AF_INET)
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections of a server just stopped may linger
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"server.port: {host}:{port} is in use by another process (another arbitrage serve?); "
                    "stop it or choose another port"
                ) from None
            if exc.errno == errno.EACCES:
                raise ConfigError(f"server.port: this user may not listen on port {port} (below 1024?)") from None
            raise ConfigError(f"server.host: cannot listen on {host}:{port} ({exc.strerror})") from None
    return str(address[0])


def app_from_environment() -> Any:
    """Granian's app factory: rebuild the settings `serve` resolved."""
    from arbitrage.app import create_app
    from arbitrage.telemetry import configure_logging

    raw = os.environ.get(SETTINGS_ENV)
    settings = msgspec.json.decode(raw, type=Settings) if raw else load_settings(default_config_path())
    configure_logging(settings.telemetry.log_level, settings.telemetry.log_format)
    if SERVE_PID_ENV in os.environ:  # a worker of `serve` (not of a granian command a user typed)
        watch = threading.Thread(
            target=_stop_when_orphaned,
            args=(int(os.environ[SERVE_PID_ENV]), settings.server.stop_timeout_seconds),
            name="orphan-watch",
            daemon=True,
        )
        watch.start()
    return create_app(settings)


ORPHAN_CHECK_SECONDS = 1.0


def _stop_when_orphaned(parent: int, stop_timeout: float) -> None:
    """Stop this Granian worker once the main process that spawned it (`parent`) is gone.

    `parent` comes from `serve` itself: the worker's own parent may have died before this runs
    (imports take seconds), and it would then record its new parent and wait for ever.

    `serve` keeps its PID for supervisors, but one that kills that PID with SIGKILL left the
    worker running, still listening and holding the data dir's lock: the service could not be
    started again until someone found and stopped the worker. SIGTERM shuts it down as usual;
    what Granian's main process would do to a worker that does not stop in time, this does too.
    """
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_SECONDS)
    logging.getLogger(__name__).error("the server's main process (pid %d) is gone; stopping this worker", parent)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(stop_timeout)
    os.kill(os.getpid(), signal.SIGKILL)


def _migrate(_: argparse.Namespace, settings: Settings) -> int:
    """Migrations, then `storage.retention_days` as the tables' TTL: a deploy step leaves the schema as serving would."""
    from arbitrage.storage import apply_retention, open_warehouse

    async def run() -> list[str]:
        warehouse = open_warehouse(settings.storage)
        await warehouse.start()
        try:
            return await apply_retention(warehouse, settings.storage.retention_days)
        finally:
            await warehouse.close()

    changed = asyncio.run(run())
    print(f"migrations applied ({settings.storage.backend} warehouse, database {settings.storage.database})")
    days = settings.storage.retention_days
    kept = f"rows kept {days} days" if days else "rows kept for good"
    print(f"retention: {kept}" + (f" (set on {', '.join(changed)})" if changed else " (unchanged)"))
    return 0


def _simulate(args: argparse.Namespace, _: Settings) -> int:
    if args.url:
        from arbitrage.ingest._cli import post_ndjson

        # As `ingest --url`: a busy server is waited out, rejects are named, the totals printed.
        return post_ndjson(args.url, _simulated_bodies(args, args.batch_size), "simulated")
    out = args.out.open("wb") if args.out else sys.stdout.buffer
    try:
        for body, _count in _simulated_bodies(args, 1000):
            out.write(body)
    except BrokenPipeError:
        return 0
    finally:
        if args.out:
            out.close()
    return 0


def _simulated_bodies(args: argparse.Namespace, chunk_size: int) -> Iterator[tuple[bytes, int]]:
    """NDJSON bodies of simulated records with their counts, paced to `--rate` (slept between bodies)."""
    from arbitrage.simulator import Simulator

    if args.rate:
        simulator = Simulator(seed=args.seed, realtime=True)
        chunk_size = max(1, min(chunk_size, int(args.rate / 10) or 1))
    else:
        simulator = Simulator(seed=args.seed, start=Simulator.start_for(args.count or 1_000_000))
    stream = simulator.stream()
    encoder = msgspec.json.Encoder()
    remaining = args.count if args.count > 0 else None
    started = time.monotonic()
    sent = 0
    while remaining is None or remaining > 0:
        n = chunk_size if remaining is None else min(chunk_size, remaining)
        yield b"\n".join(encoder.encode(next(stream)) for _ in range(n)) + b"\n", n
        sent += n
        if remaining is not None:
            remaining -= n
        if args.rate:
            delay = started + sent / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def _config_show(_: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(redacted(settings), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
