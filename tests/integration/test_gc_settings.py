"""The app's lifespan tunes the cyclic GC while it serves, and leaves it as it found it."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from arbitrage.app import GC_THRESHOLDS, create_app
from arbitrage.config import load_settings
from tests.conftest import fresh_data_dir

pytestmark = pytest.mark.anyio


async def test_the_app_serves_with_its_gc_thresholds_and_frozen_start_up_objects_then_restores(
    tmp_path: Path, migrated_template: Path
) -> None:
    data = fresh_data_dir(migrated_template, tmp_path / "data")
    settings = load_settings(env={}, overrides={"storage.data_dir": str(data), "export.dir": str(tmp_path / "x")})
    before = gc.get_threshold()
    assert before != GC_THRESHOLDS
    async with AsyncTestClient(create_app(settings)) as client:
        assert (await client.get("/health")).status_code == 200
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
