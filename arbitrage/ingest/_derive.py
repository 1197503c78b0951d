"""Derived fields of a decoded batch, computed on columns: route, economics, prices.

Revenue is in the route's start token (decimal-adjusted) and valued in SOL through the
route itself: the cumulative price along the legs up to the first leg that outputs
wrapped SOL. A route that never touches SOL has no SOL valuation (null), which the
API and exports show as such rather than guessing a price; nor has one whose valuation
overflows a float64 (amounts and decimals no real pool holds), rather than an infinity.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from arbitrage.model import COST_FIELDS, KAFKA_ORIGIN, KNOWN_DECIMALS, LAMPORTS_PER_SOL, STORED_SCHEMA, WSOL_MINT


def _decimals(explicit: str, mint: str) -> pl.Expr:
    return (
        pl.col(explicit)
        .fill_null(pl.col(mint).replace_strict(KNOWN_DECIMALS, default=6, return_dtype=pl.UInt8))
        .cast(pl.UInt8)
    )


def derive(raw: pl.DataFrame, *, source: str, ingested_at: datetime | None = None) -> pl.DataFrame:
    """Add every derived column of `STORED_SCHEMA` to a decoded batch (same rows, same order)."""
    ingested_at = ingested_at or datetime.now(UTC)
    legs = (
        raw.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"), "legs")
        .explode("legs")
        .unnest("legs")
        .with_columns(
            _decimals("decimals_in", "token_in").alias("decimals_in"),
            _decimals("decimals_out", "token_out").alias("decimals_out"),
        )
        .with_columns(
            (pl.col("amount_in").cast(pl.Float64) / pl.lit(10.0).pow(pl.col("decimals_in"))).alias("_in"),
            (pl.col("amount_out").cast(pl.Float64) / pl.lit(10.0).pow(pl.col("decimals_out"))).alias("_out"),
        )
        .with_columns(pl.when(pl.col("_in") > 0).then(pl.col("_out") / pl.col("_in")).alias("price"))
        .with_columns(
            pl.col("price").cum_prod().over("_row").alias("_cum_price"),
            (pl.col("token_out") == WSOL_MINT).alias("_to_sol"),
        )
    )
    per_tx = legs.group_by("_row", maintain_order=True).agg(
        pl.struct([*RAW_LEG_FIELDS, "price"]).alias("legs"),
        pl.col("token_in").first().append(pl.col("token_out")).alias("route"),
        pl.col("dex").alias("dexes"),
        pl.len().cast(pl.UInt8).alias("hops"),
        pl.col("token_in").first().alias("start_token"),
        pl.col("_in").first().alias("_first_in"),
        pl.col("_out").last().alias("_last_out"),
        pl.col("token_out").last().alias("_end_token"),
        pl.col("_cum_price").filter(pl.col("_to_sol")).first().alias("_sol_per_start"),
    )
    lamports = pl.sum_horizontal(COST_FIELDS)
    circular = pl.col("start_token") == pl.col("_end_token")
    sol_rate = pl.when(pl.col("start_token") == WSOL_MINT).then(pl.lit(1.0)).otherwise(pl.col("_sol_per_start"))
    gross = pl.when(~pl.col("success")).then(pl.lit(0.0)).when(circular).then(pl.col("_last_out") - pl.col("_first_in"))
    valued = pl.col("gross_revenue") * sol_rate
    frame = (
        raw.drop("legs")
        .with_columns(pl.from_epoch("block_time", time_unit="ms").dt.replace_time_zone("UTC"))
        .hstack(per_tx.drop("_row"))
        .with_columns(circular.alias("circular"), lamports.alias("total_cost_lamports"))
        .with_columns(gross.alias("gross_revenue"))
        .with_columns(
            pl.when(~pl.col("success"))
            .then(pl.lit(0.0))
            .when(valued.is_finite())
            .then(valued)
            .alias("gross_revenue_sol"),
            (pl.col("total_cost_lamports").cast(pl.Float64) / LAMPORTS_PER_SOL).alias("total_cost_sol"),
        )
        .with_columns(
            (pl.col("gross_revenue_sol") - pl.col("total_cost_sol")).alias("net_profit_sol"),
            pl.lit(source).alias("source"),
            *(pl.lit(None, STORED_SCHEMA[name]).alias(name) for name in KAFKA_ORIGIN if name not in raw.columns),
            ingested_at_column(ingested_at),
        )
    )
    return frame.select([pl.col(name).cast(dtype) for name, dtype in STORED_SCHEMA.items()])


def ingested_at_column(moment: datetime) -> pl.Expr:
    """The `ingested_at` column, every row at `moment` (ms, UTC)."""
    return pl.lit(moment).dt.cast_time_unit("ms").dt.convert_time_zone("UTC").alias("ingested_at")


RAW_LEG_FIELDS = [
    "dex",
    "pool",
    "token_in",
    "token_out",
    "amount_in",
    "amount_out",
    "decimals_in",
    "decimals_out",
    "reserve_in",
    "reserve_out",
]
