"""After a restart, the feature engine rebuilt from the warehouse goes on as if it never stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest

from arbitrage.app import start_services
from arbitrage.config import load_settings
from arbitrage.features import FEATURE_NAMES
from arbitrage.simulator import Simulator
from tests.conftest import fresh_data_dir
from tests.unit.features.test_consistency import assert_same_features

pytestmark = pytest.mark.anyio

BATCH = 100


async def _ingest(data_dir: Path, batches: list[list[dict[str, Any]]]) -> None:
    services = await start_services(load_settings(env={}, overrides={"storage.data_dir": str(data_dir)}), jobs=False)
    try:
        for batch in batches:
            await services.ingest.ingest_body(msgspec.json.encode(batch), "application/json", source="test")
    finally:
        await services.close()


async def _features(data_dir: Path, signatures: list[str]) -> pl.DataFrame:
    services = await start_services(load_settings(env={}, overrides={"storage.data_dir": str(data_dir)}), jobs=False)
    try:
        columns = ", ".join(f"`{name}`" for name in ("signature", *FEATURE_NAMES, "late"))
        stored = await services.warehouse.query_arrow(f"SELECT {columns} FROM arbitrage.transactions")
    finally:
        await services.close()
    frame = pl.from_arrow(stored)
    assert isinstance(frame, pl.DataFrame)
    order = pl.DataFrame({"signature": signatures})
    return order.join(frame, on="signature", how="left", maintain_order="left")


async def test_features_after_a_restart_equal_those_of_a_process_that_never_stopped(
    tmp_path: Path, migrated_template: Path
) -> None:
    records = Simulator(seed=11).records(1_200)
    per_slot = pl.DataFrame({"slot": [r["slot"] for r in records]}).group_by("slot").len()
    assert per_slot.get_column("len").max() >= 3  # rows of one slot share a batch's ingestion time
    batches = [records[i : i + BATCH] for i in range(0, len(records), BATCH)]
    half = len(batches) // 2
    restarted = fresh_data_dir(migrated_template, tmp_path / "restarted")
    await _ingest(restarted, batches[:half])
    await _ingest(restarted, batches[half:])
    continuous = fresh_data_dir(migrated_template, tmp_path / "continuous")
    await _ingest(continuous, batches)
    later = [r["signature"] for batch in batches[half:] for r in batch]
    assert_same_features(await _features(restarted, later), await _features(continuous, later))
