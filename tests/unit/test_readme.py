"""The README's promises: its Python example runs, and its first screen says how to start."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from arbitrage.features import FeatureEngine
from arbitrage.ingest import decode_body, derive
from arbitrage.risk import score_risk
from arbitrage.simulator import Simulator

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_first_screen_shows_run_test_and_a_curl() -> None:
    first_screen = "\n".join(README.read_text().splitlines()[:25])
    for promise in ("make run", "make test", "curl "):
        assert promise in first_screen


def test_the_ml_preparation_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 3000 transactions stretched over about 7 hours (the simulator's bursts pack them into
    # minutes), so that every split outlives the example's 5-minute embargo.
    records = Simulator(seed=5, start=datetime.now(UTC) - timedelta(hours=8)).records(3000)
    first = records[0]["block_time"]
    records = [r | {"block_time": first + i * 8_400} for i, r in enumerate(records)]
    frame = derive(decode_body(msgspec.json.encode(records), "json").frame, source="test")
    stored = score_risk(FeatureEngine().process(frame))
    (tmp_path / "exports").mkdir()
    stored.drop("legs", "route", "dexes").write_parquet(tmp_path / "exports" / "transactions.parquet")
    example = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert example is not None
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(example.group(1), "README.md", "exec"), namespace)
    assert (tmp_path / "scaler.json").stat().st_size > 0
    train, val, test = namespace["train"], namespace["val"], namespace["test"]
    assert len(train) > len(test) > 0 and len(val) > 0  # type: ignore[arg-type]
