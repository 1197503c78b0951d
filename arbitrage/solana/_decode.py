"""Raw `getTransaction` / `getBlock` results -> classified, costed records.

Every transaction comes out as one `SolanaDecoded`, whatever it is: a vote or an unrelated
transaction is skipped cheaply (no record), a swap, a failed attempt or an arbitrage carries a
`record` in the ingest contract (`arbitrage.model.TransactionIn`), and a malformed one is a dead
letter (`kind="invalid"`, `error` naming the field). Nothing here raises on bad input.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import msgspec

from arbitrage.errors import ValidationError
from arbitrage.model import LAMPORTS_PER_SOL, decimals_for
from arbitrage.solana._economics import costs, signer_gain, value_in_sol
from arbitrage.solana._message import MessageView, require, token_accounts
from arbitrage.solana._programs import SWAP_PROGRAMS, VOTE_PROGRAM
from arbitrage.solana._swaps import Hop, attempted_route, extract_hops
from arbitrage.solana._wire import encode_instruction_data, parse_transaction, wire_bytes

Kind = Literal["arbitrage", "swap", "failed", "skipped_vote", "unrelated", "invalid"]


class SolanaDecoded(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One decoded transaction: its verdict, its ingest record (if any) and its economics.

    `record` converts cleanly into `arbitrage.model.TransactionIn`; `fee_lamports` there is the
    base fee, so that fee + priority fee + tip is the total cost. Here `fee_lamports` is the whole
    fee the node charged (base + priority), as on the explorer. `gain_raw` is the signer's net
    change in `start_token`; `net_profit_sol` = `gain_sol` - fee - tip (rent apart, in
    `rent_lamports`), None when the start token cannot be valued in SOL along the route.
    """

    kind: Kind
    signature: str | None = None
    slot: int | None = None
    index: int | None = None
    record: dict[str, Any] | None = None
    start_token: str | None = None
    gain_raw: int | None = None
    gain_sol: float | None = None
    fee_lamports: int = 0
    priority_fee_lamports: int = 0
    jito_tip_lamports: int = 0
    rent_lamports: int = 0
    net_profit_sol: float | None = None
    error: str | None = None


def _unwrap(obj: Any) -> dict[str, Any]:
    """The `result` of a JSON-RPC envelope, or the object itself when it is a bare result."""
    if not isinstance(obj, dict):
        raise ValidationError("result", f"expected an object, got {type(obj).__name__}")
    if "jsonrpc" in obj or "error" in obj:
        error = obj.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else error
            raise ValidationError("error", f"the node answered with an error: {message}")
        result = obj.get("result")
        if not isinstance(result, dict):
            raise ValidationError("result", "null or not an object (transaction or block not found)")
        return result
    return obj


def _decode_entry(entry: Any, slot: int | None, block_time: int | None, index: int | None) -> SolanaDecoded:
    """Decode one transaction-with-meta; a malformed one becomes an `invalid` result."""
    try:
        return _classify(entry, slot, block_time, index)
    except ValidationError as exc:
        return SolanaDecoded(kind="invalid", slot=slot, index=index, error=f"{exc.field}: {exc.reason}")
    except KeyError as exc:
        return SolanaDecoded(
            kind="invalid",
            slot=slot,
            index=index,
            error=f"transaction: missing field {exc.args[0]!r}",
        )
    except IndexError:
        return SolanaDecoded(
            kind="invalid",
            slot=slot,
            index=index,
            error="transaction.message: an account index is out of range",
        )
    except (TypeError, ValueError, AttributeError) as exc:
        return SolanaDecoded(
            kind="invalid",
            slot=slot,
            index=index,
            error=f"transaction: malformed ({exc})",
        )


def _classify(entry: Any, slot: int | None, block_time: int | None, index: int | None) -> SolanaDecoded:
    if not isinstance(entry, dict):
        raise ValidationError("transaction", "expected an object")
    transaction = require(entry, "transaction", "transaction")
    binary = not isinstance(transaction, dict)
    if binary:
        transaction = parse_transaction(wire_bytes(transaction), raw_data=True)
    signatures = require(transaction, "signatures", "transaction.signatures")
    if not isinstance(signatures, list) or not signatures or not isinstance(signatures[0], str):
        raise ValidationError("transaction.signatures", "expected a non-empty list of strings")
    signature = signatures[0]
    meta = require(entry, "meta", "meta")
    view = MessageView(transaction, meta, sanitized=binary)
    keys = view.keys
    if VOTE_PROGRAM in keys and any(view.program(ix) == VOTE_PROGRAM for ix in view.outer):
        return SolanaDecoded(kind="skipped_vote", signature=signature, slot=slot, index=index)
    if SWAP_PROGRAMS.isdisjoint(keys):
        return SolanaDecoded(kind="unrelated", signature=signature, slot=slot, index=index)
    if binary:
        encode_instruction_data(view.outer)
    success = meta.get("err") is None
    tokens = token_accounts(keys, meta)
    hops = extract_hops(view, tokens)
    if not hops and not success:
        hops = attempted_route(view, tokens)
    if not hops and success:
        return SolanaDecoded(kind="unrelated", signature=signature, slot=slot, index=index)
    spent = costs(view, meta, len(signatures))
    if not hops:  # failed before any swap ran, through a program whose route cannot be read
        return SolanaDecoded(
            kind="failed",
            signature=signature,
            slot=slot,
            index=index,
            fee_lamports=spent.fee,
            priority_fee_lamports=spent.priority_fee,
            jito_tip_lamports=spent.jito_tip,
            rent_lamports=spent.rent,
            net_profit_sol=-(spent.fee + spent.jito_tip) / LAMPORTS_PER_SOL,
        )

    signer = keys[0]
    start_token = hops[0].token_in
    gain_raw = signer_gain(start_token, signer, tokens, meta, spent)
    gain_sol = value_in_sol(start_token, gain_raw, hops)
    circular = start_token == hops[-1].token_out
    kind: Kind
    if not success:
        kind = "failed"
    elif len(hops) >= 2 and circular and gain_raw > 0:
        kind = "arbitrage"
    else:
        kind = "swap"
    if block_time is None:
        raise ValidationError("blockTime", "missing; a record needs the block time")
    if slot is None:
        raise ValidationError("slot", "missing; a record needs the slot")
    decimals = {a.mint: a.decimals for a in tokens.values()}
    record: dict[str, Any] = {
        "signature": signature,
        "slot": slot,
        "block_time": block_time * 1000,
        "signer": signer,
        "success": success,
        "legs": [
            {
                "dex": h.dex,
                "pool": h.pool,
                "token_in": h.token_in,
                "token_out": h.token_out,
                "amount_in": h.amount_in,
                "amount_out": h.amount_out,
                # The balances' own decimals, 0 included; a mint without a balance entry: the known table's.
                "decimals_in": decimals[h.token_in] if h.token_in in decimals else decimals_for(h.token_in),
                "decimals_out": decimals[h.token_out] if h.token_out in decimals else decimals_for(h.token_out),
            }
            for h in hops
        ],
        "fee_lamports": spent.base_fee,
        "priority_fee_lamports": spent.priority_fee,
        "jito_tip_lamports": spent.jito_tip,
    }
    other = _other_cost_lamports(hops, gain_raw) if success and circular else 0
    if other:
        record["other_cost_lamports"] = other
    consumed = meta.get("computeUnitsConsumed")
    if consumed is not None:
        record["compute_units_consumed"] = consumed
    if spent.compute_unit_limit is not None:
        record["compute_unit_limit"] = spent.compute_unit_limit
    net = None if gain_sol is None else gain_sol - (spent.fee + spent.jito_tip) / LAMPORTS_PER_SOL
    return SolanaDecoded(
        kind=kind,
        signature=signature,
        slot=slot,
        index=index,
        record=record,
        start_token=start_token,
        gain_raw=gain_raw,
        gain_sol=gain_sol,
        fee_lamports=spent.fee,
        priority_fee_lamports=spent.priority_fee,
        jito_tip_lamports=spent.jito_tip,
        rent_lamports=spent.rent,
        net_profit_sol=net,
    )


def _other_cost_lamports(hops: list[Hop], gain_raw: int) -> int:
    """What the route's own amounts promised the signer but it did not receive, in lamports.

    The record's profit is derived from its legs; whatever left on the way (a router's
    platform fee, a transfer to a third party) is recorded as an other cost, so that the
    stored net profit is the signer's real gain less fee and tip, as computed here.
    """
    missing = hops[-1].amount_out - hops[0].amount_in - gain_raw
    if missing <= 0:
        return 0
    value = value_in_sol(hops[0].token_in, missing, hops)
    return 0 if value is None else round(value * LAMPORTS_PER_SOL)


def decode_transaction(obj: dict[str, Any], *, index: int | None = None) -> SolanaDecoded:
    """Decode a `getTransaction` result (`json`, `jsonParsed`, `base64`, `base58`), bare or in its envelope.

    Never raises on bad input: a malformed transaction returns `kind="invalid"` with `error`.
    """
    try:
        result = _unwrap(obj)
    except ValidationError as exc:
        return SolanaDecoded(kind="invalid", index=index, error=f"{exc.field}: {exc.reason}")
    return _decode_entry(result, result.get("slot"), result.get("blockTime"), index)


def decode_block(obj: dict[str, Any], *, slot: int | None = None) -> list[SolanaDecoded]:
    """Decode every transaction of a `getBlock` result, each with its in-block index.

    `getBlock` results do not state their own slot: pass `slot` (the one you requested). Without
    it the result's `slot` key is used if a client added one, else `parentSlot + 1`, which is
    wrong when the slot before this block was skipped.
    """
    try:
        result = _unwrap(obj)
        transactions = require(result, "transactions", "transactions")
        if not isinstance(transactions, list):
            raise ValidationError("transactions", "expected a list")
    except ValidationError as exc:
        return [SolanaDecoded(kind="invalid", slot=slot, error=f"{exc.field}: {exc.reason}")]
    if slot is None:
        slot = result.get("slot")
    if slot is None and isinstance(result.get("parentSlot"), int):
        slot = result["parentSlot"] + 1
    block_time = result.get("blockTime")
    return [_decode_entry(entry, slot, block_time, i) for i, entry in enumerate(transactions)]


def _decode_document(doc: Any) -> Iterator[SolanaDecoded]:
    if isinstance(doc, list):
        for item in doc:
            yield from _decode_document(item)
        return
    try:
        result = _unwrap(doc)
    except ValidationError as exc:
        yield SolanaDecoded(kind="invalid", error=f"{exc.field}: {exc.reason}")
        return
    if "transactions" in result:
        yield from decode_block(result)
    else:
        yield _decode_entry(result, result.get("slot"), result.get("blockTime"), None)


def decode_documents(raw: bytes) -> Iterator[SolanaDecoded]:
    """Decode raw bytes holding one JSON document (a result, an envelope or an array of them) or NDJSON.

    For the HTTP endpoint and the CLI: each `getTransaction` result yields one item, each
    `getBlock` result one item per transaction; a line that is not JSON yields an `invalid` item
    naming its line number.
    """
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                doc = msgspec.json.decode(line)
            except msgspec.DecodeError as exc:
                yield SolanaDecoded(kind="invalid", error=f"line {number}: not JSON ({exc})")
                continue
            yield from _decode_document(doc)
        return
    yield from _decode_document(doc)
