"""Every feature against a slow plain-Python reading of its documented definition (`reference`)."""

from __future__ import annotations

import itertools
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest

from arbitrage.features import FEATURE_NAMES, FeatureEngine
from arbitrage.features._synthetic import stored_rows
from arbitrage.ingest import decode_records, derive
from arbitrage.model import STORED_SCHEMA, WSOL_MINT
from arbitrage.risk import score_risk
from arbitrage.solana import decode_documents
from tests.unit.features.conftest import Tx, rows
from tests.unit.features.reference import USDC, reference_features, reference_risk, reference_row_features


def varied(data: pl.DataFrame, seed: int, *, whole_seconds: bool = False) -> pl.DataFrame:
    """Synthetic rows made harder: block times that step back, both trade sides, other quotes, unpriced legs,
    other costs, unknown revenue and compute units, bundles.

    `whole_seconds` puts block times on whole seconds, so that many land exactly on window edges.
    """
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    for raw in data.to_dicts():
        raw["block_time"] += timedelta(milliseconds=rng.randint(-1_500, 1_500))
        if rng.random() < 0.02:  # far behind: event time holds at the running maximum
            raw["block_time"] -= timedelta(seconds=rng.randint(30, 400))
        if whole_seconds:
            raw["block_time"] = raw["block_time"].replace(microsecond=0)
        legs = raw["legs"]
        if rng.random() < 0.3:  # sells the token first: the pair's other side
            legs = list(reversed(legs))
        if rng.random() < 0.04:  # no price
            legs = [{**legs[0], "amount_out": 0}, *legs[1:]]
        if rng.random() < 0.15:  # quoted in USDC, or in neither SOL nor a stable: oriented by mint order
            other = rng.choice(
                [USDC, "AaaMint1111111111111111111111111111111111", "ZzzMint1111111111111111111111111111111111"]
            )
            legs = [
                {**leg, **{side: other for side in ("token_in", "token_out") if leg[side] == WSOL_MINT}} for leg in legs
            ]
        if rng.random() < 0.1:  # decimals from the mint
            legs = [{**legs[0], "decimals_in": None, "decimals_out": None}, *legs[1:]]
        raw["legs"] = legs
        raw["route"] = [legs[0]["token_in"], *(leg["token_out"] for leg in legs)]
        raw["dexes"] = [leg["dex"] for leg in legs]
        raw["start_token"] = raw["route"][0]
        if rng.random() < 0.2:
            raw["other_cost_lamports"] = rng.randint(1, 50_000)
            raw["total_cost_lamports"] += raw["other_cost_lamports"]
            raw["total_cost_sol"] = raw["total_cost_lamports"] / 1e9
            raw["net_profit_sol"] = raw["gross_revenue_sol"] - raw["total_cost_sol"]
        if rng.random() < 0.05:  # revenue not valued in SOL
            raw["gross_revenue"] = raw["gross_revenue_sol"] = raw["net_profit_sol"] = None
        if rng.random() < 0.05:
            raw["compute_units_consumed"] = raw["compute_unit_limit"] = None
        if rng.random() < 0.3:
            raw["bundle_id"] = f"bundle{rng.randint(0, 99)}"
        records.append(raw)
    return pl.DataFrame(records, schema=STORED_SCHEMA)


def in_batches(data: pl.DataFrame, seed: int, batches: int) -> pl.DataFrame:
    """One engine over `data` cut at random places into `batches` batches."""
    cuts = sorted(random.Random(seed).sample(range(1, data.height), batches - 1)) if batches > 1 else []
    engine = FeatureEngine()
    bounds = [0, *cuts, data.height]
    return pl.concat([engine.process(data.slice(lo, hi - lo)) for lo, hi in itertools.pairwise(bounds)])


def mismatches(actual: pl.DataFrame, expected: list[dict[str, Any]], names: list[str]) -> dict[str, list[str]]:
    """Per feature, the first few rows where the engine and the reference disagree."""
    found: dict[str, list[str]] = {}
    for name in names:
        column = actual.get_column(name).to_list()
        bad = [
            f"row {i}: engine {a!r} reference {e[name]!r}"
            for i, (a, e) in enumerate(zip(column, expected, strict=True))
            if not (a == e[name] or (isinstance(a, float) and math.isclose(a, e[name], rel_tol=1e-7, abs_tol=1e-9)))
        ]
        if bad:
            found[name] = bad[:3]
    return found


WINDOW_NAMES = sorted(set(FEATURE_NAMES) - set(reference_row_features(stored_rows(1))[0]))


def reference_mismatches(out: pl.DataFrame, data: pl.DataFrame) -> dict[str, list[str]]:
    """The engine's features of `data` against the reference's, window and row features alike."""
    found = mismatches(out, reference_features(data), WINDOW_NAMES)
    row_reference = reference_row_features(data)
    found.update(mismatches(out, row_reference, list(row_reference[0])))
    return found


DATA_SETS: dict[str, dict[str, Any]] = {
    "dense same-slot bursts": {"same_slot_share": 0.9, "mean_slot_gap": 1.5},
    "seconds apart": {},
    "minutes apart": {"mean_slot_gap": 30.0},
    "days, minute-aligned windows": {"mean_slot_gap": 1_200.0, "same_slot_share": 0.5},
}


def data_set(name: str, seed: int) -> pl.DataFrame:
    return varied(
        stored_rows(500, seed=seed, tokens=3, signers=5, **DATA_SETS[name]), seed, whole_seconds=seed % 2 == 0
    )


@pytest.mark.parametrize("name", DATA_SETS)
@pytest.mark.parametrize("seed", [1, 2])
def test_every_feature_equals_its_documented_definition_in_one_or_many_batches(name: str, seed: int) -> None:
    data = data_set(name, seed)
    for batches in (1, 13):
        assert reference_mismatches(in_batches(data, seed, batches), data) == {}, batches


@pytest.mark.parametrize("name", DATA_SETS)
def test_an_engine_warmed_from_history_continues_with_the_documented_values(name: str) -> None:
    data = data_set(name, 3)
    rest = FeatureEngine.from_history(data.head(350)).process(data.slice(350))
    expected = reference_features(data)[350:]
    assert mismatches(rest, expected, WINDOW_NAMES) == {}


def test_batches_in_any_row_order_use_slot_then_position_order() -> None:
    """Each batch shuffled, batches still in slot order: the reference reads the concatenation."""
    rng = random.Random(4)
    data = data_set("dense same-slot bursts", 4)
    slots = data.get_column("slot").to_list()
    new_slot = [i for i in range(1, data.height) if slots[i] != slots[i - 1]]
    bounds = [0, *sorted(rng.sample(new_slot, 8)), data.height]
    batches = []
    for lo, hi in itertools.pairwise(bounds):
        positions = list(range(lo, hi))
        rng.shuffle(positions)
        batches.append(data[positions])
    engine = FeatureEngine()
    out = pl.concat([engine.process(batch) for batch in batches])
    assert not out.get_column("late").any()
    assert reference_mismatches(out, pl.concat(batches)) == {}


def test_risk_components_and_score_follow_their_documented_formulas_on_engine_output() -> None:
    scored = score_risk(FeatureEngine().process(data_set("dense same-slot bursts", 5)))
    expected = [reference_risk(row) for row in scored.select(FEATURE_NAMES).to_dicts()]
    assert mismatches(scored, expected, list(expected[0])) == {}


FIXTURES = Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "solana"


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared/fixtures/solana is not beside the repository")
def test_real_mainnet_transactions_get_the_documented_features() -> None:
    """Every arbitrage and swap decoded from the real fixtures, in slot order (one dense slot)."""
    records = [
        decoded.record
        for path in sorted(FIXTURES.glob("*.json"))
        if "expected" not in path.name
        for decoded in decode_documents(path.read_bytes())
        if decoded.record is not None
    ]
    now = datetime(2024, 9, 1, tzinfo=UTC)
    batch = decode_records([msgspec.json.encode(record) for record in records], now=now)
    assert not batch.rejects
    data = derive(batch.frame, source="solana", ingested_at=now).sort("slot", maintain_order=True)
    assert data.height >= 40
    for batches in (1, 4):
        assert reference_mismatches(in_batches(data, 0, batches), data) == {}, batches


def test_windows_at_their_exact_edges_equal_the_reference() -> None:
    """Trades exactly 5 s, 1 m, 5 m, 1,440 and 2,880 minutes apart, and slots exactly 10 and 25 apart."""
    minute, a, b = 60_000, "SignerA" + "1" * 33, "SignerB" + "1" * 33
    offsets = [0, 5_000, 10_000, 60_000, 65_000, 120_000, 300_000, 360_000, 420_000]
    offsets += [k * minute for k in (1_439, 1_440, 1_441, 1_442, 2_879, 2_880, 2_881, 2_882, 2_883)]
    offsets += [2_883 * minute + 1, 2_883 * minute + minute - 1, 2_884 * minute]
    slots = list(itertools.accumulate([1, 10, 25, 0, 9, 26, 24, 1, 0, 10, 25, 25, 0, 1, 10, 24, 26, 0, 9, 10, 25]))
    txs = [
        Tx(slot, ms, price=1.0 + 0.01 * (i % 5), sol_in=1.0 + i % 3, signer=(a, b)[i % 2], success=i % 4 != 0)
        for i, (slot, ms) in enumerate(zip(slots, offsets, strict=True))
    ]
    data = rows(*txs).with_columns(pl.lit(0, pl.UInt64).alias("other_cost_lamports"))
    for batches in (1, 5):
        assert reference_mismatches(in_batches(data, 6, batches), data) == {}, batches
