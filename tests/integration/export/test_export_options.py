"""Filters, columns, partitioning, chunking, compression checks, normalization and split."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from arbitrage.errors import ValidationError
from arbitrage.export import Destination, ExportRequest, ExportResult, Split, plan_export, run_export, table_columns
from arbitrage.export._request import MAX_FILTER_VALUES
from arbitrage.model import KAFKA_ORIGIN
from arbitrage.storage import EmbeddedWarehouse

pytestmark = pytest.mark.anyio

ROWS = 2000  # one per minute from 2024-03-01 00:00: two days


async def export(warehouse: EmbeddedWarehouse, out: Path, fmt: str = "parquet", **options: Any) -> ExportResult:
    plan = plan_export(fmt, ExportRequest(**options), await table_columns(warehouse))
    return await run_export(
        warehouse, plan, Destination(str(out), "test"), job_id="test", ingested_upto=datetime.now(UTC)
    )


def read_all(out: Path, result: ExportResult) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for info in result.files:
        rows += pq.read_table(out / info.path).to_pylist()
    return rows


@pytest.fixture
async def filled(warehouse: EmbeddedWarehouse, make_transactions) -> list[dict[str, Any]]:
    await warehouse.insert_arrow("transactions", make_transactions(ROWS))
    table = await warehouse.query_arrow(
        f"SELECT * FROM {warehouse.database}.transactions FINAL ORDER BY block_time, signature"
    )
    return table.to_pylist()


async def test_filters_keep_exactly_the_matching_rows(warehouse, filled, tmp_path):
    token, dex, signer = filled[0]["route"][1], "phoenix", filled[3]["signer"]
    result = await export(
        warehouse,
        tmp_path,
        start_date="2024-03-01T06:00:00Z",
        end_date="2024-03-01",
        tokens=[token],
        dexes=[dex],
        signers=[signer],
        min_profit_sol=0.0,
        success_only=True,
    )
    start = datetime(2024, 3, 1, 6, tzinfo=UTC)
    end = datetime(2024, 3, 2, tzinfo=UTC)
    want = [
        r["signature"]
        for r in filled
        if start <= r["block_time"] < end
        and token in r["route"]
        and dex in r["dexes"]
        and r["signer"] == signer
        and r["net_profit_sol"] is not None
        and r["net_profit_sol"] >= 0
        and r["success"]
    ]
    assert want, "the filter should match some rows"
    assert [r["signature"] for r in read_all(tmp_path, result)] == want


async def test_a_filter_of_a_thousand_signers_keeps_their_rows(warehouse, filled, tmp_path):
    """Filter lists are inlined into the query; the largest list allowed must still fit in one."""
    signer = filled[3]["signer"]
    others = [f"1{i:06d}".replace("0", "z").ljust(44, "A") for i in range(MAX_FILTER_VALUES - 1)]
    result = await export(warehouse, tmp_path, signers=[*others, signer])
    assert [r["signature"] for r in read_all(tmp_path, result)] == [
        r["signature"] for r in filled if r["signer"] == signer
    ]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"signers": ["A" * 44] * (MAX_FILTER_VALUES + 1)}, "signers"),
        ({"signers": ["A" * 44, "0OIl" * 10]}, "signers[1]"),
        ({"tokens": ["So1111"]}, "tokens[0]"),
        ({"dexes": ["raydium", "phoenix'; DROP TABLE transactions --"]}, "dexes[1]"),
    ],
)
async def test_filter_values_the_columns_cannot_hold_are_refused_by_name(warehouse, options, field):
    with pytest.raises(ValidationError) as refused:
        plan_export("parquet", ExportRequest(**options), await table_columns(warehouse))
    assert refused.value.field == field


@pytest.mark.parametrize("partition_by", [["date", "dex", "date"], ["hour"] * 100_000])
async def test_a_partition_key_named_twice_is_refused(warehouse, partition_by):
    """A key twice nests `date=…/date=…/`, which hive readers refuse; 100k of them (a 1 MB body) break the query."""
    with pytest.raises(ValidationError) as refused:
        plan_export("parquet", ExportRequest(partition_by=partition_by), await table_columns(warehouse))
    assert refused.value.field == "partition_by"


async def test_a_column_named_many_times_in_normalize_columns_is_scaled_once(warehouse, filled, tmp_path):
    """The body limit lets 50k names through; fitting each again made a query far above `max_query_size`."""
    result = await export(
        warehouse, tmp_path, columns=["gross_revenue"], normalize="zscore", normalize_columns=["gross_revenue"] * 50_000
    )
    values = np.array([row["gross_revenue"] for row in read_all(tmp_path, result)])
    assert result.rows == ROWS and abs(values.mean()) < 1e-9 and abs(values.std() - 1) < 1e-9
    assert list(result.manifest["scaler"]["columns"]) == ["gross_revenue"]


async def test_columns_are_written_in_the_requested_order(warehouse, filled, tmp_path):
    result = await export(warehouse, tmp_path, columns=["net_profit_sol", "signature"])
    table = pq.read_table(tmp_path / result.files[0].path)
    assert table.column_names == ["net_profit_sol", "signature"]
    assert table.column("signature").to_pylist() == [r["signature"] for r in filled]


async def test_partition_by_date_and_dex_writes_one_directory_per_value(warehouse, filled, tmp_path):
    result = await export(warehouse, tmp_path, partition_by=["date", "dex"])
    expected = {(r["block_time"].date().isoformat(), r["dexes"][0]) for r in filled}
    got = {(f.partition["date"], f.partition["dex"]) for f in result.files}
    assert got == expected
    for info in result.files:
        assert info.path.startswith(f"date={info.partition['date']}/dex={info.partition['dex']}/")
    dataset = ds.dataset(tmp_path, format="parquet", partitioning="hive", exclude_invalid_files=True)
    assert dataset.count_rows() == ROWS
    assert sorted(dataset.to_table().column("signature").to_pylist()) == sorted(r["signature"] for r in filled)


async def test_an_export_partitioned_by_its_own_columns_reads_back_as_the_docs_say(warehouse, filled, tmp_path):
    """`success` and `hops` are columns of the files too: docs/exports.md's pyarrow read must not trip on them."""
    await export(warehouse, tmp_path, partition_by=["success", "hops"])
    table = ds.dataset(tmp_path, format="parquet", exclude_invalid_files=True).to_table()
    assert table.num_rows == ROWS
    assert (table.schema.field("success").type, table.schema.field("hops").type) == (pa.bool_(), pa.uint8())
    assert sorted(table.column("signature").to_pylist()) == sorted(r["signature"] for r in filled)


async def test_chunk_rows_splits_output_into_files_of_at_most_that_many_rows(warehouse, filled, tmp_path):
    result = await export(warehouse, tmp_path, fmt="csv", chunk_rows=700)
    assert [f.rows for f in result.files] == [700, 700, 600]
    assert [f.path for f in result.files] == ["part-00000.csv", "part-00001.csv", "part-00002.csv"]
    lines = sum(len((tmp_path / f.path).read_text().splitlines()) - 1 for f in result.files)
    assert lines == ROWS


async def test_temporal_split_puts_older_rows_in_train_and_fits_the_scaler_on_train_only(warehouse, filled, tmp_path):
    result = await export(
        warehouse,
        tmp_path,
        columns=["signature", "block_time", "total_cost_sol", "slot", "stream_position", *KAFKA_ORIGIN],
        split=Split(train=0.6, val=0.2, test=0.2),
        normalize="zscore",
    )
    by_split = {name: [] for name in ("train", "val", "test")}  # type: dict[str, list[dict[str, Any]]]
    for info in result.files:
        assert info.path.startswith(info.partition["split"] + "/")
        by_split[info.partition["split"]] += pq.read_table(tmp_path / info.path).to_pylist()
    assert [len(by_split[s]) for s in ("train", "val", "test")] == [1200, 400, 400]
    assert max(r["block_time"] for r in by_split["train"]) < min(r["block_time"] for r in by_split["val"])
    assert max(r["block_time"] for r in by_split["val"]) < min(r["block_time"] for r in by_split["test"])
    train_raw = np.array([r["total_cost_sol"] for r in filled[:1200]])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    params = manifest["scaler"]["columns"]["total_cost_sol"]
    assert manifest["scaler"]["fitted_on"] == "train"
    assert params["mean"] == pytest.approx(train_raw.mean())
    assert params["std"] == pytest.approx(train_raw.std())
    scaled_train = np.array([r["total_cost_sol"] for r in by_split["train"]])
    assert scaled_train.mean() == pytest.approx(0, abs=1e-9)
    assert scaled_train.std() == pytest.approx(1)
    test_raw = np.array([r["total_cost_sol"] for r in filled[1600:]])
    np.testing.assert_allclose(
        [r["total_cost_sol"] for r in by_split["test"]], (test_raw - params["mean"]) / params["std"]
    )
    for identifier in ("slot", "stream_position", *KAFKA_ORIGIN):  # not measurements
        assert identifier not in manifest["scaler"]["columns"]
    assert [r["slot"] for r in by_split["train"]] == [r["slot"] for r in filled[:1200]]
    assert manifest["split"]["train"]["rows"] == 1200


async def test_minmax_scaling_maps_the_train_range_to_zero_one(warehouse, filled, tmp_path):
    result = await export(warehouse, tmp_path, columns=["jito_tip_lamports"], normalize="minmax")
    values = [r["jito_tip_lamports"] for r in read_all(tmp_path, result)]
    assert min(values) == 0.0 and max(values) == 1.0


async def test_an_empty_selection_writes_a_schema_only_file_and_a_manifest(warehouse, filled, tmp_path):
    result = await export(warehouse, tmp_path, start_date="2030-01-01")
    assert result.rows == 0 and len(result.files) == 1
    assert pq.read_table(tmp_path / result.files[0].path).num_rows == 0
    assert json.loads((tmp_path / "manifest.json").read_text())["rows"] == 0


async def test_rows_of_one_block_time_never_straddle_two_splits(warehouse, make_transactions, tmp_path):
    """Seven rows per block time (a block's transactions share one): the 60% and 80% marks fall inside blocks."""
    table = make_transactions(1000)
    times = table.column("block_time").to_pylist()
    shared = pa.array([times[i // 7 * 7] for i in range(len(times))], table.schema.field("block_time").type)
    await warehouse.insert_arrow(
        "transactions", table.set_column(table.schema.get_field_index("block_time"), "block_time", shared)
    )
    result = await export(
        warehouse, tmp_path, columns=["signature", "block_time"], split=Split(train=0.6, val=0.2, test=0.2)
    )
    by_split: dict[str, list[Any]] = {name: [] for name in ("train", "val", "test")}
    for info in result.files:
        by_split[info.partition["split"]] += pq.read_table(tmp_path / info.path).column("block_time").to_pylist()
    assert max(by_split["train"]) < min(by_split["val"])
    assert max(by_split["val"]) < min(by_split["test"])
    assert [len(by_split[s]) for s in ("train", "val", "test")] == [595, 203, 202]  # cut at blocks 85 and 114
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [manifest["split"][s]["rows"] for s in ("train", "val", "test")] == [595, 203, 202]


async def test_scaling_fitted_on_a_train_split_without_rows_fails_instead_of_writing_unscaled_values(
    warehouse, make_transactions, tmp_path
):
    """One block time holds the first 70% of rows: the cut after it leaves train empty, with nothing to fit on."""
    table = make_transactions(100)
    times = table.column("block_time").to_pylist()
    shared = pa.array(
        [times[0] if i < 80 else times[i] for i in range(len(times))], table.schema.field("block_time").type
    )
    await warehouse.insert_arrow(
        "transactions", table.set_column(table.schema.get_field_index("block_time"), "block_time", shared)
    )
    with pytest.raises(ValidationError) as refused:
        await export(warehouse, tmp_path / "out", columns=["gross_revenue"], split=Split(), normalize="zscore")
    assert refused.value.field == "split.train"
    assert not (tmp_path / "out").exists() or not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


async def test_an_export_into_the_place_of_an_earlier_one_replaces_it(warehouse, filled, tmp_path):
    """Reading `**/*.parquet` afterwards must not count the earlier export's rows again."""
    first = await export(warehouse, tmp_path, columns=["signature"], partition_by=["date"])
    assert len(first.files) > 1
    (tmp_path / "notes.txt").write_text("not ours")
    second = await export(warehouse, tmp_path, columns=["signature"])
    on_disk = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.parquet"))
    assert on_disk == sorted(info.path for info in second.files)
    assert pl.scan_parquet(f"{tmp_path}/**/*.parquet").select(pl.len()).collect().item() == ROWS
    assert (tmp_path / "notes.txt").read_text() == "not ours"
