"""What a transaction cost its signer and what it gained, from the balances the node reports.

Costs: the fee the node charged (`meta.fee`, base + priority), split into its base and priority
parts; Jito tips (lamports credited to the eight tip accounts in this transaction); and rent left
in accounts the transaction created, reported apart because it stays recoverable.
Gain: the signer's net change in the route's start token, summed over every token account the
signer owns (accounts created or closed in the transaction count 0 on the missing side). When the
start token is wrapped SOL the signer's native lamports count too, with the fee, tips and rent
added back, so that a route that unwraps into native SOL is measured on what it traded.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from arbitrage.errors import ValidationError
from arbitrage.model import LAMPORTS_PER_SOL, WSOL_MINT
from arbitrage.solana._base58 import b58decode
from arbitrage.solana._message import MessageView, TokenAccount, require
from arbitrage.solana._programs import (
    COMPUTE_BUDGET_PROGRAM,
    DEFAULT_INSTRUCTION_COMPUTE_UNIT_LIMIT,
    JITO_TIP_ACCOUNTS,
    LAMPORTS_PER_SIGNATURE,
    MAX_COMPUTE_UNIT_LIMIT,
)
from arbitrage.solana._swaps import Hop

_SET_COMPUTE_UNIT_LIMIT = 2
_SET_COMPUTE_UNIT_PRICE = 3


class Costs(NamedTuple):
    """Lamports the transaction spent besides trading."""

    fee: int
    base_fee: int
    priority_fee: int
    jito_tip: int
    rent: int
    compute_unit_limit: int | None


def costs(view: MessageView, meta: dict[str, Any], signature_count: int) -> Costs:
    """Fee split, tips and rent of one transaction.

    The priority fee is compute-unit price x limit / 1e6 (rounded up, as the runtime does) when a
    ComputeBudget instruction sets the price; the limit is the explicit one or the runtime default
    (200k per non-ComputeBudget instruction), at most 1.4M either way (the runtime clamps a larger
    request). Without a price instruction it is the part of the fee above the 5,000-lamport base
    per signature, and never more than that part.
    """
    fee = int(meta.get("fee") or 0)
    price: int | None = None
    limit: int | None = None
    other_instructions = 0
    for ix in view.outer:
        if view.program(ix) != COMPUTE_BUDGET_PROGRAM:
            other_instructions += 1
            continue
        data = b58decode(ix.get("data") or "")
        if data[:1] == b"\x02" and len(data) >= 5:
            limit = min(int.from_bytes(data[1:5], "little"), MAX_COMPUTE_UNIT_LIMIT)
        elif data[:1] == b"\x03" and len(data) >= 9:
            price = int.from_bytes(data[1:9], "little")
    if price is not None:
        effective_limit = (
            limit
            if limit is not None
            else min(
                other_instructions * DEFAULT_INSTRUCTION_COMPUTE_UNIT_LIMIT,
                MAX_COMPUTE_UNIT_LIMIT,
            )
        )
        priority = -(-price * effective_limit // 1_000_000)
    else:
        priority = fee
    priority = max(0, min(priority, fee - LAMPORTS_PER_SIGNATURE * signature_count))
    keys = view.keys
    pre = _lamports(meta, "preBalances", len(keys))
    post = _lamports(meta, "postBalances", len(keys))
    tip = 0
    rent = 0
    for i, (before, after) in enumerate(zip(pre, post, strict=True)):
        if after <= before:
            continue
        if keys[i] in JITO_TIP_ACCOUNTS:
            tip += after - before
        elif before == 0:
            rent += after
    return Costs(fee, fee - priority, priority, tip, rent, limit)


def _lamports(meta: dict[str, Any], side: str, keys: int) -> list[int]:
    """`meta[side]`, one integer balance per account key.

    Balances pair with keys by position: one short or over would move a tip onto the wrong account
    or drop it, silently.
    """
    balances = require(meta, side, f"meta.{side}")
    if type(balances) is not list:
        raise ValidationError(f"meta.{side}", f"expected a list, got {type(balances).__name__}")
    if len(balances) != keys:
        raise ValidationError(f"meta.{side}", f"{len(balances)} balances for the {keys} account keys")
    if set(map(type, balances)) != {int}:
        number, balance = next((n, b) for n, b in enumerate(balances) if type(b) is not int)
        raise ValidationError(f"meta.{side}[{number}]", f"expected an integer, got {type(balance).__name__}")
    return balances


def signer_gain(
    start_token: str,
    signer: str,
    tokens: dict[str, TokenAccount],
    meta: dict[str, Any],
    spent: Costs,
) -> int:
    """The signer's net change in `start_token`, raw units, before fee, tips and rent."""
    gain = sum(a.post - a.pre for a in tokens.values() if a.owner == signer and a.mint == start_token)
    if start_token == WSOL_MINT:
        native = int(meta["postBalances"][0]) - int(meta["preBalances"][0])
        gain += native + spent.fee + spent.jito_tip + spent.rent
    return gain


def value_in_sol(token: str, amount: int, hops: list[Hop]) -> float | None:
    """`amount` raw units of `token` in SOL, at the rates the route itself traded at.

    Walks the hops from `token` until one pays out wrapped SOL; None when the route never does.
    """
    if token == WSOL_MINT:
        return amount / LAMPORTS_PER_SOL
    rate = 1.0
    current = token
    for hop in hops:
        if hop.token_in != current or hop.amount_in == 0:
            continue
        rate *= hop.amount_out / hop.amount_in
        current = hop.token_out
        if current == WSOL_MINT:
            return amount * rate / LAMPORTS_PER_SOL
    return None
