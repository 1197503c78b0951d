"""Derived fields of a decoded batch, computed on columns: route, economics, prices.

Revenue is in the route's start token (decimal-adjusted) and valued in SOL through the
route itself: the cumulative price along the legs up to the first leg that outputs
wrapped SOL. A route that never touches SOL has no SOL valuation (null), which the
API and exports show as such rather than guessing a price; nor has one whose valuation
overflows a float64 (amounts and decimals no real pool holds), rather than an infinity.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa

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
    )
    hops = raw.get_column("legs").list.len().to_numpy().astype(np.int64)
    assert legs.height == int(hops.sum()), "a transaction without legs passed validation"
    first_legs = np.cumsum(hops) - hops
    per_tx = legs.group_by("_row", maintain_order=True).agg(
        pl.struct([*RAW_LEG_FIELDS, "price"]).alias("legs"),
        pl.col("dex").alias("dexes"),
        pl.col("token_in").first().alias("start_token"),
        pl.col("_in").first().alias("_first_in"),
        pl.col("_out").last().alias("_last_out"),
        pl.col("token_out").last().alias("_end_token"),
    )
    per_tx = per_tx.with_columns(
        pl.Series("hops", hops, dtype=pl.UInt8), _route(legs, hops, first_legs), _sol_per_start(legs, first_legs)
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


def _route(legs: pl.DataFrame, hops: npt.NDArray[np.int64], first_legs: npt.NDArray[np.int64]) -> pl.Series:
    """Per transaction, its first leg's input token, then every leg's output token.

    Built from list offsets (every transaction holds at least one leg, by the contract): a
    `first().append()` aggregation took a third of this module's time.
    """
    rows, leg_rows = hops.shape[0], legs.height
    starts = first_legs + np.arange(rows)  # where each route begins among all routes' tokens
    take = np.empty(rows + leg_rows, dtype=np.int64)
    outputs = np.ones(rows + leg_rows, dtype=bool)
    outputs[starts] = False
    take[starts] = leg_rows + np.arange(rows)
    take[outputs] = np.arange(leg_rows)
    tokens = pl.concat([legs.get_column("token_out"), legs.get_column("token_in").gather(first_legs)]).gather(take)
    offsets = pa.array(np.concatenate([[0], np.cumsum(hops + 1)]), pa.int64())
    # The tokens stay string views: polars takes them back without copying a string.
    return pl.Series(
        "route", pa.LargeListArray.from_arrays(offsets, tokens.to_arrow(compat_level=pl.CompatLevel.newest()))
    )


def _sol_per_start(legs: pl.DataFrame, first_legs: npt.NDArray[np.int64]) -> pl.Series:
    """SOL per start token: the cumulative price up to the first leg that outputs wrapped SOL.

    The product runs leg position by leg position (a few passes), in the same order as a
    per-transaction `cum_prod`, which cost ten times as much as a window expression. A leg
    without a price is skipped, as `cum_prod` skips nulls; null where no leg outputs SOL or
    the one that does has no price.
    """
    price = legs.get_column("price")
    priced = price.is_not_null().to_numpy()
    factors = np.where(priced, price.fill_null(1.0).to_numpy(), 1.0)
    row_of_leg = legs.get_column("_row").to_numpy()
    position = np.arange(legs.height) - first_legs[row_of_leg]
    cumulative = factors.copy()
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is judged as a valuation in derive (is_finite)
        for leg in range(1, int(position.max(initial=0)) + 1):
            at = np.flatnonzero(position == leg)
            cumulative[at] = cumulative[at - 1] * factors[at]
    to_sol = np.flatnonzero((legs.get_column("token_out") == WSOL_MINT).fill_null(False).to_numpy())
    first_to_sol = to_sol[np.diff(row_of_leg[to_sol], prepend=-1) != 0]
    found = np.full(first_legs.shape[0], np.nan)
    found[row_of_leg[first_to_sol]] = np.where(priced[first_to_sol], cumulative[first_to_sol], np.nan)
    return pl.Series("_sol_per_start", found, nan_to_null=True)


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
