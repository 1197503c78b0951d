"""Late rows through the real warehouse: flagged when stored, back in slot order after a restart."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from arbitrage.simulator import Simulator
from tests.conftest import fresh_data_dir
from tests.integration.ingest.test_restart_features import _features, _ingest
from tests.unit.features.test_consistency import assert_same_features

pytestmark = pytest.mark.anyio

BATCH = 60


async def test_after_a_restart_rows_see_earlier_late_rows_in_slot_order_as_if_they_came_on_time(
    tmp_path: Path, migrated_template: Path
) -> None:
    """The late batch's own rows keep their flag; rows ingested after the restart match an on-time run (docs: `late`)."""
    records = Simulator(seed=5).records(600)
    changes = [i for i in range(1, len(records)) if records[i]["slot"] != records[i - 1]["slot"]]
    cuts = sorted({next(i for i in changes if i >= start) for start in range(BATCH, changes[-1], BATCH)})
    batches = [records[lo:hi] for lo, hi in itertools.pairwise([0, *cuts, len(records)])]
    assert len(batches) >= 8
    swapped = [*batches[:3], batches[4], batches[3], *batches[5:]]
    late = fresh_data_dir(migrated_template, tmp_path / "late")
    await _ingest(late, swapped[:5])
    await _ingest(late, swapped[5:])
    on_time = fresh_data_dir(migrated_template, tmp_path / "on_time")
    await _ingest(on_time, batches)
    flagged = await _features(late, [r["signature"] for r in batches[3]])
    assert flagged.get_column("late").all()
    after = [r["signature"] for batch in batches[5:] for r in batch]
    expected = await _features(on_time, after)
    assert_same_features(await _features(late, after), expected)
    never_restarted = fresh_data_dir(migrated_template, tmp_path / "never_restarted")
    await _ingest(never_restarted, swapped)
    with pytest.raises(AssertionError):  # without the restart they count the late rows at their arrival
        assert_same_features(await _features(never_restarted, after), expected)
