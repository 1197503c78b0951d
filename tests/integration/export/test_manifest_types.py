"""The manifest's column `type` (and `format`) is what each file holds, read back by the format's own reader."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from tfrecord import example_pb2
from tfrecord.reader import tfrecord_iterator

from arbitrage.export import Destination, ExportRequest, plan_export, run_export, table_columns
from arbitrage.model import TIME_TEXT_FORMAT
from arbitrage.storage import EmbeddedWarehouse

if TYPE_CHECKING:
    from tests.integration.export.conftest import MakeTransactions

pytestmark = pytest.mark.anyio

ROWS = 60
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
INTEGERS = {f"{sign}int{bits}" for sign in ("", "u") for bits in (8, 16, 32, 64)}


@pytest.fixture
async def filled(warehouse: EmbeddedWarehouse, make_transactions: MakeTransactions) -> list[dict[str, Any]]:
    await warehouse.insert_arrow("transactions", make_transactions(ROWS))
    table = await warehouse.query_arrow(
        f"SELECT * FROM {warehouse.database}.transactions FINAL ORDER BY block_time, signature"
    )
    return table.to_pylist()


async def export(warehouse: EmbeddedWarehouse, fmt: str, out: Path, **options: Any) -> tuple[Path, dict[str, Any]]:
    """The one data file of an export of every column, and the manifest's schema by column name."""
    plan = plan_export(fmt, ExportRequest(**options), await table_columns(warehouse))
    result = await run_export(
        warehouse, plan, Destination(str(out), "test"), job_id="test", ingested_upto=datetime.now(UTC)
    )
    (info,) = result.files
    manifest = json.loads((out / "manifest.json").read_text())
    return out / info.path, {column["name"]: column for column in manifest["schema"]}


def types(schema: dict[str, Any]) -> dict[str, str]:
    return {name: column["type"] for name, column in schema.items()}


@pytest.mark.parametrize("normalize", ["none", "zscore"])
async def test_parquet_manifest_types_are_the_files_arrow_schema(warehouse, filled, tmp_path, normalize):
    path, schema = await export(warehouse, "parquet", tmp_path, normalize=normalize)
    assert types(schema) == {f.name: str(f.type) for f in pq.read_schema(path)}
    assert schema["hops"]["type"] == ("uint8" if normalize == "none" else "double")
    assert schema["hops"]["source_type"] == "UInt8"


@pytest.mark.parametrize("stream", [False, True])
async def test_arrow_manifest_types_are_the_files_arrow_schema(warehouse, filled, tmp_path, stream):
    path, schema = await export(warehouse, "arrow", tmp_path, arrow_stream=stream)
    with pa.memory_map(str(path)) as source:
        read = (ipc.open_stream(source) if stream else ipc.open_file(source)).schema
    assert types(schema) == {f.name: str(f.type) for f in read}


async def test_hdf5_manifest_types_are_the_datasets_dtypes(warehouse, filled, tmp_path):
    path, schema = await export(warehouse, "hdf5", tmp_path)
    with h5py.File(path, "r") as h5:
        datasets = dict(h5["data"].items())
        held = {
            name: "string" if h5py.check_string_dtype(d.dtype) is not None else d.dtype.name
            for name, d in datasets.items()
        }
        assert types(schema) == held
        for name, dataset in datasets.items():
            if "unit" in dataset.attrs:
                assert schema[name]["format"] == f"epoch_{dataset.attrs['unit']}"
            else:
                assert "format" not in schema[name]
    # A nullable integer is held as float64 (NaN for null), whatever the warehouse type.
    assert schema["compute_units_consumed"].items() >= {"type": "float64", "source_type": "Nullable(UInt64)"}.items()
    assert schema["block_time"]["type"] == "int64"
    assert schema["legs"]["type"] == "string" and schema["legs"]["flattening"] == "json"


async def test_tfrecord_manifest_types_are_the_feature_kinds_of_every_example(warehouse, filled, tmp_path):
    path, schema = await export(warehouse, "tfrecord", tmp_path)
    examples = []
    for record in tfrecord_iterator(str(path)):
        examples.append(example_pb2.Example())
        examples[-1].ParseFromString(record)
    assert len(examples) == ROWS
    kinds: dict[str, set[str]] = {}
    for example in examples:
        for name, feature in example.features.feature.items():
            kinds.setdefault(name, set()).add(feature.WhichOneof("kind"))
    assert set(kinds) <= set(schema)
    assert {name: kind for name, (kind,) in kinds.items()} == {name: types(schema)[name] for name in kinds}
    assert schema["block_time"]["format"] == "epoch_ms"
    millis = [int(row["block_time"].timestamp() * 1000) for row in filled]
    assert [e.features.feature["block_time"].int64_list.value[0] for e in examples] == millis
    # Columns null in every row (leader) are in no Example; the manifest still names their kind.
    assert schema["leader"]["type"] == "bytes_list"
    assert {schema[n]["type"] for n in ("net_profit_sol", "success", "slot", "signature")} == {
        "float_list",
        "int64_list",
        "bytes_list",
    }


def _polars_dtype(type_name: str) -> pl.DataType:
    return pl.from_arrow(pa.array([], pa.type_for_alias(type_name))).dtype  # type: ignore[union-attr]


async def test_csv_manifest_types_parse_every_field_of_the_file(warehouse, filled, tmp_path):
    path, schema = await export(warehouse, "csv", tmp_path)
    text = pl.read_csv(path, infer_schema=False)
    assert text.columns == list(schema)
    for name, column in schema.items():
        values = text[name]
        want = [row[name] for row in filled]
        if column.get("format") == "rfc3339":
            assert column["type"] == "string"
            parsed = values.str.to_datetime(TIME_TEXT_FORMAT, time_unit="ms", time_zone="UTC", strict=True)
            assert parsed.to_list() == want, name
        elif column["type"] == "string":
            assert "flattening" in column or values.to_list() == want, name
        elif column["type"] == "bool":
            assert set(values.to_list()) <= {"true", "false"}, name
            assert [v == "true" for v in values] == want, name
        else:
            assert column["type"] in INTEGERS | {"double"}, name
            assert values.cast(_polars_dtype(column["type"]), strict=True).to_list() == want, name


def _json_value_matches(value: Any, column: dict[str, Any]) -> bool:
    kind = column["type"]
    if value is None:
        return bool(column["nullable"])
    if column.get("format") == "rfc3339":
        return kind == "string" and isinstance(value, str) and RFC3339.fullmatch(value) is not None
    if kind == "string":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind in INTEGERS:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "double":
        return isinstance(value, float) or value in ("NaN", "Infinity", "-Infinity")
    if kind.startswith("list<"):
        return isinstance(value, list)
    return False


async def test_json_manifest_types_match_every_value_of_the_file(warehouse, filled, tmp_path):
    path, schema = await export(warehouse, "json", tmp_path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == ROWS
    for row in rows:
        assert list(row) == list(schema)
        for name, value in row.items():
            assert _json_value_matches(value, schema[name]), (name, value, schema[name])
    assert schema["ingested_at"].items() >= {"type": "string", "format": "rfc3339"}.items()
