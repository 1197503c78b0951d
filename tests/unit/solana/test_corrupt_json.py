"""Corrupt indexes in `json` and `jsonParsed` transactions are dead letters naming the field, never a crash or a wrong record.

Every input is a real fixture with one index broken. Python reads a negative index from the end of
a list and `true` as 1, so before these checks most such transactions decoded into a record built
from the wrong accounts, and an index past the end failed without naming its field.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from arbitrage.solana import decode_block, decode_transaction

from .conftest import load

SLOT = 285_000_037
TX182 = "block_285000037_tx182_arb_jitotip.getTransaction.json"
PARSED = "jup_arb_3hop_sol_jitotip_2BppD7Zq.getTransaction.jsonParsed.json"
KEYS = "46 keys (19 own, 27 from lookup tables)"
"""tx182 (v0): 19 keys of its own and 27 from lookup tables; 4 outer instructions, inner groups for 2 and 3."""

BAD_INDEXES = [
    (46, f"index 46 is past the {KEYS}"),
    (-1, "index -1 is negative"),
    ("5", "expected an integer index, got str"),
    (5.0, "expected an integer index, got float"),
    (True, "expected an integer index, got bool"),
]


def _tx182() -> dict[str, Any]:
    return copy.deepcopy(load(TX182))


def _parsed() -> dict[str, Any]:
    """The `jsonParsed` 3-hop arbitrage, without its envelope: 40 keys, 4 outer instructions."""
    return copy.deepcopy(load(PARSED)["result"])


def _error(entry: dict[str, Any]) -> str | None:
    result = decode_transaction(entry)
    assert result.kind == "invalid", result
    return result.error


@pytest.mark.parametrize(("value", "reason"), BAD_INDEXES)
@pytest.mark.parametrize("field", ["programIdIndex", "accounts[1]"])
@pytest.mark.parametrize(
    "where",
    ["transaction.message.instructions[2]", "meta.innerInstructions[0].instructions[1]"],
)
def test_a_bad_program_or_account_index_is_a_dead_letter_naming_it(
    where: str, field: str, value: Any, reason: str
) -> None:
    entry = _tx182()
    if where.startswith("meta"):
        ix = entry["meta"]["innerInstructions"][0]["instructions"][1]
    else:
        ix = entry["transaction"]["message"]["instructions"][2]
    if field == "programIdIndex":
        ix["programIdIndex"] = value
    else:
        ix["accounts"][1] = value
    assert _error(entry) == f"{where}.{field}: {reason}"


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("accounts", "abc", "accounts: expected a list of indexes, got str"),
        ("accounts", 5, "accounts: expected a list of indexes, got int"),
        ("programIdIndex", None, "programIdIndex: missing"),
        ("programIdIndex", 0, "programIdIndex: index 0 is the fee payer"),
    ],
)
def test_a_malformed_instruction_is_a_dead_letter_naming_the_field(field: str, value: Any, error: str) -> None:
    entry = _tx182()
    entry["transaction"]["message"]["instructions"][2][field] = value
    assert _error(entry) == f"transaction.message.instructions[2].{error}"


def test_the_last_looked_up_key_is_a_valid_index_and_the_next_one_is_not() -> None:
    """Instruction 3's fifth account is never read by the decoder: only the check can notice it."""
    entry = _tx182()
    entry["transaction"]["message"]["instructions"][3]["accounts"][4] = 45
    assert decode_transaction(entry).kind == "arbitrage"
    entry["transaction"]["message"]["instructions"][3]["accounts"][4] = 46
    assert _error(entry) == f"transaction.message.instructions[3].accounts[4]: index 46 is past the {KEYS}"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (4, "index 4 is past the 4 outer instructions"),
        (-1, "index -1 is negative"),
        ("2", "expected an integer index, got str"),
        (True, "expected an integer index, got bool"),
        (None, "missing"),
    ],
)
@pytest.mark.parametrize("encoding", ["json", "jsonParsed"])
def test_an_inner_instruction_group_for_no_outer_instruction_is_a_dead_letter(
    encoding: str, value: Any, reason: str
) -> None:
    """Such a group's swaps would have been dropped from the route."""
    entry = _tx182() if encoding == "json" else _parsed()
    entry["meta"]["innerInstructions"][0]["index"] = value
    assert _error(entry) == f"meta.innerInstructions[0].index: {reason}"


@pytest.mark.parametrize("encoding", ["json", "jsonParsed"])
def test_two_inner_instruction_groups_for_one_outer_instruction_are_a_dead_letter(encoding: str) -> None:
    entry = _tx182() if encoding == "json" else _parsed()
    groups = entry["meta"]["innerInstructions"]
    groups.append(copy.deepcopy(groups[0]))
    index = groups[0]["index"]
    assert _error(entry) == (
        f"meta.innerInstructions[{len(groups) - 1}].index: a second group for outer instruction {index}"
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("keys", "index {keys} is past the {keys} account keys"),
        (-1, "index -1 is negative"),
        ("5", "expected an integer index, got str"),
        (3.0, "expected an integer index, got float"),
        (True, "expected an integer index, got bool"),
        (None, "missing"),
    ],
)
@pytest.mark.parametrize("side", ["preTokenBalances", "postTokenBalances"])
@pytest.mark.parametrize("encoding", ["json", "jsonParsed"])
def test_a_bad_token_balance_account_index_is_a_dead_letter(encoding: str, side: str, value: Any, reason: str) -> None:
    entry = _tx182() if encoding == "json" else _parsed()
    keys = 46 if encoding == "json" else 40
    entry["meta"][side][0]["accountIndex"] = keys if value == "keys" else value
    assert _error(entry) == f"meta.{side}[0].accountIndex: {reason.format(keys=keys)}"


@pytest.mark.parametrize("side", ["preTokenBalances", "postTokenBalances"])
@pytest.mark.parametrize("encoding", ["json", "jsonParsed"])
def test_two_token_balances_for_one_account_are_a_dead_letter(encoding: str, side: str) -> None:
    """The second would have hidden the first."""
    entry = _tx182() if encoding == "json" else _parsed()
    balances = entry["meta"][side]
    balances[1]["accountIndex"] = balances[0]["accountIndex"]
    assert _error(entry) == f"meta.{side}[1].accountIndex: a second balance for account {balances[0]['accountIndex']}"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda b: b.pop(), "{side}: {short} balances for the {keys} account keys"),
        (lambda b: b.append(0), "{side}: {over} balances for the {keys} account keys"),
        (lambda b: b.__setitem__(3, "1"), "{side}[3]: expected an integer, got str"),
    ],
    ids=["one-short", "one-over", "a-string"],
)
@pytest.mark.parametrize("side", ["preBalances", "postBalances"])
@pytest.mark.parametrize("encoding", ["json", "jsonParsed"])
def test_lamport_balances_that_do_not_pair_with_the_keys_are_a_dead_letter(
    encoding: str, side: str, change: Any, error: str
) -> None:
    """Balances pair with keys by position: one short or over moves a tip onto another account or drops it."""
    entry = _tx182() if encoding == "json" else _parsed()
    keys = 46 if encoding == "json" else 40
    change(entry["meta"][side])
    assert _error(entry) == "meta." + error.format(side=side, short=keys - 1, over=keys + 1, keys=keys)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, "transaction.message.header: 1 signatures for 0 required signers"),
        (2, "transaction.message.header: 1 signatures for 2 required signers"),
        (-1, "transaction.message.header.numRequiredSignatures: expected a count, got -1"),
        ("1", "transaction.message.header.numRequiredSignatures: expected a count, got '1'"),
        (True, "transaction.message.header.numRequiredSignatures: expected a count, got True"),
    ],
)
def test_a_json_header_that_contradicts_the_signatures_is_a_dead_letter(value: Any, error: str) -> None:
    """Signers are the first numRequiredSignatures keys: a wrong count names the wrong signers."""
    entry = _tx182()
    entry["transaction"]["message"]["header"]["numRequiredSignatures"] = value
    assert _error(entry) == error


def test_loaded_addresses_or_lookup_indexes_that_are_not_lists_are_a_dead_letter() -> None:
    """A string of the right length would have been split into one-character keys."""
    entry = _tx182()
    entry["meta"]["loadedAddresses"]["writable"] = "x" * 19
    assert _error(entry) == "meta.loadedAddresses.writable: expected a list, got str"
    entry = _tx182()
    entry["transaction"]["message"]["addressTableLookups"][0]["readonlyIndexes"] = 3
    assert _error(entry) == "transaction.message.addressTableLookups[0].readonlyIndexes: expected a list, got int"


def test_corrupt_transactions_in_a_json_block_are_dead_letters_and_the_rest_decode(block: dict[str, Any]) -> None:
    expected = decode_block(block, slot=SLOT)
    broken = copy.deepcopy(block)
    entries = broken["transactions"]
    entries[0]["transaction"]["message"]["instructions"][0]["programIdIndex"] = -1  # a vote
    entries[47]["meta"]["postTokenBalances"][0]["accountIndex"] = True  # a swap
    entries[182]["meta"]["innerInstructions"][0]["instructions"][1]["accounts"][0] = -1  # the arbitrage
    results = decode_block(broken, slot=SLOT)
    bad = {
        0: "transaction.message.instructions[0].programIdIndex: index -1 is negative",
        47: "meta.postTokenBalances[0].accountIndex: expected an integer index, got bool",
        182: "meta.innerInstructions[0].instructions[1].accounts[0]: index -1 is negative",
    }
    assert {i: (r.kind, r.index, r.error) for i, r in enumerate(results) if i in bad} == {
        i: ("invalid", i, error) for i, error in bad.items()
    }
    assert [r for i, r in enumerate(results) if i not in bad] == [r for i, r in enumerate(expected) if i not in bad]


@pytest.mark.parametrize("side", ["preBalances", "postBalances"])
def test_missing_lamport_balances_are_a_dead_letter_not_a_record_without_its_tip(side: str) -> None:
    """GCeRpjvf starts in USDC, so nothing else reads the lamports: it was an arbitrage with no tip and no rent."""
    entry = copy.deepcopy(load("jup_arb_5hop_usdc_jitotip_GCeRpjvf.getTransaction.jsonParsed.json")["result"])
    del entry["meta"][side]
    assert _error(entry) == f"meta.{side}: missing"


@pytest.mark.parametrize(
    ("encoding", "field", "value", "error"),
    [
        ("json", "transaction.message.instructions", "x", "transaction.message.instructions: expected a list, got str"),
        ("json", "transaction.message.instructions.1", "x", "transaction.message.instructions[1]: expected an object"),
        ("json", "transaction.message.header", "x", "transaction.message.header: expected an object"),
        ("json", "meta.innerInstructions", "x", "meta.innerInstructions: expected a list, got str"),
        ("json", "meta.innerInstructions.0", "x", "meta.innerInstructions[0]: expected an object"),
        (
            "json",
            "meta.innerInstructions.0.instructions",
            {"a": 1},
            "meta.innerInstructions[0].instructions: expected a list, got dict",
        ),
        ("json", "meta.preTokenBalances", "x", "meta.preTokenBalances: expected a list, got str"),
        ("json", "meta.preTokenBalances.0", "x", "meta.preTokenBalances[0]: expected an object"),
        ("json", "meta.preBalances", "x", "meta.preBalances: expected a list, got str"),
        (
            "jsonParsed",
            "transaction.message.instructions",
            "x",
            "transaction.message.instructions: expected a list of objects",
        ),
        (
            "jsonParsed",
            "transaction.message.instructions.1",
            5,
            "transaction.message.instructions: expected a list of objects",
        ),
        (
            "jsonParsed",
            "meta.innerInstructions.0.instructions",
            "x",
            "meta.innerInstructions[0].instructions: expected a list, got str",
        ),
    ],
)
def test_a_list_or_object_of_the_wrong_type_is_a_dead_letter_naming_it(
    encoding: str, field: str, value: Any, error: str
) -> None:
    """These used to fail as `transaction: malformed (...)`, a Python error message naming no field."""
    entry = _tx182() if encoding == "json" else _parsed()
    *parents, last = field.split(".")
    target: Any = entry
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    target[int(last) if last.isdigit() else last] = value
    assert _error(entry) == error
