"""Derived fields, checked against values computed by hand."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from arbitrage.ingest import decode_body, derive
from arbitrage.model import WSOL_MINT

USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
BONK = "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263"
POOL_A = "58oQChx4yWmvKdwLLZzBi4ChoCc2fqCUWBkwMihLYQo2"
POOL_B = "HJPjoWUrhoZzkNfRpHuieeFk9WcZWjwy6PBjZ81ngndJ"
SIGNER = "7Np41oeYqPefeNQEHSv1UDhYrehxin3NStELsSKCT4K2"


def _tx(legs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "signature": "5" * 88,
        "slot": 300_000_000,
        "block_time": 1_760_000_000_000,
        "signer": SIGNER,
        "legs": legs,
        "fee_lamports": 5_000,
        "priority_fee_lamports": 20_000,
        "jito_tip_lamports": 100_000,
        **extra,
    }


def _derived(record: dict[str, Any]) -> dict[str, Any]:
    decoded = decode_body(msgspec.json.encode([record]), "json")
    assert not decoded.rejects, decoded.rejects
    return derive(decoded.frame, source="test").row(0, named=True)


def test_sol_cycle_profit_is_output_minus_input_minus_costs() -> None:
    row = _derived(
        _tx(
            [
                {
                    "dex": "raydium_amm",
                    "pool": POOL_A,
                    "token_in": WSOL_MINT,
                    "token_out": USDC,
                    "amount_in": 2_000_000_000,
                    "amount_out": 300_000_000,
                },
                {
                    "dex": "orca_whirlpool",
                    "pool": POOL_B,
                    "token_in": USDC,
                    "token_out": WSOL_MINT,
                    "amount_in": 300_000_000,
                    "amount_out": 2_010_000_000,
                },
            ]
        )
    )
    assert row["route"] == [WSOL_MINT, USDC, WSOL_MINT]
    assert row["dexes"] == ["raydium_amm", "orca_whirlpool"]
    assert (row["hops"], row["circular"], row["start_token"]) == (2, True, WSOL_MINT)
    assert row["gross_revenue"] == pytest.approx(0.01)
    assert row["gross_revenue_sol"] == pytest.approx(0.01)
    assert row["total_cost_lamports"] == 125_000
    assert row["total_cost_sol"] == pytest.approx(0.000125)
    assert row["net_profit_sol"] == pytest.approx(0.01 - 0.000125)
    # implied prices: 300 USDC / 2 SOL, then 2.01 SOL / 300 USDC; decimals defaulted from known mints
    assert [leg["price"] for leg in row["legs"]] == pytest.approx([150.0, 2.01 / 300])
    assert [(leg["decimals_in"], leg["decimals_out"]) for leg in row["legs"]] == [(9, 6), (6, 9)]
    assert (row["source"], row["kafka_partition"], row["kafka_offset"]) == ("test", None, None)


def test_a_usdc_cycle_is_valued_in_sol_through_its_own_sol_leg() -> None:
    row = _derived(
        _tx(
            [
                {
                    "dex": "phoenix",
                    "pool": POOL_A,
                    "token_in": USDC,
                    "token_out": WSOL_MINT,
                    "amount_in": 150_000_000,
                    "amount_out": 1_000_000_000,
                },
                {
                    "dex": "meteora_dlmm",
                    "pool": POOL_B,
                    "token_in": WSOL_MINT,
                    "token_out": USDC,
                    "amount_in": 1_000_000_000,
                    "amount_out": 151_500_000,
                },
            ]
        )
    )
    # gain 1.5 USDC; 1 USDC = 1/150 SOL on the first leg -> 0.01 SOL
    assert row["gross_revenue"] == pytest.approx(1.5)
    assert row["gross_revenue_sol"] == pytest.approx(0.01)
    assert row["net_profit_sol"] == pytest.approx(0.01 - 0.000125)


def test_a_route_that_never_touches_sol_has_no_sol_value() -> None:
    row = _derived(
        _tx(
            [
                {
                    "dex": "phoenix",
                    "pool": POOL_A,
                    "token_in": USDC,
                    "token_out": BONK,
                    "amount_in": 1_000_000,
                    "amount_out": 5_000_000_000,
                },
                {
                    "dex": "raydium_clmm",
                    "pool": POOL_B,
                    "token_in": BONK,
                    "token_out": USDC,
                    "amount_in": 5_000_000_000,
                    "amount_out": 1_010_000,
                },
            ]
        )
    )
    assert row["gross_revenue"] == pytest.approx(0.01)
    assert row["gross_revenue_sol"] is None
    assert row["net_profit_sol"] is None


def test_explicit_decimals_override_the_defaults() -> None:
    row = _derived(
        _tx(
            [
                {
                    "dex": "phoenix",
                    "pool": POOL_A,
                    "token_in": WSOL_MINT,
                    "token_out": BONK,
                    "amount_in": 10**9,
                    "amount_out": 10**8,
                    "decimals_out": 8,
                },
                {
                    "dex": "phoenix",
                    "pool": POOL_B,
                    "token_in": BONK,
                    "token_out": WSOL_MINT,
                    "amount_in": 10**8,
                    "amount_out": 10**9,
                    "decimals_in": 8,
                },
            ]
        )
    )
    assert row["legs"][0]["price"] == pytest.approx(1.0)
    assert row["gross_revenue"] == pytest.approx(0.0)


def test_a_failed_transaction_earns_nothing_and_pays_its_costs() -> None:
    row = _derived(
        _tx(
            [
                {
                    "dex": "raydium_amm",
                    "pool": POOL_A,
                    "token_in": WSOL_MINT,
                    "token_out": USDC,
                    "amount_in": 10**9,
                    "amount_out": 150_000_000,
                },
                {
                    "dex": "orca_whirlpool",
                    "pool": POOL_B,
                    "token_in": USDC,
                    "token_out": WSOL_MINT,
                    "amount_in": 150_000_000,
                    "amount_out": 2 * 10**9,
                },
            ],
            success=False,
        )
    )
    assert row["gross_revenue_sol"] == 0.0
    assert row["net_profit_sol"] == pytest.approx(-0.000125)


def test_a_one_way_swap_is_not_circular_and_has_no_revenue() -> None:
    row = _derived(
        _tx(
            [
                {
                    "dex": "raydium_amm",
                    "pool": POOL_A,
                    "token_in": WSOL_MINT,
                    "token_out": USDC,
                    "amount_in": 10**9,
                    "amount_out": 150_000_000,
                }
            ]
        )
    )
    assert (row["circular"], row["hops"]) == (False, 1)
    assert row["gross_revenue"] is None
    assert row["net_profit_sol"] is None


def test_a_sol_valuation_that_overflows_is_null_not_infinite() -> None:
    """Nine legs each pricing 1.8e37 (amounts and decimals no pool holds, but within the contract)."""
    tokens = [USDC, *("A" * 43 + c for c in "BCDEFGH"), WSOL_MINT, USDC]
    legs = [
        {
            "dex": "raydium_amm",
            "pool": POOL_A,
            "token_in": tokens[i],
            "token_out": tokens[i + 1],
            "amount_in": 1,
            "amount_out": 2**64 - 1,
            "decimals_in": 18,
            "decimals_out": 0,
        }
        for i in range(len(tokens) - 1)
    ]
    row = _derived(_tx(legs))
    assert row["circular"] and row["gross_revenue"] > 0
    assert (row["gross_revenue_sol"], row["net_profit_sol"]) == (None, None)


def _leg(token_in: str, token_out: str, amount_in: int, amount_out: int) -> dict[str, Any]:
    return {
        "dex": "raydium_amm",
        "pool": POOL_A,
        "token_in": token_in,
        "token_out": token_out,
        "amount_in": amount_in,
        "amount_out": amount_out,
    }


def test_each_transaction_of_a_batch_gets_its_own_route_and_sol_rate() -> None:
    """Routes and SOL rates are built across the batch's legs at once; each stays with its transaction."""
    records = [
        _tx([_leg(USDC, BONK, 100_000_000, 50_000)], signature="2" * 88),
        _tx(
            [
                _leg(USDC, BONK, 100_000_000, 40_000),  # 0.0004 BONK (5 decimals) per USDC ... then
                _leg(BONK, WSOL_MINT, 40_000, 1_000_000_000),  # 1 SOL per 0.4 BONK
                _leg(WSOL_MINT, USDC, 1_000_000_000, 103_000_000),
            ],
            signature="3" * 88,
        ),
        _tx(
            [_leg(USDC, WSOL_MINT, 200_000_000, 2_000_000_000), _leg(WSOL_MINT, USDC, 2_000_000_000, 202_000_000)],
            signature="4" * 88,
        ),
    ]
    decoded = decode_body(msgspec.json.encode(records), "json")
    assert not decoded.rejects, decoded.rejects
    rows = derive(decoded.frame, source="test").to_dicts()
    assert [row["route"] for row in rows] == [[USDC, BONK], [USDC, BONK, WSOL_MINT, USDC], [USDC, WSOL_MINT, USDC]]
    assert [row["hops"] for row in rows] == [1, 3, 2]
    assert rows[0]["gross_revenue_sol"] is None  # one-way, never touches SOL
    # 100 USDC -> 0.4 BONK -> 1 SOL: 0.01 SOL per USDC; gain 3 USDC
    assert rows[1]["gross_revenue_sol"] == pytest.approx(0.03)
    # 200 USDC -> 2 SOL: 0.01 SOL per USDC; gain 2 USDC
    assert rows[2]["gross_revenue_sol"] == pytest.approx(0.02)
