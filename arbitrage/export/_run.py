"""One export, start to end: plan, query, stream batches into writers, manifest, commit.

Rows stream from the warehouse in Arrow record batches, ordered by (split, partition keys,
block_time, signature), so exactly one file is open at a time and memory stays flat. The
heavy per-batch work (casting, scaling, flattening, encoding, writing) runs in a worker
thread; the event loop only awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO, cast
from urllib.parse import quote

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from arbitrage.errors import ArbitrageError, ValidationError
from arbitrage.export._flatten import flatten_batch, flattening_of
from arbitrage.export._manifest import (
    ColumnDescription,
    FileInfo,
    ScalerParams,
    build_manifest,
    column_descriptions,
)
from arbitrage.export._request import ExportRequest, TimeRange, check_filters, check_split, time_range
from arbitrage.export._sink import Destination, StagedFile, redact_url
from arbitrage.export._writers import WHOLE_BATCH_ROWS, Exporter, ExporterFactory, WriterOptions, exporter_factory
from arbitrage.model import IDENTIFIER_COLUMNS
from arbitrage.storage import Warehouse, ch_time

SOURCE_TABLE = "transactions"

# Partition keys → ClickHouse expressions (values become `key=value` directory names).
PARTITION_EXPRESSIONS: dict[str, str] = {
    "date": "toString(toDate(block_time))",
    "hour": "formatDateTime(block_time, '%Y-%m-%dT%H')",
    "month": "formatDateTime(block_time, '%Y-%m')",
    "dex": "if(empty(dexes), '', toString(dexes[1]))",
    "signer": "signer",
    "start_token": "start_token",
    "success": "toString(success)",
    "source": "toString(source)",
    "hops": "toString(hops)",
}
TIME_ORDERED_PARTITIONS = frozenset({"date", "hour", "month"})
"""Partition keys whose order is the order of block time."""

SPLITS = ("train", "val", "test")


class ExportCancelled(ArbitrageError):
    """The job was cancelled; nothing was published."""


@dataclass(frozen=True)
class ExportPlan:
    """A checked request: everything needed to run it, nothing left to validate."""

    format: str
    request: ExportRequest
    factory: ExporterFactory
    options: WriterOptions
    columns: list[str]
    column_types: dict[str, str]
    time_range: TimeRange
    scaled_columns: list[str]
    batch_rows: int
    """Rows per batch read from the warehouse: the writer's `batch_rows`, else `WHOLE_BATCH_ROWS`."""


@dataclass
class ExportProgress:
    """Counters a job shows while it runs."""

    rows_total: int = 0
    rows: int = 0
    bytes: int = 0
    files: list[FileInfo] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return 1.0 if self.rows_total == 0 else min(1.0, self.rows / self.rows_total)


class ExportResult(msgspec.Struct, kw_only=True):
    """What a finished export wrote."""

    rows: int
    bytes: int
    files: list[FileInfo]
    manifest: dict[str, Any]
    watermark: datetime


async def table_columns(warehouse: Warehouse, table: str = SOURCE_TABLE) -> dict[str, str]:
    """Column name → ClickHouse type of a warehouse table, in table order."""
    result = await warehouse.query_arrow(
        "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {table:String} ORDER BY position",
        {"db": warehouse.database, "table": table},
    )
    return dict(zip(result.column("name").to_pylist(), result.column("type").to_pylist(), strict=True))


def plan_export(format_name: str, request: ExportRequest, columns: Mapping[str, str]) -> ExportPlan:
    """Check a request against the format and the table; raise on the first problem.

    Raises:
        UnknownFormat: no writer is registered under `format_name`.
        ValidationError: a column, codec, range, split, filter or destination is not acceptable.
    """
    factory = exporter_factory(format_name)
    writer = factory()
    compression = (request.compression or writer.default_compression).lower()
    if compression not in writer.compressions:
        raise ValidationError(
            "compression",
            f"{compression!r} is not supported by {format_name} (supported: {', '.join(sorted(writer.compressions))})",
        )
    selected = list(request.columns) if request.columns else list(columns)
    for name in selected:
        if name not in columns:
            raise ValidationError("columns", f"unknown column {name!r}")
    if len(set(selected)) != len(selected):
        raise ValidationError("columns", "a column is named twice")
    if len(set(request.partition_by)) != len(request.partition_by):
        raise ValidationError("partition_by", "a key is named twice")
    check_split(request.split)
    check_filters(request)
    if request.destination and redact_url(request.destination) != request.destination.split("?", 1)[0]:
        raise ValidationError("destination", "must not embed credentials; configure them under [export]")
    scaled: list[str] = []
    if request.normalize_method != "none":
        candidates = request.normalize_columns if request.normalize_columns is not None else selected
        for name in candidates:
            if name not in columns:
                raise ValidationError("normalize_columns", f"unknown column {name!r}")
            numeric = _is_numeric_clickhouse(columns[name])
            if request.normalize_columns is not None and not numeric:
                raise ValidationError("normalize_columns", f"column {name!r} is not numeric")
            wanted = request.normalize_columns is not None or name not in IDENTIFIER_COLUMNS
            if numeric and name in selected and wanted and name not in scaled:
                scaled.append(name)
    options = WriterOptions(compression=compression, json_array=request.json_array, arrow_stream=request.arrow_stream)
    return ExportPlan(
        format=format_name,
        request=request,
        factory=factory,
        options=options,
        columns=selected,
        column_types={name: columns[name] for name in selected},
        time_range=time_range(request),
        scaled_columns=scaled,
        batch_rows=int(getattr(writer, "batch_rows", WHOLE_BATCH_ROWS)),
    )


async def run_export(
    warehouse: Warehouse,
    plan: ExportPlan,
    destination: Destination,
    *,
    job_id: str,
    ingested_upto: datetime,
    ingested_after: datetime | None = None,
    progress: ExportProgress | None = None,
    cancel: threading.Event | None = None,
    descriptions: Mapping[str, ColumnDescription] | None = None,
    table: str = SOURCE_TABLE,
    batch_rows: int | None = None,
) -> ExportResult:
    """Write the export described by `plan` to `destination`; commit only if all went well.

    Rows are those matching the request's filters with `ingested_after < ingested_at <=
    ingested_upto`, which makes the export a consistent snapshot and lets schedules
    export contiguous, non-overlapping windows.

    Raises:
        ExportCancelled: `cancel` was set; the staged files were deleted.
    """
    progress = progress if progress is not None else ExportProgress()
    cancel = cancel if cancel is not None else threading.Event()
    source = f"{warehouse.database}.{table} FINAL"
    where, params = _where(plan, ingested_after, ingested_upto)
    files: _Files | None = None
    try:
        counted = await warehouse.query_arrow(f"SELECT count() AS n FROM {source} WHERE {where}", params)
        progress.rows_total = int(counted.column("n")[0].as_py())
        split_sql, split_info = await _split(warehouse, plan, source, where, params, progress.rows_total)
        scaler = await _fit_scaler(warehouse, plan, source, where, split_sql, params, progress.rows_total)
        select = [f"`{name}`" for name in plan.columns]
        order = []
        keys: list[str] = []
        if split_sql is not None:
            select.append(f"{split_sql} AS `__split`")
            order.append(f"indexOf(['train', 'val', 'test'], {split_sql})")
            keys.append("__split")
        for index, key in enumerate(plan.request.partition_by):
            select.append(f"{PARTITION_EXPRESSIONS[key]} AS `__p{index}`")
            order.append(PARTITION_EXPRESSIONS[key])
            keys.append(f"__p{index}")
        order += ["block_time", "signature"]
        months = await _months(warehouse, plan, f"{warehouse.database}.{table}", where, params)
        files = _Files(plan, destination, scaler, keys, progress)
        query = _MonthlyQuery(f"SELECT {', '.join(select)} FROM {source}", where, f"ORDER BY {', '.join(order)}")
        stream = _read_by_month(warehouse, query, params, months, batch_rows or plan.batch_rows)
        batches = _prefetched(stream)
        async with contextlib.aclosing(stream), contextlib.aclosing(batches):  # type: ignore[type-var]
            await _pipelined(batches, files, cancel, job_id)
        if cancel.is_set():
            raise ExportCancelled(f"export {job_id} was cancelled")
        empty = await warehouse.query_arrow(f"SELECT {', '.join(f'`{c}`' for c in plan.columns)} FROM {source} LIMIT 0")
        await asyncio.to_thread(files.finish, empty.schema)
        manifest = build_manifest(
            job_id=job_id,
            format_name=plan.format,
            compression=plan.options.compression,
            request=_public_request(plan.request, destination),
            schema=files.schema_description(),
            descriptions=descriptions if descriptions is not None else column_descriptions(),
            files=files.infos,
            source={
                "table": f"{warehouse.database}.{table}",
                "watermark": _iso(ingested_upto),
                "ingested_after": _iso(ingested_after) if ingested_after else None,
                "time_range": {
                    "start": _iso(plan.time_range.start) if plan.time_range.start else None,
                    "end": _iso(plan.time_range.end) if plan.time_range.end else None,
                },
            },
            scaler=(
                {
                    "method": plan.request.normalize_method,
                    "fitted_on": "train" if split_sql is not None else "all",
                    "columns": {k: msgspec.to_builtins(v) for k, v in scaler.items()},
                }
                if scaler
                else None
            ),
            split=split_info,
            created_at=datetime.now(UTC),
        )
        if cancel.is_set():
            raise ExportCancelled(f"export {job_id} was cancelled")
        body = msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n"
        await asyncio.to_thread(destination.commit, [f.path for f in files.infos], body)
    except BaseException:
        if files is not None:
            await asyncio.shield(asyncio.to_thread(files.discard))
        await asyncio.shield(asyncio.to_thread(destination.abort))
        raise
    return ExportResult(
        rows=progress.rows, bytes=progress.bytes, files=files.infos, manifest=manifest, watermark=ingested_upto
    )


async def _months(
    warehouse: Warehouse, plan: ExportPlan, table: str, where: str, params: dict[str, Any]
) -> list[int | None]:
    """The months to read one at a time, in order; `[None]` (one read) when the order is not by time.

    A FINAL read in key order holds a block of every part it merges. Months are the table's
    partitions, so reading one month at a time bounds memory by one month's parts, not by
    every part of the range. The output order stays the same when it follows time: splits
    are time ranges, and date, hour and month keys grow with time.
    """
    if not all(key in TIME_ORDERED_PARTITIONS for key in plan.request.partition_by):
        return [None]
    found = await warehouse.query_arrow(
        f"SELECT DISTINCT toYYYYMM(block_time) AS month FROM {table} WHERE {where} ORDER BY month", params
    )
    return list(found.column("month").to_pylist())


@dataclass(frozen=True)
class _MonthlyQuery:
    """`<head> WHERE <where> <tail>`, whose WHERE can be narrowed to one month."""

    head: str
    where: str
    tail: str

    def sql(self, month: int | None) -> str:
        in_month = "" if month is None else " AND toYYYYMM(block_time) = {export_month:UInt32}"
        return f"{self.head} WHERE {self.where}{in_month} {self.tail}"


async def _read_by_month(
    warehouse: Warehouse, query: _MonthlyQuery, params: dict[str, Any], months: list[int | None], batch_rows: int
) -> AsyncIterator[pa.RecordBatch]:
    """The rows of `query` read month after month (`None`: the whole range at once)."""
    for month in months:
        values = params if month is None else {**params, "export_month": month}
        stream = warehouse.stream_arrow(query.sql(month), values, batch_rows=batch_rows)
        async with contextlib.aclosing(stream):  # type: ignore[type-var]
            async for batch in stream:
                yield batch


async def _pipelined(
    batches: AsyncIterator[pa.RecordBatch], files: _Files, cancel: threading.Event, job_id: str
) -> None:
    """Prepare (transform, flatten) each batch while the previous one is written.

    With the prefetch below, three batches are in flight: one read, one prepared, one
    written; the text formats spend about as long preparing as writing.
    """
    writing: asyncio.Future[None] | None = None
    try:
        async for batch in batches:
            if cancel.is_set():
                raise ExportCancelled(f"export {job_id} was cancelled")
            runs = await asyncio.to_thread(files.prepare, batch)
            if writing is not None:
                await writing
            writing = asyncio.ensure_future(asyncio.to_thread(files.emit, runs))
        if writing is not None:
            await writing
    finally:
        # The caller deletes staged files on failure: no write may still be running then.
        if writing is not None and not writing.done():
            with contextlib.suppress(BaseException):
                await asyncio.shield(writing)


async def _prefetched(stream: AsyncIterator[pa.RecordBatch]) -> AsyncIterator[pa.RecordBatch]:
    """Fetch the next batch while the caller writes the current one (two batches in flight)."""
    iterator = aiter(stream)
    pending: asyncio.Future[pa.RecordBatch] = asyncio.ensure_future(anext(iterator))
    try:
        while True:
            try:
                batch = await pending
            except StopAsyncIteration:
                return
            pending = asyncio.ensure_future(anext(iterator))
            yield batch
    finally:
        if not pending.done():
            pending.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
            await pending


class _Files:
    """Routes ordered batches into one writer at a time, opening files per key and chunk."""

    def __init__(
        self,
        plan: ExportPlan,
        destination: Destination,
        scaler: dict[str, ScalerParams],
        keys: list[str],
        progress: ExportProgress,
    ) -> None:
        self._plan = plan
        self._destination = destination
        self._scaler = scaler
        self._keys = keys
        self._progress = progress
        self._nested = (
            plan.factory.nested_types if hasattr(plan.factory, "nested_types") else plan.factory().nested_types
        )
        self._writer: Exporter | None = None
        self._sink: StagedFile | None = None
        self._key: tuple[str, ...] | None = None
        self._file_rows = 0
        self._part = 0
        self._source_schema: pa.Schema | None = None
        self._schema: pa.Schema | None = None
        self.infos: list[FileInfo] = []
        self._closed_bytes = 0
        """Bytes of the files closed so far: progress adds to it instead of summing every file again."""

    def prepare(self, batch: pa.RecordBatch) -> list[tuple[tuple[str, ...], pa.RecordBatch]]:
        """The batch transformed for the writer, cut into runs of one file key each.

        Touches no writer state, so the next batch can be prepared while `emit` writes this one
        (after the first batch, which fixes the output schema).
        """
        if self._schema is None:
            self._source_schema = batch.schema
        key_columns = [batch.column(k).cast(pa.string()).fill_null("") for k in self._keys]
        data = self._transform(batch.select(self._plan.columns))
        if not key_columns:
            return [((), data)]
        joined = pc.binary_join_element_wise(*key_columns, "\x1f").to_numpy(zero_copy_only=False)
        starts = [0, *(np.flatnonzero(joined[1:] != joined[:-1]) + 1).tolist(), len(joined)]
        return [
            (tuple(str(c[begin].as_py()) for c in key_columns), data.slice(begin, end - begin))
            for begin, end in itertools.pairwise(starts)
        ]

    def emit(self, runs: list[tuple[tuple[str, ...], pa.RecordBatch]]) -> None:
        for key, rows in runs:
            self._write_run(key, rows)

    def finish(self, empty: pa.Schema) -> None:
        """Close the last file; with no rows at all, write one file with just the schema."""
        if self._writer is None and not self.infos:
            self._source_schema = empty
            self._transform(pa.RecordBatch.from_pylist([], schema=empty))
            self._open(())
        self._close_file()

    def discard(self) -> None:
        """Let go of the file being written, unfinished (the export failed): until its descriptor
        is closed, a deleted staged file keeps its disk space, and a full disk stays full."""
        # The writer first: one left open would write its footer into the closed sink when collected.
        for closable in (self._writer, self._sink):
            if closable is not None:
                with contextlib.suppress(Exception):
                    closable.close()
        self._writer = None
        self._sink = None

    def schema_description(self) -> list[dict[str, Any]]:
        assert self._schema is not None
        schema = self._schema
        # The type as the file holds it, which only the writer knows (HDF5 turns a nullable
        # integer into float64, TFRecord everything into three list kinds, text formats times into text).
        column_type = getattr(self._plan.factory(), "column_type", None)
        described = []
        for out_field in schema:
            written = (
                column_type(out_field, self._plan.options) if column_type is not None else {"type": str(out_field.type)}
            )
            entry: dict[str, Any] = {
                "name": out_field.name,
                **written,
                "nullable": out_field.nullable,
                "source_type": self._plan.column_types[out_field.name],
            }
            if self._source_schema is not None and not self._nested:
                flattening = flattening_of(self._source_schema.field(out_field.name).type)
                if flattening:
                    entry["flattening"] = flattening
            if out_field.name in self._scaler:
                entry["normalized"] = self._plan.request.normalize_method
            described.append(entry)
        return described

    def _transform(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        batch = _decode_dictionaries(batch)
        if self._scaler:
            arrays = list(batch.columns)
            fields = list(batch.schema)
            for i, f in enumerate(fields):
                params = self._scaler.get(f.name)
                if params is not None:
                    values = arrays[i].cast(pa.float64())
                    arrays[i] = pc.divide(pc.subtract(values, params.center), params.scale)
                    fields[i] = pa.field(f.name, pa.float64(), f.nullable, f.metadata)
            batch = pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
        if not self._nested:
            batch = flatten_batch(batch)
        if self._schema is None:
            self._schema = batch.schema
        return batch

    def _write_run(self, key: tuple[str, ...], rows: pa.RecordBatch) -> None:
        if key != self._key:
            self._close_file()
            self._key = key
            self._part = 0
        chunk = self._plan.request.chunk_rows
        offset = 0
        while offset < rows.num_rows:
            if self._writer is None:
                self._open(key)
            room = rows.num_rows - offset if chunk is None else chunk - self._file_rows
            piece = rows.slice(offset, min(room, rows.num_rows - offset))
            assert self._writer is not None
            assert self._sink is not None
            self._writer.write(piece)
            offset += piece.num_rows
            self._file_rows += piece.num_rows
            self._progress.rows += piece.num_rows
            self._progress.bytes = self._closed_bytes + self._sink.bytes_written
            if chunk is not None and self._file_rows >= chunk:
                self._close_file()
                self._part += 1

    def _open(self, key: tuple[str, ...]) -> None:
        assert self._schema is not None
        partition = self._partition(key)
        directories = [
            (value if name == "split" else f"{name}={quote(value, safe='')}") for name, value in partition.items()
        ]
        writer = self._plan.factory()
        relative = "/".join([*directories, f"part-{self._part:05d}.{writer.extension(self._plan.options)}"])
        self._sink = self._destination.open_staged(relative)
        writer.open(cast(BinaryIO, self._sink), self._schema, self._plan.options)
        self._writer = writer
        self._file_rows = 0
        self.infos.append(FileInfo(path=relative, rows=0, bytes=0, sha256="", partition=partition))

    def _partition(self, key: tuple[str, ...]) -> dict[str, str]:
        names = (["split"] if "__split" in self._keys else []) + list(self._plan.request.partition_by)
        return dict(zip(names, key, strict=True)) if key else {}

    def _close_file(self) -> None:
        if self._writer is None or self._sink is None:
            return
        self._writer.close()
        self._sink.close()
        info = self.infos[-1]
        info.rows = self._file_rows
        info.bytes = self._sink.bytes_written
        info.sha256 = self._sink.sha256
        self._closed_bytes += info.bytes
        self._progress.bytes = self._closed_bytes
        self._progress.files.append(info)  # readers copy it; a copy here per file was quadratic
        self._writer = None
        self._sink = None


def _where(plan: ExportPlan, after: datetime | None, upto: datetime) -> tuple[str, dict[str, Any]]:
    request = plan.request
    conditions = ["ingested_at <= {upto:DateTime64(3, 'UTC')}"]
    params: dict[str, Any] = {"upto": ch_time(upto)}
    if after is not None:
        conditions.append("ingested_at > {after:DateTime64(3, 'UTC')}")
        params["after"] = ch_time(after)
    if plan.time_range.start is not None:
        conditions.append("block_time >= {start:DateTime64(3, 'UTC')}")
        params["start"] = ch_time(plan.time_range.start)
    if plan.time_range.end is not None:
        conditions.append("block_time < {end:DateTime64(3, 'UTC')}")
        params["end"] = ch_time(plan.time_range.end)
    if request.tokens:
        conditions.append("hasAny(route, {tokens:Array(String)})")
        params["tokens"] = ch_array(request.tokens)
    if request.dexes:
        conditions.append("hasAny(dexes, {dexes:Array(String)})")
        params["dexes"] = ch_array(request.dexes)
    if request.signers:
        conditions.append("has({signers:Array(String)}, signer)")
        params["signers"] = ch_array(request.signers)
    if request.min_profit_sol is not None:
        conditions.append("net_profit_sol >= {min_profit:Float64}")
        params["min_profit"] = repr(float(request.min_profit_sol))
    if request.success_only:
        conditions.append("success")
    return " AND ".join(conditions), params


async def _split(
    warehouse: Warehouse, plan: ExportPlan, source: str, where: str, params: dict[str, Any], total: int
) -> tuple[str | None, dict[str, Any] | None]:
    """The SQL expression naming each row's split, and what the manifest says about it.

    Each boundary is the block time of the row at the split's share in time order: rows of
    that block time and later go to the later split. Every row of a later split is then
    strictly newer than every row of an earlier one (rows of one block, which share a
    time, never straddle two splits), at the price of counts a few rows off the shares.
    """
    split = plan.request.split
    if split is None:
        return None, None
    n_train = round(total * split.train)
    n_val = round(total * split.val) if split.test > 0 else total - n_train
    bounds: list[str | None] = []
    for offset in (n_train, n_train + n_val):
        if offset >= total:
            bounds.append(None)
            continue
        row = await warehouse.query_arrow(
            f"SELECT block_time FROM {source} WHERE {where} ORDER BY block_time LIMIT 1 OFFSET {{offset:UInt64}}",
            {**params, "offset": str(offset)},
        )
        bounds.append(ch_time(row.column("block_time")[0].as_py()))
    for i, bound in enumerate(bounds):
        if bound is not None:
            params[f"split_t{i}"] = bound

    def before(i: int) -> str:
        return "true" if bounds[i] is None else f"block_time < {{split_t{i}:DateTime64(3, 'UTC')}}"

    expression = f"multiIf({before(0)}, 'train', {before(1)}, 'val', 'test')"
    tally = await warehouse.query_arrow(
        f"SELECT countIf({before(0)}) AS train, countIf({before(1)}) AS upto_val FROM {source} WHERE {where}", params
    )
    n_before_val, n_before_test = (int(tally.column(c)[0].as_py()) for c in ("train", "upto_val"))
    counts = {"train": n_before_val, "val": n_before_test - n_before_val, "test": total - n_before_test}
    info = {
        name: {
            "fraction": getattr(split, name),
            "rows": counts[name],
            "starts_at": None if i == 0 or bounds[i - 1] is None else _iso_text(bounds[i - 1]),  # type: ignore[arg-type]
        }
        for i, name in enumerate(SPLITS)
    }
    info["order"] = "block_time"  # type: ignore[assignment]
    return expression, info


async def _fit_scaler(
    warehouse: Warehouse,
    plan: ExportPlan,
    source: str,
    where: str,
    split_sql: str | None,
    params: dict[str, Any],
    total: int,
) -> dict[str, ScalerParams]:
    """Scaling parameters per column, computed in the warehouse over the train rows only.

    Raises:
        ValidationError: there are rows but none in the train split (its first cut falls at
            the first block time), so nothing to fit on: the values would go out unscaled.
    """
    if not plan.scaled_columns:
        return {}
    condition = where if split_sql is None else f"{where} AND {split_sql} = 'train'"
    parts = ["count() AS fitted_rows"]
    for i, name in enumerate(plan.scaled_columns):
        value = f"toFloat64(`{name}`)"
        parts += [
            f"avg({value}) AS m{i}",
            f"stddevPop({value}) AS s{i}",
            f"min({value}) AS lo{i}",
            f"max({value}) AS hi{i}",
        ]
    stats = (
        await warehouse.query_arrow(f"SELECT {', '.join(parts)} FROM {source} WHERE {condition}", params)
    ).to_pylist()[0]
    if total and not stats["fitted_rows"]:
        raise ValidationError(
            "split.train",
            "no rows to fit the scaler on: the rows of the first block time already pass the train share; "
            "raise split.train or leave out normalize",
        )
    fitted = {}
    for i, name in enumerate(plan.scaled_columns):
        mean, std, low, high = (_finite(stats[f"{p}{i}"]) for p in ("m", "s", "lo", "hi"))
        if plan.request.normalize_method == "zscore":
            center, scale = mean, std
        else:
            center, scale = low, high - low
        fitted[name] = ScalerParams(
            center=center, scale=scale if scale > 0 else 1.0, mean=mean, std=std, min=low, max=high
        )
    return fitted


def _finite(value: Any) -> float:
    number = float(value) if value is not None else 0.0
    return number if np.isfinite(number) else 0.0


def _decode_dictionaries(batch: pa.RecordBatch) -> pa.RecordBatch:
    if not any(pa.types.is_dictionary(f.type) for f in batch.schema):
        return batch
    arrays = [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in batch.columns]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _is_numeric_clickhouse(type_name: str) -> bool:
    inner = _unwrap(type_name)
    return inner.startswith(("UInt", "Int", "Float", "Decimal"))


def _unwrap(type_name: str) -> str:
    for wrapper in ("Nullable(", "LowCardinality("):
        if type_name.startswith(wrapper):
            return _unwrap(type_name[len(wrapper) : -1])
    return type_name


def _public_request(request: ExportRequest, destination: Destination) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(request)
    data["destination"] = destination.display_url
    return data


def ch_array(values: list[str]) -> str:
    """An `Array(String)` query parameter value (ClickHouse literal syntax)."""
    quoted = ("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values)
    return "[" + ", ".join(quoted) + "]"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso_text(ch_value: str) -> str:
    return ch_value.replace(" ", "T") + "Z"
