"""The README's promises: its Python example runs, and its first screen says how to start."""

from __future__ import annotations

import re
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
    sparse = 0.05  # transactions per slot: 3000 of them span about 7 hours
    records = Simulator(seed=5, start=Simulator.start_for(3000, tx_per_slot=sparse), tx_per_slot=sparse).records(3000)
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
    train, test = namespace["train"], namespace["test"]
    assert len(train) > len(test) > 0  # type: ignore[arg-type]
