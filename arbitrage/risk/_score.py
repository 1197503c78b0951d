"""Risk components and score from a batch that already carries the features.

Every component is in [0, 1] and saturates smoothly (1 - exp(-x / scale)) so that no
single outlier dominates; the score is their fixed weighted mean, hence also in [0, 1].
"""

from __future__ import annotations

from typing import Any, Final

import polars as pl

from arbitrage.features import Feature

RISK_WEIGHTS: Final[dict[str, float]] = {
    "risk_sandwich": 0.25,
    "risk_il": 0.10,
    "risk_token": 0.20,
    "risk_competition": 0.25,
    "risk_execution": 0.20,
}
LEVEL_BOUNDS: Final = (1.0 / 3.0, 2.0 / 3.0)
"""risk_score below the first bound is low, below the second medium, else high."""

RISK_COLUMNS: Final[tuple[Feature, ...]] = (
    Feature(
        "risk_sandwich",
        "risk",
        "Float64",
        "0-1",
        "slot",
        "1 - exp(-sandwich_exposure): other signers on the same pool earlier in the slot.",
    ),
    Feature(
        "risk_il",
        "risk",
        "Float64",
        "0-1",
        "5 m",
        "1 - exp(-il_estimate_5m / 0.001): impermanent loss from the pair's 5 m price move, 0.1% as scale.",
    ),
    Feature(
        "risk_token",
        "risk",
        "Float64",
        "0-1",
        "24 h",
        "Mean of newness 1 - pair_age_s / 86400, volatility 1 - exp(-volatility_5m / 0.02), "
        "illiquidity exp(-trades_24h / 100) and pair_failure_rate_5m.",
    ),
    Feature(
        "risk_competition",
        "risk",
        "Float64",
        "0-1",
        "10 slots",
        "1 - exp(-(competitors_same_slot + competitors_10_slots / 10)): other signers arbitraging the pair.",
    ),
    Feature(
        "risk_execution",
        "risk",
        "Float64",
        "0-1",
        "25 slots",
        "0.5 x (1 - signer_success_rate_5m) + 0.5 x congestion_score.",
    ),
    Feature(
        "risk_score",
        "risk",
        "Float64",
        "0-1",
        "-",
        "Weighted mean: 0.25 sandwich + 0.10 IL + 0.20 token + 0.25 competition + 0.20 execution.",
    ),
    Feature("risk_level", "risk", "String", "level", "-", "low when risk_score < 1/3, medium when < 2/3, else high."),
)


def _saturate(value: pl.Expr, scale: float) -> pl.Expr:
    return 1.0 - (-value.cast(pl.Float64).clip(lower_bound=0.0) / scale).exp()


def score_risk(batch_with_features: pl.DataFrame) -> pl.DataFrame:
    """The batch with `risk_*` components, `risk_score` in [0, 1] and `risk_level` added."""
    token = (
        (1.0 - (pl.col("pair_age_s") / 86_400.0).clip(0.0, 1.0))
        + _saturate(pl.col("volatility_5m"), 0.02)
        + (-pl.col("trades_24h").cast(pl.Float64) / 100.0).exp()
        + pl.col("pair_failure_rate_5m").clip(0.0, 1.0)
    ) / 4.0
    components = batch_with_features.with_columns(
        _saturate(pl.col("sandwich_exposure"), 1.0).alias("risk_sandwich"),
        _saturate(pl.col("il_estimate_5m"), 0.001).alias("risk_il"),
        token.alias("risk_token"),
        _saturate(pl.col("competitors_same_slot") + pl.col("competitors_10_slots") / 10.0, 1.0).alias(
            "risk_competition"
        ),
        (0.5 * (1.0 - pl.col("signer_success_rate_5m")) + 0.5 * pl.col("congestion_score"))
        .clip(0.0, 1.0)
        .alias("risk_execution"),
    )
    score = pl.sum_horizontal(pl.col(name) * weight for name, weight in RISK_WEIGHTS.items())
    low, high = LEVEL_BOUNDS
    return components.with_columns(score.alias("risk_score")).with_columns(
        pl.when(pl.col("risk_score") < low)
        .then(pl.lit("low"))
        .when(pl.col("risk_score") < high)
        .then(pl.lit("medium"))
        .otherwise(pl.lit("high"))
        .alias("risk_level")
    )


_LEVELS: Final = ("low", "medium", "high")


def summarize_risk(frame: pl.DataFrame) -> dict[str, Any]:
    """Counts per level, score distribution and mean components, for `GET /risk/summary`.

    Rows without a level (stored before the risk columns existed, which left them '' and
    every score 0) are counted as `unscored` and kept out of the levels and the statistics:
    their zeros are not scores. Components are named as in every other response (`sandwich`,
    not the column `risk_sandwich`).
    """
    scored = frame.filter(pl.col("risk_level").is_in(_LEVELS)) if frame.height else frame
    levels = dict.fromkeys(_LEVELS, 0)
    summary: dict[str, Any] = {
        "transactions": frame.height,
        "unscored": frame.height - scored.height,
        "levels": levels,
    }
    if scored.height == 0:
        return {
            **summary,
            "mean_score": 0.0,
            "p50_score": 0.0,
            "p90_score": 0.0,
            "components": {_component(name): 0.0 for name in RISK_WEIGHTS},
        }
    for level, count in scored.group_by("risk_level").len().iter_rows():
        levels[str(level)] = int(count)
    stats = scored.select(
        pl.col("risk_score").mean().alias("mean"),
        pl.col("risk_score").quantile(0.5, "linear").alias("p50"),
        pl.col("risk_score").quantile(0.9, "linear").alias("p90"),
        *(pl.col(name).mean().alias(name) for name in RISK_WEIGHTS),
    ).row(0, named=True)
    return {
        **summary,
        "mean_score": float(stats["mean"]),
        "p50_score": float(stats["p50"]),
        "p90_score": float(stats["p90"]),
        "components": {_component(name): float(stats[name]) for name in RISK_WEIGHTS},
    }


def _component(column: str) -> str:
    return column.removeprefix("risk_")


def risk_columns_sql() -> list[str]:
    """ClickHouse column definitions (`name Type`) of the risk columns."""
    return [f"{c.name} {c.clickhouse_type}" for c in RISK_COLUMNS]


def risk_markdown() -> str:
    """`docs/risk.md`, generated from `RISK_COLUMNS` and the weights."""
    lines = [
        "# Risk score",
        "",
        "Generated by `python -m arbitrage.features.schema risk-doc` from `arbitrage.risk.RISK_COLUMNS`; do not edit.",
        "",
        "Each component is in [0, 1] and computed from the transaction's point-in-time features",
        "(see `docs/features.md`); `risk_score` is their weighted mean, so it is in [0, 1] too.",
        "",
        "| column | type | window | formula |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| `{c.name}` | {c.clickhouse_type} | {c.window} | {c.definition} |" for c in RISK_COLUMNS]
    lines += ["", "| component | weight |", "| --- | --- |"]
    lines += [f"| `{name}` | {weight:.2f} |" for name, weight in RISK_WEIGHTS.items()]
    low, high = LEVEL_BOUNDS
    lines += [
        "",
        f"Levels: low < {low:.3f} <= medium < {high:.3f} <= high.",
        "",
        "`GET /risk/summary` counts rows without a level (stored before the risk columns existed:",
        "`risk_level` '' and every score 0) as `unscored`; they are in `transactions` but not in",
        "`levels`, the score quantiles or the mean components.",
        "",
    ]
    return "\n".join(lines)
