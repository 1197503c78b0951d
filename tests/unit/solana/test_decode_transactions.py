"""Real transactions against Jupiter's expected swaps and the README's balance-delta reading."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from arbitrage.ingest import decode_records, derive
from arbitrage.model import WSOL_MINT, TransactionIn
from arbitrage.solana import SolanaDecoded, decode_transaction

from .conftest import load

USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
ARB_5HOP = "jup_arb_5hop_usdc_jitotip_GCeRpjvf"
ARB_3HOP = "jup_arb_3hop_sol_jitotip_2BppD7Zq"
NONARB = "jup_nonarb_3hop_sol_to_usdc_jitotip_2kai9Wa4"
TX182 = "block_285000037_tx182_arb_jitotip.getTransaction.json"


def decode(stem: str) -> SolanaDecoded:
    return decode_transaction(load(f"{stem}.getTransaction.jsonParsed.json"))


def expected_swaps(stem: str) -> list[dict[str, Any]]:
    return [event["data"] for event in load(f"{stem}.expected_swaps.json")["parsedEvents"]]


def legs(result: SolanaDecoded) -> list[dict[str, Any]]:
    assert result.record is not None
    return list(result.record["legs"])


@pytest.mark.parametrize("stem", [ARB_3HOP, NONARB])
def test_hops_match_jupiters_expected_swaps(stem: str) -> None:
    result = decode(stem)
    got = [(leg["token_in"], leg["amount_in"], leg["token_out"], leg["amount_out"]) for leg in legs(result)]
    want = [
        (s["inputMint"], int(s["inputAmount"]), s["outputMint"], int(s["outputAmount"])) for s in expected_swaps(stem)
    ]
    assert got == want


@pytest.mark.parametrize("stem", [ARB_5HOP, ARB_3HOP, NONARB])
def test_each_hop_names_the_dex_program_jupiter_reports(stem: str) -> None:
    program_names = {
        "srmqPvymJeFKQ4zGQed1GFppgkRHL9kaELCbyksJtPX": "openbook",
        "675kPX9MHTjS2zt1qfr1NYHuzeLXfQM9H24wFSUt1Mp8": "raydium_amm",
        "CAMMCzo5YL8w4VFF8KVHrK22GGUsp5VTaW7grrKgrWqK": "raydium_clmm",
        "CPMMoo8L3F4NbTegBCKVNunggL7H1ZpdTHKxQB5qKP1C": "raydium_cpmm",
        "H8W3ctz92svYg6mkn1UtGfu2aQr2fnUFHM1RhScEtQDt": "cropper_whirlpool",
        "Eo7WjKq67rjJQSZxS6z3YkapzY3eMj6Xy8X5EQVn5UaB": "meteora_damm",
        "FLUXubRmkEi2q6K3Y9kBPg9248ggaZVsoSFhtJHSrm1X": "fluxbeam",
        "whirLbMiicVdio4qvUfM5KAg6Ct8VwpYzGff3uctyCc": "orca_whirlpool",
        "PERPHjGBqRHArX4DySjwM6UJHiR3sWAatqfdBS2qQJu": "jupiter_perps",
    }
    assert [leg["dex"] for leg in legs(decode(stem))] == [program_names[s["amm"]] for s in expected_swaps(stem)]


def test_token_2022_fee_hops_report_what_settled_not_what_was_planned() -> None:
    """GCeRpjvf's J5tzd1 mint charges a transfer fee. Jupiter's parser reports the CPMM output as
    6,428,459,882 (its own fee estimate); the signer's J5tzd1 account went 1,888 -> 2,539 while
    sending 6,428,459,230 to FluxBeam, so it really received 6,428,459,881. Every other figure
    must equal Jupiter's."""
    got = legs(decode(ARB_5HOP))
    want = expected_swaps(ARB_5HOP)
    assert len(got) == len(want) == 5
    for leg, swap in zip(got, want, strict=True):
        assert (leg["token_in"], leg["token_out"]) == (
            swap["inputMint"],
            swap["outputMint"],
        )
        assert leg["amount_in"] == int(swap["inputAmount"])
    assert [leg["amount_out"] for leg in got[:3]] == [int(s["outputAmount"]) for s in want[:3]]
    assert got[3]["amount_out"] == 6_428_459_881 == int(want[3]["outputAmount"]) - 1
    assert got[4]["amount_out"] == int(want[4]["outputAmount"])


def test_pools_are_the_pool_accounts_of_the_swap_instructions() -> None:
    pools = [leg["pool"] for leg in legs(decode(ARB_3HOP))]
    # OpenBook market, Raydium AMM id, Raydium CLMM pool state (accounts of the inner instructions).
    assert pools == [
        "8BnEgHoWFysVcuFFX7QztDmzuH8r5ZFvyP3sYwn1XTh6",
        "ZfvDXXUhZDzDVsapffUyXHj9ByCoPjP4thL6YXcZ9ix",
        "8EzbUfvcRT1Q6RL462ekGkgqbxsPmwC5FMLQZhSPMjJ3",
    ]


def test_sol_arbitrage_profit_matches_balance_deltas() -> None:
    result = decode(ARB_3HOP)
    assert result.kind == "arbitrage"
    assert result.start_token == WSOL_MINT
    assert result.gain_raw == 85_236
    assert (result.fee_lamports, result.jito_tip_lamports, result.rent_lamports) == (
        5_000,
        42_618,
        0,
    )
    assert result.net_profit_sol == pytest.approx(37_618e-9, abs=1e-12)


def test_usdc_arbitrage_values_gain_in_sol_and_reports_rent_apart() -> None:
    result = decode(ARB_5HOP)
    assert result.kind == "arbitrage"
    assert result.start_token == USDC
    assert result.gain_raw == 14_037
    assert result.fee_lamports == 5_189
    assert result.priority_fee_lamports == 189
    assert result.jito_tip_lamports == 7_500
    assert result.rent_lamports == 2_039_280
    # Valued at the route's own first hop: 4,439,613 USDC units bought 32,095,199 lamports.
    gain_sol = 14_037 * 32_095_199 / 4_439_613 / 1e9
    assert result.gain_sol == pytest.approx(gain_sol)
    assert result.net_profit_sol == pytest.approx(gain_sol - (5_189 + 7_500) / 1e9)


def test_multi_hop_swap_to_another_token_is_not_arbitrage() -> None:
    result = decode(NONARB)
    assert result.kind == "swap"
    assert result.start_token == WSOL_MINT
    assert legs(result)[-1]["token_out"] == USDC
    assert result.gain_raw == -500_000_000
    assert result.jito_tip_lamports == 400_000
    assert result.record is not None  # kept as a negative example


def test_json_encoded_arbitrage_without_envelope_matches_readme() -> None:
    result = decode_transaction(load(TX182))
    assert result.kind == "arbitrage"
    assert result.signature == (
        "3nzoqQFPAjTRjeoMNzV4hFo9s9znzGHa6Xt9huPN9qTGTM2hbXNppTS2TmhyRvxCCkszP9vhp2QGQPJ9kZjUx1Jb"
    )
    assert result.start_token == WSOL_MINT
    assert result.gain_raw == 75_136
    assert (result.fee_lamports, result.jito_tip_lamports) == (5_000, 22_624)
    assert result.net_profit_sol == pytest.approx(47_512e-9, abs=1e-12)
    assert [leg["dex"] for leg in legs(result)] == [
        "orca_whirlpool",
        "phoenix",
        "raydium_clmm",
        "raydium_clmm",
    ]
    route = [legs(result)[0]["token_in"]] + [leg["token_out"] for leg in legs(result)]
    assert route == [
        WSOL_MINT,
        "3NZ9JMVBmGAqocybic2c7LQCJScmgsAZ6vQqTDzcqmJh",
        USDC,
        "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB",
        WSOL_MINT,
    ]


@pytest.mark.parametrize("stem", [ARB_5HOP, ARB_3HOP, NONARB])
def test_records_satisfy_the_ingest_contract(stem: str) -> None:
    result = decode(stem)
    assert result.record is not None
    transaction = msgspec.convert(result.record, TransactionIn)
    raw = load(f"{stem}.getTransaction.jsonParsed.json")["result"]
    assert transaction.slot == raw["slot"]
    assert transaction.block_time == raw["blockTime"] * 1000
    assert transaction.signer == raw["transaction"]["message"]["accountKeys"][0]["pubkey"]
    assert transaction.fee_lamports + transaction.priority_fee_lamports == raw["meta"]["fee"]
    assert transaction.compute_units_consumed == raw["meta"]["computeUnitsConsumed"]
    assert all(leg.decimals_in is not None and leg.decimals_out is not None for leg in transaction.legs)


def test_bare_result_and_envelope_decode_the_same() -> None:
    envelope = load(f"{ARB_3HOP}.getTransaction.jsonParsed.json")
    assert decode_transaction(envelope) == decode_transaction(envelope["result"])


@pytest.mark.parametrize(
    ("name", "other_cost"),
    [
        (TX182, 5_279),
        (f"{ARB_3HOP}.getTransaction.jsonParsed.json", None),
        (f"{ARB_5HOP}.getTransaction.jsonParsed.json", None),
    ],
)
def test_the_stored_net_profit_is_the_signers_real_gain_less_fee_and_tip(name: str, other_cost: int | None) -> None:
    """tx182 paid 5,279 lamports to a third party on the way: its legs alone overstate the profit."""
    decoded = decode_transaction(load(name))
    assert decoded.record is not None and decoded.net_profit_sol is not None
    assert decoded.record.get("other_cost_lamports") == other_cost
    batch = decode_records([msgspec.json.encode(decoded.record)])
    assert batch.rejects == []
    stored = derive(batch.frame, source="solana")
    assert stored["net_profit_sol"][0] == pytest.approx(decoded.net_profit_sol, abs=1e-9)


@pytest.mark.parametrize("decimals", [0, 1, 8])
def test_legs_carry_the_decimals_the_token_balances_give_zero_included(decimals: int) -> None:
    """A mint of 0 decimals was stored as the default 6: its leg's price was off by 10^6."""
    transaction = load(TX182)
    mint = "3NZ9JMVBmGAqocybic2c7LQCJScmgsAZ6vQqTDzcqmJh"
    for side in ("preTokenBalances", "postTokenBalances"):
        for balance in transaction["meta"][side]:
            if balance["mint"] == mint:
                balance["uiTokenAmount"]["decimals"] = decimals
    decoded = legs(decode_transaction(transaction))
    assert (decoded[0]["decimals_out"], decoded[1]["decimals_in"]) == (decimals, decimals)
