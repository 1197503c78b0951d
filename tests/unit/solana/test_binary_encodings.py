"""`base64` / `base58` transactions decode exactly as their `json` form does.

The binary bodies are built from the real `json` fixtures by `wire.serialized`. That it
reproduces mainnet's bytes is checked independently: each transaction's first signature
(ed25519, by the fee payer, over the message bytes) must verify.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from arbitrage.solana import decode_block, decode_documents, decode_transaction
from arbitrage.solana._base58 import b58decode
from arbitrage.solana._wire import parse_transaction

from .conftest import load
from .wire import as_binary, serialized

SLOT = 285_000_037
TX182 = "block_285000037_tx182_arb_jitotip.getTransaction.json"


def test_the_serialized_fixture_messages_carry_their_real_signatures(block: dict[str, Any]) -> None:
    entries = [*block["transactions"], load(TX182)]
    assert {str(e.get("version")) for e in entries} == {"legacy", "0"}
    for entry in entries:
        _, message = serialized(entry)
        payer = entry["transaction"]["message"]["accountKeys"][0]
        signature = b58decode(entry["transaction"]["signatures"][0])
        Ed25519PublicKey.from_public_bytes(b58decode(payer)).verify(signature, message)
    _, message = serialized(entries[0])
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(b58decode(payer)).verify(signature, message)


def test_parsing_the_wire_gives_back_the_json_encoding(block: dict[str, Any]) -> None:
    for entry in block["transactions"]:
        wire, _ = serialized(entry)
        expected = copy.deepcopy(entry["transaction"])
        for ix in expected["message"]["instructions"]:
            ix.pop("stackHeight", None)  # the node's annotation, not part of the transaction
        assert parse_transaction(wire) == expected


@pytest.mark.parametrize("encoding", ["base64", "base58"])
def test_a_binary_block_decodes_exactly_as_the_json_block(block: dict[str, Any], encoding: str) -> None:
    binary = {**block, "transactions": [as_binary(e, encoding) for e in block["transactions"]]}
    expected = decode_block(block, slot=SLOT)
    assert decode_block(binary, slot=SLOT) == expected
    assert sum(r.kind == "arbitrage" for r in expected) == 1


def test_a_base64_get_transaction_in_its_envelope_decodes_as_the_json_one() -> None:
    raw = load(TX182)
    envelope = {"jsonrpc": "2.0", "id": 1, "result": as_binary(raw, "base64")}
    decoded = list(decode_documents(json.dumps(envelope).encode()))
    assert [d.kind for d in decoded] == ["arbitrage"]
    assert decoded[0] == decode_transaction(raw)


@pytest.mark.parametrize(
    ("transaction", "error"),
    [
        (["AQID", "base64+zstd"], "transaction: unknown encoding 'base64+zstd'"),
        (["not base64!", "base64"], "transaction: not valid base64"),
        (["0OIl", "base58"], "transaction: not valid base58"),
        ("AQID", "transaction: expected an object (json, jsonParsed) or [data, encoding]"),
    ],
)
def test_unreadable_binary_transactions_are_dead_letters_naming_the_problem(transaction: Any, error: str) -> None:
    result = decode_transaction({"transaction": transaction, "meta": {}})
    assert result.kind == "invalid"
    assert result.error is not None and result.error.startswith(error)


def test_a_truncated_or_padded_transaction_is_a_dead_letter_not_a_crash() -> None:
    raw = load(TX182)
    wire, _ = serialized(raw)
    for broken, error in ((wire[:-5], "truncated"), (wire + b"\0", "1 bytes left after the message")):
        result = decode_transaction({**raw, "transaction": [base64.b64encode(broken).decode(), "base64"]})
        assert result.kind == "invalid"
        assert result.error is not None and error in result.error
