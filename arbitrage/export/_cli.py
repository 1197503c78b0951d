"""`arbitrage export FORMAT --start … --end … --out PATH|URL [options]`, with a progress bar.

The command opens the warehouse itself (the embedded one allows one process: stop the
server first, or use `POST /export/{format}` against it) and writes straight into `--out`
(a directory or fsspec URL): the data files, then `manifest.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sys
from datetime import UTC, datetime
from typing import Any, get_args

import msgspec

from arbitrage.cli import at_least, finite
from arbitrage.errors import ArbitrageError, ValidationError
from arbitrage.export._request import ExportRequest, PartitionKey, Split, check_split
from arbitrage.export._run import ExportProgress, plan_export, run_export, table_columns
from arbitrage.export._sink import Destination, redact_url
from arbitrage.export._writers import UnknownFormat


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of the CLI's `export` command."""
    parser.add_argument("format", help="csv, parquet, json, hdf5, arrow, tfrecord or a registered custom format")
    parser.add_argument("--out", required=True, help="directory or fsspec URL (s3://bucket/prefix/) to write into")
    parser.add_argument("--start", help="first day (YYYY-MM-DD) or RFC 3339 instant, block time UTC")
    parser.add_argument("--end", help="last day (inclusive) or instant (exclusive)")
    parser.add_argument("--columns", help="comma-separated columns (default: all)")
    parser.add_argument("--tokens", help="comma-separated mints; keep routes touching any")
    parser.add_argument("--dexes", help="comma-separated DEXes; keep transactions with a leg on any")
    parser.add_argument("--signers", help="comma-separated signer public keys")
    parser.add_argument("--min-profit", type=finite(float), help="minimum net profit, SOL")
    parser.add_argument("--success-only", action="store_true", help="only transactions that executed")
    parser.add_argument("--compression", help="codec (format-specific: snappy, zstd, gzip, lz4, lzf, none)")
    parser.add_argument(
        "--partition-by",
        type=_partition_keys,
        default=[],
        help="comma-separated: date, hour, month, dex, signer, start_token, ...",
    )
    parser.add_argument("--chunk-rows", type=at_least(int, 1), help="start a new file after this many rows")
    parser.add_argument("--normalize", choices=["zscore", "minmax"], help="scale numeric columns (fitted on train)")
    parser.add_argument("--split", type=_split, help="train,val,test fractions in time order, e.g. 0.7,0.15,0.15")
    parser.add_argument("--json-array", action="store_true", help="json: one array instead of NDJSON")
    parser.add_argument("--arrow-stream", action="store_true", help="arrow: IPC stream instead of IPC file")
    parser.add_argument("--data-dir", help="storage.data_dir")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=export_command)


def _items(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _partition_keys(text: str) -> list[PartitionKey]:
    """An argparse `type=` for `--partition-by`: the keys a request accepts."""
    try:
        return msgspec.convert(_items(text), list[PartitionKey])
    except msgspec.ValidationError:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(get_args(PartitionKey))}; got {text!r}") from None


def _split(text: str) -> Split:
    """An argparse `type=` for `--split`, checked as a request's split is."""
    try:
        train, val, test = (float(v) for v in text.split(","))
        split = msgspec.convert({"train": train, "val": val, "test": test}, Split)
    except ValueError:  # not three numbers, or one outside 0-1 (msgspec.ValidationError is a ValueError)
        raise argparse.ArgumentTypeError(
            f"three fractions from 0 to 1, train,val,test (e.g. 0.7,0.15,0.15); got {text!r}"
        ) from None
    try:
        check_split(split)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return split


def request_from_args(args: argparse.Namespace) -> ExportRequest:
    """The export request the flags describe."""
    return ExportRequest(
        start_date=args.start,
        end_date=args.end,
        tokens=_items(args.tokens),
        dexes=_items(args.dexes),
        signers=_items(args.signers),
        min_profit_sol=args.min_profit,
        success_only=args.success_only,
        columns=_items(args.columns) or None,
        compression=args.compression,
        partition_by=args.partition_by,
        chunk_rows=args.chunk_rows,
        normalize=args.normalize or False,
        split=args.split,
        destination=args.out,
        json_array=args.json_array,
        arrow_stream=args.arrow_stream,
    )


_FLAGS = {
    "start_date": "--start",
    "end_date": "--end",
    "tokens": "--tokens",
    "dexes": "--dexes",
    "signers": "--signers",
    "min_profit_sol": "--min-profit",
    "columns": "--columns",
    "compression": "--compression",
    "destination": "--out",
}
"""The request's fields as the command line names them."""


def _as_flag(error: ValidationError) -> str:
    """`start_date: not a date` → `--start: not a date`; `dexes[1]: ...` → `--dexes (item 2): ...`."""
    root, _, rest = error.field.partition("[")
    flag = _FLAGS.get(root)
    if flag is None:
        return str(error)
    item = f" (item {int(rest.split(']')[0]) + 1})" if rest[:1].isdigit() else ""
    return f"{flag}{item}: {error.reason}"


def export_command(args: argparse.Namespace, settings: Any) -> int:
    """Run one export in this process; print where it went. Exit 0 on success.

    A request the warehouse's table refuses exits 2, like a bad flag. Any failure while
    writing is reported in one line, as an export job reports it: the destination's
    filesystem (s3fs, gcsfs, ...) raises errors of its own kinds.
    """
    from arbitrage.export._settings import storage_options_from
    from arbitrage.storage import open_warehouse

    async def run() -> int:
        warehouse = open_warehouse(settings.storage)
        await warehouse.start()
        try:
            try:
                plan = plan_export(args.format, request_from_args(args), await table_columns(warehouse))
            except UnknownFormat as exc:
                print(f"arbitrage: {exc}", file=sys.stderr)
                return 2
            except ValidationError as exc:
                print(f"arbitrage: {_as_flag(exc)}", file=sys.stderr)
                return 2
            job_id = f"cli-{secrets.token_hex(4)}"
            progress = ExportProgress()
            bar = asyncio.create_task(_show_progress(progress, quiet=args.quiet))
            try:
                destination = Destination(args.out, job_id, storage_options_from(settings.export))
                result = await run_export(
                    warehouse, plan, destination, job_id=job_id, ingested_upto=datetime.now(UTC), progress=progress
                )
            except ArbitrageError:
                raise
            except Exception as exc:
                raise ArbitrageError(f"export to {redact_url(args.out)} failed: {type(exc).__name__}: {exc}") from exc
            finally:
                bar.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await bar
            print(
                f"exported {result.rows:,} rows in {len(result.files)} file(s), {result.bytes / 1e6:.1f} MB, "
                f"to {destination.display_url} (manifest.json)"
            )
            return 0
        finally:
            await warehouse.close()

    return asyncio.run(run())


async def _show_progress(progress: ExportProgress, *, quiet: bool) -> None:
    if quiet:
        return
    from tqdm import tqdm

    with tqdm(total=None, unit="rows", unit_scale=True, dynamic_ncols=True) as bar:
        try:
            while True:
                if progress.rows_total and bar.total != progress.rows_total:
                    bar.total = progress.rows_total
                    bar.refresh()
                bar.update(progress.rows - bar.n)
                await asyncio.sleep(0.2)
        finally:
            bar.update(progress.rows - bar.n)
