"""Each format, read back by its own reader, holds the warehouse's rows and values."""

from __future__ import annotations

import csv
import gzip
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
import tables
from tfrecord.reader import tfrecord_loader

from arbitrage.export import Destination, ExportRequest, ExportResult, plan_export, run_export, table_columns
from arbitrage.storage import EmbeddedWarehouse

if TYPE_CHECKING:
    from tests.integration.export.conftest import MakeTransactions

pytestmark = pytest.mark.anyio

ROWS = 300


async def export(warehouse: EmbeddedWarehouse, fmt: str, out: Path, **options: Any) -> ExportResult:
    plan = plan_export(fmt, ExportRequest(**options), await table_columns(warehouse))
    destination = Destination(str(out), "test")
    return await run_export(warehouse, plan, destination, job_id="test", ingested_upto=datetime.now(UTC))


async def stored(warehouse: EmbeddedWarehouse) -> list[dict[str, Any]]:
    table = await warehouse.query_arrow(
        f"SELECT * FROM {warehouse.database}.transactions FINAL ORDER BY block_time, signature"
    )
    return table.to_pylist()


@pytest.fixture
async def filled(warehouse: EmbeddedWarehouse, make_transactions: MakeTransactions) -> list[dict[str, Any]]:
    await warehouse.insert_arrow("transactions", make_transactions(ROWS))
    return await stored(warehouse)


def only_file(result: ExportResult, out: Path) -> Path:
    assert len(result.files) == 1
    return out / result.files[0].path


async def test_parquet_read_by_pyarrow_and_polars_equals_the_warehouse(warehouse, filled, tmp_path):
    result = await export(warehouse, "parquet", tmp_path, compression="zstd")
    path = only_file(result, tmp_path)
    assert pq.read_table(path).to_pylist() == filled
    assert pl.read_parquet(path).height == ROWS
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"


@pytest.mark.parametrize("stream", [False, True])
async def test_arrow_ipc_file_and_stream_read_back_equal_the_warehouse(warehouse, filled, tmp_path, stream):
    result = await export(warehouse, "arrow", tmp_path, arrow_stream=stream, compression="lz4")
    path = only_file(result, tmp_path)
    with pa.memory_map(str(path)) as source:
        table = (ipc.open_stream(source) if stream else ipc.open_file(source)).read_all()
    assert path.suffix == (".arrows" if stream else ".arrow")
    assert table.to_pylist() == filled


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat(timespec="milliseconds") if isinstance(v, datetime) else v) for k, v in row.items()}


@pytest.mark.parametrize("array", [False, True])
async def test_json_lines_and_array_hold_the_warehouse_rows(warehouse, filled, tmp_path, array):
    result = await export(warehouse, "json", tmp_path, json_array=array)
    text = only_file(result, tmp_path).read_text()
    rows = json.loads(text) if array else [json.loads(line) for line in text.splitlines()]
    for row in rows:
        for key in ("block_time", "ingested_at"):
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", row[key]), row[key]  # as the API and CSV
            row[key] = datetime.fromisoformat(row[key]).isoformat(timespec="milliseconds")
    assert rows == [_json_row(r) for r in filled]
    assert pl.read_ndjson(only_file(result, tmp_path)).height == ROWS if not array else True


async def test_gzip_json_is_readable_as_gzip(warehouse, filled, tmp_path):
    result = await export(warehouse, "json", tmp_path, compression="gzip")
    path = only_file(result, tmp_path)
    assert path.name.endswith(".ndjson.gz")
    assert len(gzip.decompress(path.read_bytes()).splitlines()) == ROWS


async def test_csv_flattens_legs_to_json_and_lists_to_pipes(warehouse, filled, tmp_path):
    result = await export(warehouse, "csv", tmp_path)
    with only_file(result, tmp_path).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == ROWS
    for got, want in zip(rows, filled, strict=True):
        assert got["signature"] == want["signature"]
        assert int(got["slot"]) == want["slot"]
        assert json.loads(got["legs"]) == want["legs"]
        assert got["route"].split("|") == want["route"]
        assert got["dexes"].split("|") == want["dexes"]
        assert got["success"] == str(want["success"]).lower()
        assert (got["net_profit_sol"] == "") == (want["net_profit_sol"] is None)
        if want["net_profit_sol"] is not None:
            assert float(got["net_profit_sol"]) == want["net_profit_sol"]
    frame = pl.read_csv(only_file(result, tmp_path), schema_overrides={"slot": pl.UInt64, "signature": pl.String})
    assert frame["signature"].to_list() == [r["signature"] for r in filled]


@pytest.mark.parametrize("compression", ["gzip", "zstd", "lz4"])
async def test_csv_streamed_in_small_batches_and_compressed_is_the_same_text(warehouse, filled, tmp_path, compression):
    whole = only_file(await export(warehouse, "csv", tmp_path / "whole"), tmp_path / "whole").read_bytes()
    plan = plan_export("csv", ExportRequest(compression=compression), await table_columns(warehouse))
    out = tmp_path / compression
    result = await run_export(
        warehouse, plan, Destination(str(out), "t"), job_id="t", ingested_upto=datetime.now(UTC), batch_rows=37
    )
    packed = only_file(result, out).read_bytes()
    with pa.CompressedInputStream(pa.BufferReader(packed), compression) as stream:
        assert stream.read() == whole
    assert whole.count(b"\n") > ROWS


async def test_hdf5_read_by_h5py_and_pytables_equals_the_warehouse(warehouse, filled, tmp_path):
    result = await export(warehouse, "hdf5", tmp_path)
    path = only_file(result, tmp_path)
    with h5py.File(path, "r") as h5:
        data = h5["data"]
        assert [s.decode() for s in data["signature"][:]] == [r["signature"] for r in filled]
        assert data["slot"][:].tolist() == [r["slot"] for r in filled]
        assert data["success"][:].tolist() == [r["success"] for r in filled]
        millis = [int(r["block_time"].timestamp() * 1000) for r in filled]
        assert data["block_time"][:].tolist() == millis
        assert data["block_time"].attrs["unit"] == "ms"
        profit = data["net_profit_sol"][:]
        want = np.array([np.nan if r["net_profit_sol"] is None else r["net_profit_sol"] for r in filled])
        np.testing.assert_array_equal(profit, want)
        consumed = data["compute_units_consumed"][:]
        assert [None if np.isnan(v) else int(v) for v in consumed] == [r["compute_units_consumed"] for r in filled]
        assert [json.loads(s) for s in data["legs"][:]] == [r["legs"] for r in filled]
    with tables.open_file(str(path)) as h5:
        assert h5.root.data.slot.read().tolist() == [r["slot"] for r in filled]


async def test_tfrecord_read_by_the_tfrecord_package_equals_the_warehouse(warehouse, filled, tmp_path):
    result = await export(warehouse, "tfrecord", tmp_path)
    examples = list(tfrecord_loader(str(only_file(result, tmp_path)), None))
    assert len(examples) == ROWS
    for got, want in zip(examples, filled, strict=True):
        assert got["signature"].decode() == want["signature"]
        assert got["slot"].tolist() == [want["slot"]]
        assert got["success"].tolist() == [int(want["success"])]
        assert got["block_time"].tolist() == [int(want["block_time"].timestamp() * 1000)]
        assert got["hops"].tolist() == [want["hops"]]
        assert got["total_cost_sol"].tolist() == [np.float32(want["total_cost_sol"])]
        assert json.loads(got["legs"].decode()) == want["legs"]
        assert got["route"].decode().split("|") == want["route"]
        assert ("net_profit_sol" in got) == (want["net_profit_sol"] is not None)
        assert ("bundle_id" in got) == (want["bundle_id"] is not None)


async def test_gzip_tfrecord_is_read_with_gzip_compression_type(warehouse, filled, tmp_path):
    result = await export(warehouse, "tfrecord", tmp_path, compression="gzip")
    path = only_file(result, tmp_path)
    assert path.name.endswith(".tfrecord.gz")
    assert sum(1 for _ in tfrecord_loader(str(path), None, compression_type="gzip")) == ROWS


async def test_manifest_lists_files_with_checksums_schema_and_watermark(warehouse, filled, tmp_path):
    import hashlib

    result = await export(warehouse, "parquet", tmp_path, columns=["signature", "net_profit_sol", "legs"])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["format"] == "parquet" and manifest["rows"] == ROWS
    (entry,) = manifest["files"]
    assert entry["sha256"] == hashlib.sha256((tmp_path / entry["path"]).read_bytes()).hexdigest()
    assert entry["rows"] == ROWS and entry["bytes"] == (tmp_path / entry["path"]).stat().st_size
    assert [c["name"] for c in manifest["schema"]] == ["signature", "net_profit_sol", "legs"]
    assert manifest["schema"][1]["definition"].startswith("Gross revenue in SOL")
    assert manifest["schema"][1]["source_type"] == "Nullable(Float64)"
    assert manifest["source"]["watermark"].endswith("Z")
    assert manifest["software"]["version"]
    assert result.manifest == manifest
