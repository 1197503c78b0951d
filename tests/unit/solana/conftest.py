"""Real mainnet fixtures shared by the Solana decoder tests (see fixtures/solana/README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "solana"


def load(name: str) -> Any:
    """Parsed JSON of one fixture file; skips the test when the fixtures are not checked out."""
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"Solana fixture {name} not found under {FIXTURES}")
    return json.loads(path.read_bytes())


@pytest.fixture(scope="session")
def block() -> Any:
    return load("block_285000037_txs_000-191.getBlock.json")
