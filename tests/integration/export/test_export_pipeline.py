"""The export pipeline: batches read, prepared and written in order, and a failure mid-way leaves nothing."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, ClassVar

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from arbitrage.export import (
    Destination,
    ExportRequest,
    WriterOptions,
    plan_export,
    register_exporter,
    run_export,
    table_columns,
)
from arbitrage.export._sink import PARALLEL_HASH_BYTES, StagedFile
from arbitrage.storage import EmbeddedWarehouse

pytestmark = pytest.mark.anyio

ROWS = 40_000
"""Enough for several batches: the embedded warehouse streams whole blocks of up to ~13k rows."""


class _FailingWriter:
    """Writes some bytes per batch until its `fail_at`-th batch, then raises (a full disk, say)."""

    compressions: ClassVar[tuple[str, ...]] = ("none",)
    default_compression: ClassVar[str] = "none"
    nested_types: ClassVar[bool] = True
    fail_at: ClassVar[int] = 2

    def extension(self, options: WriterOptions) -> str:
        return "arrows"

    def open(self, sink: BinaryIO, schema: pa.Schema, options: WriterOptions) -> None:
        self._sink = sink
        self._calls = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self._calls += 1
        if self._calls == self.fail_at:
            raise OSError("No space left on device")
        self._sink.write(batch.num_rows.to_bytes(8, "little") * 1000)

    def close(self) -> None:
        pass


async def test_batches_come_out_in_block_time_order_across_many_small_batches(
    warehouse: EmbeddedWarehouse, make_transactions, tmp_path: Path
):
    await warehouse.insert_arrow("transactions", make_transactions(ROWS))
    plan = plan_export("csv", ExportRequest(columns=["signature", "block_time"]), await table_columns(warehouse))
    destination = Destination(str(tmp_path), "ordered")
    result = await run_export(
        warehouse, plan, destination, job_id="ordered", ingested_upto=datetime.now(UTC), batch_rows=8192
    )
    assert result.rows == ROWS
    [info] = result.files
    written = pacsv.read_csv(
        tmp_path / info.path, convert_options=pacsv.ConvertOptions(column_types={"signature": pa.string()})
    )
    expected = await warehouse.query_arrow(
        f"SELECT signature FROM {warehouse.database}.transactions ORDER BY block_time, signature"
    )
    assert written.column("signature").to_pylist() == expected.column("signature").to_pylist()
    assert info.sha256 == hashlib.sha256((tmp_path / info.path).read_bytes()).hexdigest()


@pytest.mark.parametrize("partition_by", [[], ["date"], ["dex"]], ids=["whole", "by-date", "by-dex"])
async def test_rows_spanning_several_months_come_out_once_each_in_order(
    warehouse: EmbeddedWarehouse, make_transactions, tmp_path: Path, partition_by: list[str]
):
    # Three months (three partitions), read month by month unless the order is not by time.
    for seed, month in ((1, 1), (2, 3), (3, 2)):
        start = datetime(2024, month, 27, 23, tzinfo=UTC)
        await warehouse.insert_arrow("transactions", make_transactions(3000, seed=seed, start=start))
    request = ExportRequest(columns=["signature", "block_time", "dexes"], partition_by=partition_by)
    plan = plan_export("csv", request, await table_columns(warehouse))
    result = await run_export(
        warehouse, plan, Destination(str(tmp_path), "months"), job_id="months", ingested_upto=datetime.now(UTC)
    )
    assert result.rows == 9000
    options = pacsv.ConvertOptions(column_types={"signature": pa.string(), "block_time": pa.string()})
    files = [pacsv.read_csv(tmp_path / info.path, convert_options=options) for info in result.files]
    signatures = [sig for f in files for sig in f.column("signature").to_pylist()]
    assert len(signatures) == len(set(signatures)) == 9000
    for written in files:
        rows = list(zip(written.column("block_time").to_pylist(), written.column("signature").to_pylist(), strict=True))
        assert rows == sorted(rows)
    if partition_by != ["dex"]:
        expected = await warehouse.query_arrow(
            f"SELECT signature FROM {warehouse.database}.transactions ORDER BY block_time, signature"
        )
        assert signatures == expected.column("signature").to_pylist()


async def test_a_writer_failing_mid_way_fails_the_export_and_leaves_no_file(
    warehouse: EmbeddedWarehouse, make_transactions, tmp_path: Path
):
    await warehouse.insert_arrow("transactions", make_transactions(ROWS))
    register_exporter("failing-arrows", _FailingWriter)
    plan = plan_export("failing-arrows", ExportRequest(), await table_columns(warehouse))
    with pytest.raises(OSError, match="No space left"):
        await run_export(
            warehouse,
            plan,
            Destination(str(tmp_path / "out"), "fails"),
            job_id="fails",
            ingested_upto=datetime.now(UTC),
            batch_rows=8192,
        )
    assert _files_under(tmp_path / "out") == []


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize("sizes", [[10, 20], [PARALLEL_HASH_BYTES, 7, 3 * PARALLEL_HASH_BYTES + 1]])
def test_a_staged_file_counts_and_hashes_every_byte_whatever_the_write_sizes(tmp_path: Path, sizes: list[int]):
    chunks = [bytes([i % 251]) * size for i, size in enumerate(sizes)]
    with open(tmp_path / "f", "wb") as raw:
        staged = StagedFile(raw)
        for chunk in chunks:
            assert staged.write(chunk) == len(chunk)
        staged.close()
    whole = b"".join(chunks)
    assert (tmp_path / "f").read_bytes() == whole
    assert staged.bytes_written == len(whole)
    assert staged.sha256 == hashlib.sha256(whole).hexdigest()


async def test_a_commit_failing_mid_way_takes_back_the_files_it_had_already_published(
    warehouse: EmbeddedWarehouse, make_transactions, tmp_path: Path
):
    # Two days; the second day's directory cannot be made (a file holds its name), so the
    # commit fails after the first day's file got its final name (as an S3 copy may fail).
    await warehouse.insert_arrow("transactions", make_transactions(2880))
    out = tmp_path / "out"
    out.mkdir()
    (out / "date=2024-03-02").write_bytes(b"in the way")
    plan = plan_export("csv", ExportRequest(partition_by=["date"]), await table_columns(warehouse))
    with pytest.raises(FileExistsError):
        await run_export(warehouse, plan, Destination(str(out), "half"), job_id="half", ingested_upto=datetime.now(UTC))
    assert _files_under(out) == [out / "date=2024-03-02"]
