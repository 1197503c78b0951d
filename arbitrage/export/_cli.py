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
from typing import Any

from arbitrage.export._request import ExportRequest, Split
from arbitrage.export._run import ExportProgress, plan_export, run_export, table_columns
from arbitrage.export._sink import Destination
from arbitrage.export._writers import UnknownFormat


def add_export_command(subcommands: Any) -> None:
    """Add `export` to the CLI's subcommands (an argparse `_SubParsersAction`)."""
    parser = subcommands.add_parser(
        "export", help="export stored transactions to csv, parquet, json, hdf5, arrow, tfrecord"
    )
    parser.add_argument("format", help="csv, parquet, json, hdf5, arrow, tfrecord or a registered custom format")
    parser.add_argument("--out", required=True, help="directory or fsspec URL (s3://bucket/prefix/) to write into")
    parser.add_argument("--start", help="first day (YYYY-MM-DD) or RFC 3339 instant, block time UTC")
    parser.add_argument("--end", help="last day (inclusive) or instant (exclusive)")
    parser.add_argument("--columns", help="comma-separated columns (default: all)")
    parser.add_argument("--tokens", help="comma-separated mints; keep routes touching any")
    parser.add_argument("--dexes", help="comma-separated DEXes; keep transactions with a leg on any")
    parser.add_argument("--signers", help="comma-separated signer public keys")
    parser.add_argument("--min-profit", type=float, help="minimum net profit, SOL")
    parser.add_argument("--success-only", action="store_true", help="only transactions that executed")
    parser.add_argument("--compression", help="codec (format-specific: snappy, zstd, gzip, lz4, lzf, none)")
    parser.add_argument("--partition-by", help="comma-separated: date, hour, month, dex, signer, start_token, ...")
    parser.add_argument("--chunk-rows", type=int, help="start a new file after this many rows")
    parser.add_argument("--normalize", choices=["zscore", "minmax"], help="scale numeric columns (fitted on train)")
    parser.add_argument("--split", help="train,val,test fractions in time order, e.g. 0.7,0.15,0.15")
    parser.add_argument("--json-array", action="store_true", help="json: one array instead of NDJSON")
    parser.add_argument("--arrow-stream", action="store_true", help="arrow: IPC stream instead of IPC file")
    parser.add_argument("--data-dir", help="storage.data_dir")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=export_command)


def request_from_args(args: argparse.Namespace) -> ExportRequest:
    """The export request the flags describe."""

    def items(value: str | None) -> list[str]:
        return [v.strip() for v in value.split(",") if v.strip()] if value else []

    split = None
    if args.split:
        train, val, test = (float(v) for v in args.split.split(","))
        split = Split(train=train, val=val, test=test)
    return ExportRequest(
        start_date=args.start,
        end_date=args.end,
        tokens=items(args.tokens),
        dexes=items(args.dexes),
        signers=items(args.signers),
        min_profit_sol=args.min_profit,
        success_only=args.success_only,
        columns=items(args.columns) or None,
        compression=args.compression,
        partition_by=items(args.partition_by),  # type: ignore[arg-type]
        chunk_rows=args.chunk_rows,
        normalize=args.normalize or False,
        split=split,
        destination=args.out,
        json_array=args.json_array,
        arrow_stream=args.arrow_stream,
    )


def export_command(args: argparse.Namespace, settings: Any) -> int:
    """Run one export in this process; print where it went. Exit 0 on success."""
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
            job_id = f"cli-{secrets.token_hex(4)}"
            destination = Destination(args.out, job_id, storage_options_from(settings.export))
            progress = ExportProgress()
            bar = asyncio.create_task(_show_progress(progress, quiet=args.quiet))
            try:
                result = await run_export(
                    warehouse, plan, destination, job_id=job_id, ingested_upto=datetime.now(UTC), progress=progress
                )
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
