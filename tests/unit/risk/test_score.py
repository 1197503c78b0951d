"""Risk components and score: formulas, bounds, levels and the summary."""

from __future__ import annotations

import math

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbitrage.features import FeatureEngine
from arbitrage.features._synthetic import stored_rows
from arbitrage.risk import RISK_COLUMNS, RISK_WEIGHTS, score_risk, summarize_risk

QUIET = {
    "sandwich_exposure": 0,
    "il_estimate_5m": 0.0,
    "pair_age_s": 86_400.0,
    "volatility_5m": 0.0,
    "trades_24h": 10_000,
    "pair_failure_rate_5m": 0.0,
    "competitors_same_slot": 0,
    "competitors_10_slots": 0,
    "signer_success_rate_5m": 1.0,
    "congestion_score": 0.0,
}


def features(**overrides: float) -> pl.DataFrame:
    return pl.DataFrame([{**QUIET, **overrides}])


def test_a_quiet_transaction_scores_near_zero_and_low() -> None:
    scored = score_risk(features())
    assert scored.get_column("risk_score")[0] == pytest.approx(0.20 * math.exp(-100) / 4, abs=1e-12)
    assert scored.get_column("risk_level")[0] == "low"


def test_components_follow_their_documented_formulas() -> None:
    scored = score_risk(
        features(
            sandwich_exposure=2,
            il_estimate_5m=0.001,
            competitors_same_slot=1,
            competitors_10_slots=10,
            signer_success_rate_5m=0.5,
            congestion_score=0.2,
            pair_age_s=43_200.0,
        )
    ).row(0, named=True)
    assert scored["risk_sandwich"] == pytest.approx(1 - math.exp(-2))
    assert scored["risk_il"] == pytest.approx(1 - math.exp(-1))
    assert scored["risk_competition"] == pytest.approx(1 - math.exp(-2))
    assert scored["risk_execution"] == pytest.approx(0.5 * 0.5 + 0.5 * 0.2)
    assert scored["risk_token"] == pytest.approx((0.5 + 0 + math.exp(-100) + 0) / 4)
    assert scored["risk_score"] == pytest.approx(sum(scored[name] * w for name, w in RISK_WEIGHTS.items()))
    assert scored["risk_level"] == "medium"


finite = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


@settings(max_examples=50, deadline=None)
@given(
    sandwich=st.integers(0, 1000),
    il=finite,
    vol=finite,
    age=finite,
    rate=st.floats(0.0, 1.0),
    rivals=st.integers(0, 1000),
)
def test_score_and_components_stay_in_the_unit_interval(
    sandwich: int, il: float, vol: float, age: float, rate: float, rivals: int
) -> None:
    scored = score_risk(
        features(
            sandwich_exposure=sandwich,
            il_estimate_5m=il,
            volatility_5m=vol,
            pair_age_s=age,
            pair_failure_rate_5m=rate,
            signer_success_rate_5m=rate,
            congestion_score=rate,
            competitors_same_slot=rivals,
            competitors_10_slots=rivals,
        )
    )
    for column in ("risk_score", *RISK_WEIGHTS):
        assert 0.0 <= scored.get_column(column)[0] <= 1.0


def test_risk_columns_are_registered_with_definitions_and_weights_sum_to_one() -> None:
    assert {c.name for c in RISK_COLUMNS} == {*RISK_WEIGHTS, "risk_score", "risk_level"}
    assert sum(RISK_WEIGHTS.values()) == pytest.approx(1.0)


def test_engine_output_can_be_scored_and_summarised() -> None:
    scored = score_risk(FeatureEngine().process(stored_rows(500, seed=3)))
    summary = summarize_risk(scored)
    assert summary["transactions"] == 500
    assert sum(summary["levels"].values()) == 500
    assert summary["unscored"] == 0
    assert summary["mean_score"] == pytest.approx(scored.get_column("risk_score").mean())
    assert set(summary["components"]) == {name.removeprefix("risk_") for name in RISK_WEIGHTS}


def test_rows_without_a_level_are_counted_unscored_and_left_out_of_levels_and_scores() -> None:
    """Rows stored before the risk columns existed read level '' and every score 0."""
    scored = score_risk(FeatureEngine().process(stored_rows(200, seed=5)))
    unscored = scored.head(30).with_columns(
        pl.lit("").alias("risk_level"), *(pl.lit(0.0).alias(c) for c in (*RISK_WEIGHTS, "risk_score"))
    )
    summary = summarize_risk(pl.concat([scored, unscored]))
    assert (summary["transactions"], summary["unscored"]) == (230, 30)
    assert set(summary["levels"]) == {"low", "medium", "high"}
    assert sum(summary["levels"].values()) == 200
    assert summary["mean_score"] == pytest.approx(scored.get_column("risk_score").mean())
    assert summary["components"]["sandwich"] == pytest.approx(scored.get_column("risk_sandwich").mean())
    only_unscored = summarize_risk(unscored)
    assert (only_unscored["unscored"], only_unscored["mean_score"], sum(only_unscored["levels"].values())) == (30, 0, 0)


def test_summary_of_nothing_is_zeroes() -> None:
    assert summarize_risk(pl.DataFrame())["transactions"] == 0
