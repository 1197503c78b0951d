"""Crafted stored rows with hand-chosen prices, times, slots, signers and pools."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl

from arbitrage.model import STORED_SCHEMA, WSOL_MINT

TOKEN = "TokAMint111111111111111111111111111111111"
OTHER_TOKEN = "TokBMint111111111111111111111111111111111"
T0_MS = 1_700_000_040_000  # a whole minute (Tuesday 2023-11-14 22:14 UTC)


@dataclass
class Tx:
    """One crafted transaction: a SOL -> token first leg at `price` SOL per token, then back."""

    slot: int
    ms: int = 0
    price: float = 1.0
    sol_in: float = 1.0
    signer: str = "SignerA111111111111111111111111111111111"
    dex: str = "raydium_amm"
    token: str = TOKEN
    success: bool = True
    priority: int = 0
    tip: int = 0
    pool: str | None = None


def rows(*txs: Tx) -> pl.DataFrame:
    """Stored rows (STORED_SCHEMA minus `ingested_at`) for the crafted transactions."""
    records: list[dict[str, Any]] = []
    for i, tx in enumerate(txs):
        lamports_in = round(tx.sol_in * 1e9)
        token_raw = round(tx.sol_in / tx.price * 1e9)
        pool = tx.pool or f"Pool{tx.dex}{tx.token}"
        leg_out = {
            "dex": tx.dex,
            "pool": pool,
            "token_in": WSOL_MINT,
            "token_out": tx.token,
            "amount_in": lamports_in,
            "amount_out": token_raw,
            "decimals_in": 9,
            "decimals_out": 9,
            "reserve_in": None,
            "reserve_out": None,
            "price": None,
        }
        leg_back = {
            **leg_out,
            "token_in": tx.token,
            "token_out": WSOL_MINT,
            "amount_in": token_raw,
            "amount_out": lamports_in,
            "decimals_in": 9,
            "decimals_out": 9,
        }
        cost = 5_000 + tx.priority + tx.tip
        records.append(
            {
                "signature": f"sig{i}",
                "slot": tx.slot,
                "block_time": datetime.fromtimestamp((T0_MS + tx.ms) / 1000, tz=UTC),
                "signer": tx.signer,
                "success": tx.success,
                "fee_lamports": 5_000,
                "priority_fee_lamports": tx.priority,
                "jito_tip_lamports": tx.tip,
                "compute_units_consumed": 100_000,
                "compute_unit_limit": 200_000,
                "bundle_id": None,
                "leader": None,
                "legs": [leg_out, leg_back],
                "route": [WSOL_MINT, tx.token, WSOL_MINT],
                "dexes": [tx.dex, tx.dex],
                "hops": 2,
                "circular": True,
                "start_token": WSOL_MINT,
                "gross_revenue": 0.0,
                "gross_revenue_sol": 0.0,
                "total_cost_lamports": cost,
                "total_cost_sol": cost / 1e9,
                "net_profit_sol": -cost / 1e9,
                "source": "test",
            }
        )
    schema = {name: dtype for name, dtype in STORED_SCHEMA.items() if name != "ingested_at"}
    return pl.DataFrame(records, schema=schema)
