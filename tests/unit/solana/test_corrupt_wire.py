"""Truncated, corrupt or inconsistent binary transactions are dead letters naming the field, never wrong data.

Every input is a real fixture serialized by `wire.serialized` and then cut, or edited in its
`json` form and serialized again, so each case differs from mainnet bytes in one known way.
The consistency rules are the ones Solana's own sanitize applies before a transaction can land.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from arbitrage.errors import ValidationError
from arbitrage.solana import decode_block, decode_transaction
from arbitrage.solana._wire import parse_transaction

from .conftest import load
from .wire import as_binary, field_paths, serialized

SLOT = 285_000_037
TX182 = "block_285000037_tx182_arb_jitotip.getTransaction.json"
STATIC_KEYS = 19
"""tx182 (v0) has 19 keys of its own and 27 from lookup tables: indexes 0..45."""
ALL_KEYS = 46


def _tx182() -> dict[str, Any]:
    return copy.deepcopy(load(TX182))


def _legacy(block: dict[str, Any]) -> dict[str, Any]:
    """Block index 1: a legacy transaction with two signers."""
    entry = block["transactions"][1]
    assert entry["version"] == "legacy" and len(entry["transaction"]["signatures"]) == 2
    return copy.deepcopy(entry)


def _base64(entry: dict[str, Any], wire: bytes | None = None) -> dict[str, Any]:
    wire = serialized(entry)[0] if wire is None else wire
    return {**entry, "transaction": [base64.b64encode(wire).decode(), "base64"]}


@pytest.mark.parametrize("which", ["v0", "legacy"])
def test_every_truncation_is_refused_naming_the_field_it_cut_and_the_byte(block: dict[str, Any], which: str) -> None:
    entry = _tx182() if which == "v0" else _legacy(block)
    wire, _ = serialized(entry)
    paths = field_paths(entry)
    for cut in range(len(wire)):
        with pytest.raises(ValidationError) as caught:
            parse_transaction(wire[:cut])
        field, reason = caught.value.field, caught.value.reason
        assert field != "transaction" and (paths[cut] == field or paths[cut].startswith(field + ".")), (cut, field)
        assert reason.startswith("truncated") and f"ends at byte {cut}" in reason, (cut, reason)


def _header(entry: dict[str, Any], **changes: int) -> dict[str, Any]:
    entry["transaction"]["message"]["header"].update(changes)
    return entry


@pytest.mark.parametrize(
    ("which", "changes", "error"),
    [
        ("v0", {"numRequiredSignatures": 0}, "1 signatures for 0 required signers"),
        ("v0", {"numRequiredSignatures": 2}, "1 signatures for 2 required signers"),
        ("legacy", {"numRequiredSignatures": 1}, "2 signatures for 1 required signers"),
        ("v0", {"numReadonlySignedAccounts": 1}, "1 of 1 signers read-only: the fee payer would be read-only"),
        (
            "v0",
            {"numReadonlyUnsignedAccounts": STATIC_KEYS},
            "1 signers and 19 read-only unsigned accounts: more signed and read-only accounts than the 19 keys",
        ),
    ],
)
def test_a_header_that_contradicts_the_signatures_or_keys_is_refused(
    block: dict[str, Any], which: str, changes: dict[str, int], error: str
) -> None:
    """Signers are the first numRequiredSignatures keys: a wrong count would name the wrong signers."""
    entry = _header(_tx182() if which == "v0" else _legacy(block), **changes)
    result = decode_transaction(_base64(entry))
    assert result.kind == "invalid"
    assert result.error == f"transaction.message.header: {error}"


def test_a_transaction_without_signatures_is_refused_as_such() -> None:
    entry = _header(_tx182(), numRequiredSignatures=0)
    entry["transaction"]["signatures"] = []
    with pytest.raises(ValidationError) as caught:
        parse_transaction(serialized(entry)[0])
    assert (caught.value.field, caught.value.reason) == (
        "transaction.signatures",
        "none; a transaction is signed by at least its fee payer",
    )


@pytest.mark.parametrize(
    ("part", "index", "error"),
    [
        ("programIdIndex", 0, "index 0 is the fee payer"),
        ("programIdIndex", ALL_KEYS, "index 46 is past the 46 keys (19 own, 27 from lookup tables)"),
        ("programIdIndex", 255, "index 255 is past the 46 keys (19 own, 27 from lookup tables)"),
        ("accounts[4]", ALL_KEYS, "index 46 is past the 46 keys (19 own, 27 from lookup tables)"),
        ("accounts[4]", 255, "index 255 is past the 46 keys (19 own, 27 from lookup tables)"),
    ],
)
@pytest.mark.parametrize("encoding", ["json", "base64"])
def test_an_index_past_the_keys_or_a_program_at_the_fee_payer_is_refused(
    encoding: str, part: str, index: int, error: str
) -> None:
    """The decoder never reads instruction 3's fifth account, so a bad index there went unnoticed before."""
    entry = _tx182()
    ix = entry["transaction"]["message"]["instructions"][3]
    if part == "accounts[4]":
        ix["accounts"][4] = index
    else:
        ix["programIdIndex"] = index
    result = decode_transaction(entry if encoding == "json" else _base64(entry))
    assert result.kind == "invalid"
    assert result.error == f"transaction.message.instructions[3].{part}: {error}"


def test_the_last_looked_up_key_is_a_valid_program_or_account_index() -> None:
    """Solana's sanitize lets both point into the lookup tables' keys, up to the last one."""
    entry = _tx182()
    ix = entry["transaction"]["message"]["instructions"][3]
    ix["accounts"][4] = ix["programIdIndex"] = ALL_KEYS - 1
    parsed = parse_transaction(serialized(entry)[0])["message"]["instructions"][3]
    assert (parsed["programIdIndex"], parsed["accounts"]) == (ALL_KEYS - 1, ix["accounts"])


@pytest.mark.parametrize("encoding", ["json", "base64"])
@pytest.mark.parametrize("side", ["writable", "readonly"])
def test_loaded_addresses_that_do_not_match_the_lookup_tables_are_refused(encoding: str, side: str) -> None:
    """One address short shifts every later looked-up key onto the wrong account."""
    entry = _tx182()
    entry["meta"]["loadedAddresses"][side].pop()
    wanted = {"writable": 19, "readonly": 8}[side]
    result = decode_transaction(entry if encoding == "json" else _base64(entry))
    assert result.kind == "invalid"
    assert result.error == (
        f"meta.loadedAddresses.{side}: {wanted - 1} addresses for the {wanted} {side} indexes of the lookup tables"
    )


def test_corrupt_transactions_in_a_binary_block_are_dead_letters_and_the_rest_decode(block: dict[str, Any]) -> None:
    expected = decode_block(block, slot=SLOT)
    binary = {**block, "transactions": [as_binary(e, "base64") for e in block["transactions"]]}
    entries = binary["transactions"]
    entries[5] = _base64(block["transactions"][5], serialized(block["transactions"][5])[0][:-7])
    entries[100] = _base64(block["transactions"][100], serialized(block["transactions"][100])[0] + b"\0\0")
    entries[182] = _base64(_header(copy.deepcopy(block["transactions"][182]), numRequiredSignatures=0))
    results = decode_block(binary, slot=SLOT)
    bad = {5: "transaction.message.instructions", 100: "transaction: 2 bytes left", 182: "transaction.message.header"}
    for index, error in bad.items():
        assert results[index].kind == "invalid" and results[index].index == index
        assert results[index].error is not None and results[index].error.startswith(error)
    assert [r for i, r in enumerate(results) if i not in bad] == [r for i, r in enumerate(expected) if i not in bad]
