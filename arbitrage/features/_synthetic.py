"""Seeded, vectorised stored rows for the feature tests and benchmark.

Two-leg circular SOL -> token -> SOL arbitrages on random DEX pairs over a random-walk
price per token, with bursts of same-slot transactions and gaps between slots. It
builds the `STORED_SCHEMA` columns directly (no per-row Python), so a million rows
take about a second.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from arbitrage.model import KAFKA_ORIGIN, LAMPORTS_PER_SOL, STORED_SCHEMA, WSOL_MINT

DEXES = ("raydium_amm", "orca_whirlpool", "meteora_dlmm", "phoenix")


def stored_rows(
    n: int,
    *,
    seed: int = 0,
    tokens: int = 6,
    signers: int = 30,
    same_slot_share: float = 0.6,
    mean_slot_gap: float = 3.0,
    start_slot: int = 250_000_000,
    start_ms: int = 1_700_000_000_000,
) -> pl.DataFrame:
    """`n` stored transactions in slot order, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    gaps = np.where(rng.random(n) < same_slot_share, 0, rng.geometric(1.0 / mean_slot_gap, n))
    gaps[0] = 0
    slots = start_slot + np.cumsum(gaps)
    block_ms = start_ms + (slots - start_slot) * 400
    token = rng.integers(0, tokens, n)
    log_price = np.zeros(n)
    for t in range(tokens):
        mask = token == t
        log_price[mask] = np.log(0.001 * (t + 1)) + np.cumsum(rng.normal(0.0, 0.002, mask.sum()))
    price = np.exp(log_price)
    first_dex = rng.integers(0, len(DEXES), n)
    second_dex = (first_dex + rng.integers(1, len(DEXES), n)) % len(DEXES)
    price_a = price * (1.0 + rng.normal(0.0, 0.002, n))
    price_b = price * (1.0 + rng.normal(0.0, 0.002, n))
    sol_in = np.exp(rng.normal(0.0, 0.7, n))
    lamports_in = (sol_in * LAMPORTS_PER_SOL).astype(np.uint64)
    token_raw = (sol_in / price_a * 1e6).astype(np.uint64)
    lamports_out = (token_raw / 1e6 * price_b * LAMPORTS_PER_SOL).astype(np.uint64)
    with_reserves = rng.random(n) < 0.5
    fee = np.full(n, 5_000, dtype=np.uint64)
    priority = rng.integers(0, 200_000, n).astype(np.uint64)
    tip = np.where(rng.random(n) < 0.4, rng.integers(1_000, 1_000_000, n), 0).astype(np.uint64)
    cost = fee + priority + tip
    revenue_sol = (lamports_out.astype(np.float64) - lamports_in.astype(np.float64)) / LAMPORTS_PER_SOL
    mints = np.array([f"Tok{t}Mint1111111111111111111111111111111" for t in range(tokens)])
    dex_names = np.array(DEXES)
    frame = pl.DataFrame(
        {
            "signature": [f"sig{seed}x{i}" for i in range(n)],
            "slot": slots.astype(np.uint64),
            "block_time": block_ms,
            "signer": np.array([f"Signer{k}1111111111111111111111111111" for k in range(signers)])[
                rng.integers(0, signers, n)
            ],
            "success": rng.random(n) > 0.1,
            "fee_lamports": fee,
            "priority_fee_lamports": priority,
            "jito_tip_lamports": tip,
            "compute_units_consumed": rng.integers(80_000, 300_000, n).astype(np.uint64),
            "compute_unit_limit": np.full(n, 400_000, dtype=np.uint64),
            "mint": mints[token],
            "dex_a": dex_names[first_dex],
            "dex_b": dex_names[second_dex],
            "lamports_in": lamports_in,
            "token_raw": token_raw,
            "lamports_out": lamports_out,
            "reserves": with_reserves,
            "price_a": price_a,
            "price_b": price_b,
            "revenue_sol": revenue_sol,
            "cost_lamports": cost,
        }
    )
    reserve = pl.when(pl.col("reserves"))
    leg_a = pl.struct(
        dex=pl.col("dex_a"),
        pool=pl.concat_str(pl.lit("Pool"), pl.col("dex_a"), pl.col("mint")),
        token_in=pl.lit(WSOL_MINT),
        token_out=pl.col("mint"),
        amount_in=pl.col("lamports_in"),
        amount_out=pl.col("token_raw"),
        decimals_in=pl.lit(9, pl.UInt8),
        decimals_out=pl.lit(6, pl.UInt8),
        reserve_in=reserve.then(pl.col("lamports_in") * 1_000),
        reserve_out=reserve.then(pl.col("token_raw") * 1_000),
        price=1.0 / pl.col("price_a"),
    )
    leg_b = pl.struct(
        dex=pl.col("dex_b"),
        pool=pl.concat_str(pl.lit("Pool"), pl.col("dex_b"), pl.col("mint")),
        token_in=pl.col("mint"),
        token_out=pl.lit(WSOL_MINT),
        amount_in=pl.col("token_raw"),
        amount_out=pl.col("lamports_out"),
        decimals_in=pl.lit(6, pl.UInt8),
        decimals_out=pl.lit(9, pl.UInt8),
        reserve_in=reserve.then(pl.col("token_raw") * 800),
        reserve_out=reserve.then(pl.col("lamports_out") * 800),
        price=pl.col("price_b"),
    )
    cost_sol = pl.col("cost_lamports").cast(pl.Float64) / LAMPORTS_PER_SOL
    return frame.select(
        "signature",
        "slot",
        pl.from_epoch("block_time", time_unit="ms").dt.replace_time_zone("UTC").alias("block_time"),
        "signer",
        "success",
        "fee_lamports",
        "priority_fee_lamports",
        "jito_tip_lamports",
        pl.lit(0, pl.UInt64).alias("other_cost_lamports"),
        "compute_units_consumed",
        "compute_unit_limit",
        pl.lit(None, pl.String).alias("bundle_id"),
        pl.lit(None, pl.String).alias("leader"),
        pl.concat_list(leg_a, leg_b).alias("legs"),
        pl.concat_list(pl.lit(WSOL_MINT), pl.col("mint"), pl.lit(WSOL_MINT)).alias("route"),
        pl.concat_list("dex_a", "dex_b").alias("dexes"),
        pl.lit(2, pl.UInt8).alias("hops"),
        pl.lit(True).alias("circular"),
        pl.lit(WSOL_MINT).alias("start_token"),
        pl.col("revenue_sol").alias("gross_revenue"),
        pl.col("revenue_sol").alias("gross_revenue_sol"),
        pl.col("cost_lamports").alias("total_cost_lamports"),
        cost_sol.alias("total_cost_sol"),
        (pl.col("revenue_sol") - cost_sol).alias("net_profit_sol"),
        pl.lit("simulator").alias("source"),
        *(pl.lit(None).alias(name) for name in KAFKA_ORIGIN),
        pl.from_epoch("block_time", time_unit="ms").dt.replace_time_zone("UTC").alias("ingested_at"),
    ).cast(STORED_SCHEMA)  # type: ignore[arg-type]
