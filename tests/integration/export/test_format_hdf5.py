"""HDF5 exports read back with h5py hold the requested columns, in order, with every row."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import pyarrow as pa
import pytest

from arbitrage.export import Destination, ExportRequest, ExportResult, plan_export, run_export, table_columns
from arbitrage.storage import EmbeddedWarehouse

if TYPE_CHECKING:
    from tests.integration.export.conftest import MakeTransactions

pytestmark = pytest.mark.anyio

BEYOND_FLOAT64 = 2**53 + 1
"""The smallest integer a float64 cannot hold exactly."""


async def export(warehouse: EmbeddedWarehouse, out: Path, **options: Any) -> ExportResult:
    plan = plan_export("hdf5", ExportRequest(**options), await table_columns(warehouse))
    return await run_export(warehouse, plan, Destination(str(out), "t"), job_id="t", ingested_upto=datetime.now(UTC))


async def test_hdf5_datasets_list_in_the_requested_column_order(
    warehouse: EmbeddedWarehouse, make_transactions: MakeTransactions, tmp_path: Path
) -> None:
    await warehouse.insert_arrow("transactions", make_transactions(20))
    columns = ["signature", "slot", "block_time", "net_profit_sol", "legs", "bundle_id"]
    result = await export(warehouse, tmp_path, columns=columns)
    with h5py.File(tmp_path / result.files[0].path, "r") as h5:
        assert list(h5["data"]) == columns  # as csv's header and the manifest's schema list them
    assert [c["name"] for c in result.manifest["schema"]] == columns


async def test_hdf5_nullable_integers_beyond_2_53_are_written_as_float64(
    warehouse: EmbeddedWarehouse, make_transactions: MakeTransactions, tmp_path: Path
) -> None:
    rows = make_transactions(20).to_pylist()
    rows[3]["compute_units_consumed"] = BEYOND_FLOAT64
    rows[4]["kafka_offset"] = 2**62 + 1
    rows[5]["bundle_id"] = "bündel ✓ 🚀"
    await warehouse.insert_arrow("transactions", pa.Table.from_pylist(rows, schema=make_transactions(1).schema))
    result = await export(warehouse, tmp_path, columns=["compute_units_consumed", "kafka_offset", "bundle_id"])
    assert result.rows == 20
    with h5py.File(tmp_path / result.files[0].path, "r") as h5:
        data = h5["data"]
        consumed, offsets = data["compute_units_consumed"][:], data["kafka_offset"][:]
        assert consumed.dtype == np.float64 and consumed[3] == float(BEYOND_FLOAT64)
        assert offsets[4] == float(2**62 + 1)
        assert [None if np.isnan(v) else int(v) for i, v in enumerate(consumed) if i != 3] == [
            r["compute_units_consumed"] for i, r in enumerate(rows) if i != 3
        ]
        assert data["bundle_id"][5].decode() == "bündel ✓ 🚀"
