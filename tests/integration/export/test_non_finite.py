"""NaN and ±inf in a float column: what each format writes, read back by the readers ML code uses.

They reach the warehouse through valid input: a route whose leg prices multiply past float64
overflows its SOL rate to inf, and a zero gross revenue times that rate is NaN (`net_profit_sol`).
"""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from tfrecord.reader import tfrecord_loader

from arbitrage.export import Destination, ExportRequest, plan_export, run_export, table_columns
from arbitrage.storage import EmbeddedWarehouse

if TYPE_CHECKING:
    from tests.integration.export.conftest import MakeTransactions

pytestmark = pytest.mark.anyio

ROWS = 40
PROFITS = [None, math.nan, math.inf, -math.inf, 0.25]
"""`net_profit_sol` of the first rows (in block time order); later rows keep their finite values."""


@pytest.fixture
async def non_finite(warehouse: EmbeddedWarehouse, make_transactions: MakeTransactions) -> None:
    table = make_transactions(ROWS)
    profit = table.column("net_profit_sol").to_pylist()
    profit[: len(PROFITS)] = PROFITS
    index = table.schema.get_field_index("net_profit_sol")
    await warehouse.insert_arrow("transactions", table.set_column(index, "net_profit_sol", pa.array(profit)))


async def export(warehouse: EmbeddedWarehouse, fmt: str, out: Path, **options: Any) -> Path:
    request = ExportRequest(columns=["signature", "net_profit_sol", "legs"], **options)
    plan = plan_export(fmt, request, await table_columns(warehouse))
    result = await run_export(
        warehouse, plan, Destination(str(out), "test"), job_id="test", ingested_upto=datetime.now(UTC)
    )
    (info,) = result.files
    return out / info.path


def head(values: Any) -> list[Any]:
    """The first values as floats, null as None (NaN compares by `repr` below)."""
    return [None if v is None else float(v) for v in list(values)[: len(PROFITS)]]


def same(got: list[Any], want: list[Any]) -> bool:
    return [repr(v) for v in got] == [repr(v) for v in want]


@pytest.mark.parametrize("array", [False, True])
async def test_json_writes_nan_and_infinities_as_strings_not_null(warehouse, non_finite, tmp_path, array):
    path = await export(warehouse, "json", tmp_path, json_array=array)
    text = path.read_text()
    rows = json.loads(text) if array else [json.loads(line) for line in text.splitlines()]
    assert [r["net_profit_sol"] for r in rows[: len(PROFITS)]] == [None, "NaN", "Infinity", "-Infinity", 0.25]
    assert len(rows) == ROWS and all(isinstance(r["legs"], list) for r in rows)
    # pandas parses the strings back to floats (and, as always, reads null as NaN too).
    frame = pd.read_json(io.StringIO(text), lines=not array)
    assert same(head(frame["net_profit_sol"]), [math.nan, math.nan, math.inf, -math.inf, 0.25])
    # polars: read the column as text, then cast: null stays null, NaN stays NaN.
    if not array:
        lines = pl.read_ndjson(path, schema_overrides={"net_profit_sol": pl.String})
        assert same(head(lines["net_profit_sol"].cast(pl.Float64)), PROFITS)


async def test_csv_writes_nan_and_infinities_as_text_and_null_as_an_empty_field(warehouse, non_finite, tmp_path):
    path = await export(warehouse, "csv", tmp_path)
    fields = [line.split(",")[1] for line in path.read_text().splitlines()[1 : len(PROFITS) + 1]]
    assert fields == ["", "NaN", "inf", "-inf", "0.25"]
    frame = pl.read_csv(path, schema_overrides={"signature": pl.String, "net_profit_sol": pl.Float64})
    assert same(head(frame["net_profit_sol"]), PROFITS)
    assert same(head(pd.read_csv(path)["net_profit_sol"]), [math.nan, math.nan, math.inf, -math.inf, 0.25])


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
async def test_parquet_and_arrow_keep_nan_infinities_and_null_apart(warehouse, non_finite, tmp_path, fmt):
    path = await export(warehouse, fmt, tmp_path)
    table = pq.read_table(path) if fmt == "parquet" else ipc.open_file(pa.memory_map(str(path))).read_all()
    assert same(head(table.column("net_profit_sol").to_pylist()), PROFITS)


async def test_tfrecord_keeps_nan_and_infinities_and_leaves_null_out(warehouse, non_finite, tmp_path):
    path = await export(warehouse, "tfrecord", tmp_path)
    examples = list(tfrecord_loader(str(path), None))[: len(PROFITS)]
    assert "net_profit_sol" not in examples[0]
    assert same([float(e["net_profit_sol"][0]) for e in examples[1:]], PROFITS[1:])


async def test_hdf5_keeps_infinities_and_writes_nan_as_it_writes_null(warehouse, non_finite, tmp_path):
    path = await export(warehouse, "hdf5", tmp_path)
    with h5py.File(path, "r") as h5:
        values = h5["data"]["net_profit_sol"][: len(PROFITS)]
    assert same(values.tolist(), [math.nan, math.nan, math.inf, -math.inf, 0.25])
    assert values.dtype == np.float64
