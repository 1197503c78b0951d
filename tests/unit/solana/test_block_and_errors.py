"""The partial block 285000037: which transactions are arbitrage, swaps, failures, votes; and dead letters."""

from __future__ import annotations

import copy
import json
from typing import Any

import msgspec
import pytest

from arbitrage.model import TransactionIn
from arbitrage.solana import decode_block, decode_documents, decode_transaction

from .conftest import load

SLOT = 285_000_037
HIHU = "HiHULk2EEF6kGfMar19QywmaTJLUr3LA1em8DyW1pump"


def test_block_index_182_is_the_only_arbitrage_in_the_window(block: Any) -> None:
    results = decode_block(block, slot=SLOT)
    assert len(results) == 192
    assert [r.index for r in results] == list(range(192))
    assert [r.index for r in results if r.kind == "arbitrage"] == [182]
    arbitrage = results[182]
    assert arbitrage.gain_raw == 75_136
    assert arbitrage.jito_tip_lamports == 22_624


def test_votes_are_skipped_without_a_record(block: Any) -> None:
    results = decode_block(block, slot=SLOT)
    votes = [
        i
        for i, entry in enumerate(block["transactions"])
        if "Vote111111111111111111111111111111111111111" in entry["transaction"]["message"]["accountKeys"]
    ]
    assert votes
    assert [r.index for r in results if r.kind == "skipped_vote"] == votes
    assert all(results[i].record is None for i in votes)


def test_failed_transactions_are_kept_as_failed(block: Any) -> None:
    results = decode_block(block, slot=SLOT)
    for index in (13, 21, 31, 131):
        assert block["transactions"][index]["meta"]["err"] is not None
        assert results[index].kind == "failed"
    # 131 got partway through a Jupiter route before failing: its attempted hops are recorded.
    record = results[131].record
    assert record is not None
    assert record["success"] is False
    assert [leg["dex"] for leg in record["legs"]] == ["orca_whirlpool", "raydium_amm"]


def test_sandwich_shaped_trades_are_swaps_in_the_right_direction(block: Any) -> None:
    results = decode_block(block, slot=SLOT)
    buys = [47, 54, 57, 64, 69, 71, 75, 84]
    for index in buys:
        assert results[index].kind == "swap"
        assert results[index].record is not None
        assert results[index].record["legs"][0]["token_out"] == HIHU
    assert results[122].record is not None
    assert results[122].record["legs"][0]["token_in"] == HIHU


def test_every_block_record_satisfies_the_ingest_contract(block: Any) -> None:
    results = decode_block(block, slot=SLOT)
    records = [r.record for r in results if r.record is not None]
    assert len(records) >= 40
    for record in records:
        transaction = msgspec.convert(record, TransactionIn)
        assert transaction.slot == SLOT
        assert transaction.block_time == block["blockTime"] * 1000


def test_tip_only_and_unrelated_transactions_carry_no_record(block: Any) -> None:
    results = decode_block(block, slot=SLOT)
    for index in (46, 53, 60, 98, 113):
        assert results[index].kind == "unrelated"
        assert results[index].record is None


def test_block_slot_defaults_to_parent_plus_one(block: Any) -> None:
    assert decode_block(block)[182].slot == block["parentSlot"] + 1


def test_malformed_transaction_is_a_dead_letter_naming_the_field(block: Any) -> None:
    broken = copy.deepcopy(block)
    del broken["transactions"][182]["meta"]
    broken["transactions"][5] = {
        "transaction": {"signatures": ["x"], "message": {}},
        "meta": {},
    }
    broken["transactions"][6] = "not an object"
    results = decode_block(broken, slot=SLOT)
    assert len(results) == 192
    assert results[182].kind == "invalid"
    assert results[182].error is not None and results[182].error.startswith("meta")
    assert results[5].kind == "invalid"
    assert results[5].error is not None and "transaction.message.accountKeys" in results[5].error
    assert results[6].kind == "invalid"
    assert results[0].kind != "invalid"


def test_out_of_range_account_index_is_a_dead_letter_not_a_crash() -> None:
    raw = load("block_285000037_tx182_arb_jitotip.getTransaction.json")
    raw["transaction"]["message"]["instructions"][2]["programIdIndex"] = 10_000
    result = decode_transaction(raw)
    assert result.kind == "invalid"
    assert result.error == (
        "transaction.message.instructions[2].programIdIndex: index 10000 is past the 46 keys (19 own, 27 from lookup tables)"
    )


def test_rpc_error_envelope_is_a_dead_letter() -> None:
    result = decode_transaction(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "error": {"code": -32009, "message": "slot skipped"},
        }
    )
    assert result.kind == "invalid"
    assert result.error == "error: the node answered with an error: slot skipped"
    assert decode_transaction({"jsonrpc": "2.0", "id": 1, "result": None}).kind == "invalid"


def test_raw_bytes_accept_a_document_an_array_and_ndjson(block: Any) -> None:
    tx182 = load("block_285000037_tx182_arb_jitotip.getTransaction.json")
    single = list(decode_documents(json.dumps(tx182).encode()))
    assert [r.kind for r in single] == ["arbitrage"]
    array = list(decode_documents(json.dumps([tx182, {"jsonrpc": "2.0", "result": tx182, "id": 1}]).encode()))
    assert [r.kind for r in array] == ["arbitrage", "arbitrage"]
    ndjson = json.dumps(tx182).encode() + b"\n{not json\n" + json.dumps({**block, "slot": SLOT}).encode() + b"\n"
    results = list(decode_documents(ndjson))
    assert len(results) == 1 + 1 + 192
    assert results[1].kind == "invalid" and results[1].error is not None and results[1].error.startswith("line 2")
    assert results[2 + 182].kind == "arbitrage"


@pytest.mark.parametrize(("index", "priority"), [(128, 140_000), (132, 28_000)])
def test_a_compute_unit_limit_above_the_maximum_is_clamped_as_the_runtime_does(
    block: Any, index: int, priority: int
) -> None:
    """Both ask for 6M units; the runtime charges the price on 1.4M, and the 5,000-lamport base stays base."""
    result = decode_block(block, slot=SLOT)[index]
    assert result.record is not None
    fee = block["transactions"][index]["meta"]["fee"]
    assert (result.record["fee_lamports"], result.record["priority_fee_lamports"]) == (5_000, priority)
    assert fee == 5_000 + priority
    assert result.record["compute_unit_limit"] == 1_400_000


def test_a_failed_transaction_whose_route_cannot_be_read_still_reports_its_costs(block: Any) -> None:
    result = decode_block(block, slot=SLOT)[21]
    meta = block["transactions"][21]["meta"]
    assert meta["err"] is not None
    assert (result.kind, result.record) == ("failed", None)
    assert result.fee_lamports == meta["fee"] == 1_005_001
    assert result.priority_fee_lamports == meta["fee"] - 5_000
    assert result.net_profit_sol == pytest.approx(-meta["fee"] / 1e9)
