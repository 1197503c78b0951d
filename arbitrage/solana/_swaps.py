"""Swaps (hops) of one transaction, in execution order, from its outer and inner instructions.

Each swap instruction of a known DEX opens a segment that collects the SPL-token transfers made
under it (by stack height when the node reports it, else until the next swap or router call).
A hop's mints and amounts come from Jupiter's `SwapEvent` when the hop was routed by Jupiter v6
(the event is Jupiter's own record of the hop), else from the token flows of the trading side
in the segment. The trading side is the token-account owner that signed the transaction, or else
the owner that recurs across hops (the route's wallet), since a pool's vault owner appears in its
own hop only.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple

from arbitrage.solana._base58 import b58decode, b58encode
from arbitrage.solana._message import MessageView, TokenAccount
from arbitrage.solana._programs import (
    DEX_PROGRAMS,
    JUPITER_V6,
    TOKEN_PROGRAMS,
    WHIRLPOOL_PROGRAMS,
    WHIRLPOOL_V2_MIN_ACCOUNTS,
    WHIRLPOOL_V2_POOL_INDEX,
)

# Anchor event-CPI tag followed by sha256("event:SwapEvent")[:8]; payload is
# amm (32) | input_mint (32) | input_amount (u64) | output_mint (32) | output_amount (u64).
_SWAP_EVENT_HEADER = bytes.fromhex("e445a52e51cb9a1d40c6cde8260871e2")
_SWAP_EVENT_SIZE = 16 + 32 + 32 + 8 + 32 + 8
# The base58 text of every 128-byte SwapEvent starts with these characters; a cheap pre-filter.
_SWAP_EVENT_PREFIX = "QMqFu4fYGGeUEysF"
_TRANSFER = 3
_TRANSFER_CHECKED = 12
# Jupiter v6 route instructions: discriminator -> (source mint, or None to read it from the
# source token account, source token account, destination mint) account positions.
_JUPITER_ROUTES: dict[bytes, tuple[int | None, int, int]] = {
    bytes.fromhex("e517cb977ae3ad2a"): (None, 2, 5),  # route
    bytes.fromhex("c1209b3341d69c81"): (7, 3, 8),  # shared_accounts_route
    bytes.fromhex("d033ef977b2bed5c"): (None, 2, 5),  # exact_out_route
    bytes.fromhex("b0d169a89a7d453e"): (7, 3, 8),  # shared_accounts_exact_out_route
}


class Hop(NamedTuple):
    """One swap: which DEX and pool, and the raw amounts that went in and came out."""

    dex: str
    pool: str
    token_in: str
    token_out: str
    amount_in: int
    amount_out: int


class _Transfer(NamedTuple):
    source: str
    destination: str
    amount: int
    mint: str | None


class _SwapEvent(NamedTuple):
    amm: str
    input_mint: str
    input_amount: int
    output_mint: str
    output_amount: int


class _Segment:
    """A swap instruction and the token transfers made under it."""

    __slots__ = ("dex", "event", "height", "pool", "program", "transfers")

    def __init__(
        self,
        program: str,
        dex: str,
        pool: str,
        height: int | None,
        event: _SwapEvent | None,
    ) -> None:
        self.program = program
        self.dex = dex
        self.pool = pool
        self.height = height
        self.transfers: list[_Transfer] = []
        self.event = event


def _transfer(view: MessageView, ix: dict[str, Any]) -> _Transfer | None:
    """A token transfer instruction as (source, destination, amount, mint if stated), else None."""
    parsed = ix.get("parsed")
    if parsed is not None:
        kind = parsed.get("type")
        info = parsed.get("info") or {}
        if kind == "transfer":
            return _Transfer(info["source"], info["destination"], int(info["amount"]), None)
        if kind == "transferChecked":
            return _Transfer(
                info["source"],
                info["destination"],
                int(info["tokenAmount"]["amount"]),
                info["mint"],
            )
        return None
    text = ix.get("data") or ""
    if not 2 <= len(text) <= 16:  # transfer data is 9-10 bytes; longer payloads are other instructions
        return None
    data = b58decode(text)
    if data[0] == _TRANSFER and len(data) >= 9:
        accounts = view.accounts(ix)
        return _Transfer(accounts[0], accounts[1], int.from_bytes(data[1:9], "little"), None)
    if data[0] == _TRANSFER_CHECKED and len(data) >= 10:
        accounts = view.accounts(ix)
        return _Transfer(accounts[0], accounts[2], int.from_bytes(data[1:9], "little"), accounts[1])
    return None


def _swap_event(text: str) -> _SwapEvent | None:
    """Decode a Jupiter v6 SwapEvent from instruction data, or None when it is another event."""
    data = b58decode(text)
    if len(data) < _SWAP_EVENT_SIZE or data[:16] != _SWAP_EVENT_HEADER:
        return None
    return _SwapEvent(
        amm=b58encode(data[16:48]),
        input_mint=b58encode(data[48:80]),
        input_amount=int.from_bytes(data[80:88], "little"),
        output_mint=b58encode(data[88:120]),
        output_amount=int.from_bytes(data[120:128], "little"),
    )


def _segments(view: MessageView) -> list[_Segment]:
    """Swap segments in execution order; Jupiter events are attached to the hop they describe."""
    entries: list[_Segment] = []
    last_pool: dict[str, str] = {}
    for position, outer in enumerate(view.outer):
        current: _Segment | None = None
        instructions: list[tuple[dict[str, Any], int | None]] = [(outer, 1)]
        instructions += [(ix, ix.get("stackHeight")) for ix in view.inner.get(position, ())]
        for ix, height in instructions:
            if current is not None and height is not None and current.height is not None and height <= current.height:
                entries.append(current)
                current = None
            program = view.program(ix)
            if program in TOKEN_PROGRAMS:
                if current is not None:
                    transfer = _transfer(view, ix)
                    if transfer is not None:
                        current.transfers.append(transfer)
                continue
            if program == JUPITER_V6:
                if current is not None:
                    entries.append(current)
                    current = None
                data = ix.get("data") or ""
                event = _swap_event(data) if data.startswith(_SWAP_EVENT_PREFIX) else None
                if event is not None:
                    last = entries[-1] if entries else None
                    if last is not None and last.program == event.amm and last.event is None:
                        last.event = event
                    else:
                        spec = DEX_PROGRAMS.get(event.amm)
                        dex = spec.name if spec else event.amm
                        entries.append(
                            _Segment(
                                event.amm,
                                dex,
                                last_pool.get(event.amm, event.amm),
                                height,
                                event,
                            )
                        )
                continue
            spec = DEX_PROGRAMS.get(program)
            if spec is None:
                continue
            count = len(ix.get("accounts") or ())
            if count < spec.min_accounts:
                continue
            if current is not None:
                entries.append(current)
            index = spec.pool_index
            if program in WHIRLPOOL_PROGRAMS and count >= WHIRLPOOL_V2_MIN_ACCOUNTS:
                index = WHIRLPOOL_V2_POOL_INDEX
            pool = view.account(ix, index) or program
            last_pool[program] = pool
            current = _Segment(program, spec.name, pool, height, None)
        if current is not None:
            entries.append(current)
    return entries


def _net_by_owner(transfers: list[_Transfer], tokens: dict[str, TokenAccount]) -> dict[str, dict[str, int]]:
    """owner -> mint -> net raw amount received (negative: sent) over the transfers."""
    net: dict[str, dict[str, int]] = {}
    for t in transfers:
        source = tokens.get(t.source)
        destination = tokens.get(t.destination)
        mint = t.mint or (source.mint if source else None) or (destination.mint if destination else None)
        if mint is None:
            continue
        if source is not None:
            per_mint = net.setdefault(source.owner, {})
            per_mint[mint] = per_mint.get(mint, 0) - t.amount
        if destination is not None:
            per_mint = net.setdefault(destination.owner, {})
            per_mint[mint] = per_mint.get(mint, 0) + t.amount
    return net


def _two_sided(per_mint: dict[str, int]) -> tuple[str, int, str, int] | None:
    """(mint sent, amount, mint received, amount) when one mint went out and another came in."""
    if len(per_mint) < 2:
        return None
    sent = min(per_mint, key=per_mint.__getitem__)
    received = max(per_mint, key=per_mint.__getitem__)
    if per_mint[sent] >= 0 or per_mint[received] <= 0:
        return None
    return sent, -per_mint[sent], received, per_mint[received]


def _flows(
    segment: _Segment,
    tokens: dict[str, TokenAccount],
    signers: frozenset[str],
    recurrence: Counter[str],
) -> tuple[str, int, str, int] | None:
    """(token_in, amount_in, token_out, amount_out) of one segment, or None if one side is missing.

    Read from the trader's side when a signer both sent and received in the hop; else from the pool's side when exactly one owner both took in
    one mint and paid out another (the trader may use a temporary account that the balance lists
    omit, or pay out to a third party); else from the owner that recurs across hops (the route's
    wallet), then the side that sent the first transfer.
    """
    transfers = segment.transfers
    if not transfers:
        return None
    net = _net_by_owner(transfers, tokens)
    if not net:
        return None
    for owner in net.keys() & signers:
        flows = _two_sided(net[owner])
        if flows is not None:
            return flows
    two_sided = {o: flows for o in net.keys() - signers if (flows := _two_sided(net[o])) is not None}
    if len(two_sided) == 1:
        sent, amount_sent, received, amount_received = next(iter(two_sided.values()))
        return received, amount_received, sent, amount_sent
    first = tokens.get(transfers[0].source)
    first_owner = first.owner if first else ""
    trader = max(net, key=lambda o: (recurrence[o], o == first_owner))
    return _two_sided(net[trader])


def extract_hops(view: MessageView, tokens: dict[str, TokenAccount]) -> list[Hop]:
    """Every swap of the transaction, in execution order."""
    segments = _segments(view)
    if not segments:
        return []
    recurrence: Counter[str] = Counter()
    for segment in segments:
        recurrence.update(
            {a.owner for t in segment.transfers for a in (tokens.get(t.source), tokens.get(t.destination)) if a}
        )
    hops: list[Hop] = []
    for i, segment in enumerate(segments):
        event = segment.event
        flows = _flows(segment, tokens, view.signers, recurrence)
        if event is not None:
            amount_in, amount_out = event.input_amount, event.output_amount
            if flows is not None and flows[0] == event.input_mint and flows[2] == event.output_mint:
                # Token-2022 transfer fees make the event's planned amounts differ from what moved:
                # the pool can take less than planned, and the trader receives the gross less the
                # fee withheld, so the smaller figure on each side is the one that settled.
                amount_in, amount_out = (
                    min(amount_in, flows[1]),
                    min(amount_out, flows[3]),
                )
            hops.append(
                Hop(
                    segment.dex,
                    segment.pool,
                    event.input_mint,
                    event.output_mint,
                    amount_in,
                    amount_out,
                )
            )
            continue
        if flows is not None:
            hops.append(Hop(segment.dex, segment.pool, flows[0], flows[2], flows[1], flows[3]))
            continue
        following = segments[i + 1] if i + 1 < len(segments) else None
        if following is not None and following.program == segment.program and following.pool == segment.pool:
            # An order book pays out in a second instruction (OpenBook new_order + settle_funds):
            # the two halves form one hop.
            following.transfers[:0] = segment.transfers
    return hops


def attempted_route(view: MessageView, tokens: dict[str, TokenAccount]) -> list[Hop]:
    """The route a failed transaction asked Jupiter for: one hop per top-level route instruction.

    A failed transaction executes nothing, so the hop carries the requested input amount and an
    output of 0; the pool is Jupiter's program id because the route's pools are not resolved.
    """
    hops: list[Hop] = []
    for ix in view.outer:
        if view.program(ix) != JUPITER_V6:
            continue
        data = b58decode(ix.get("data") or "")
        layout = _JUPITER_ROUTES.get(data[:8])
        if layout is None or len(data) < 27:
            continue
        mint_position, source_position, destination_position = layout
        if mint_position is None:
            source = tokens.get(view.account(ix, source_position) or "")
            token_in = source.mint if source else None
        else:
            token_in = view.account(ix, mint_position)
        token_out = view.account(ix, destination_position)
        if token_in and token_out:
            amount_in = int.from_bytes(data[-19:-11], "little")
            hops.append(Hop("jupiter", JUPITER_V6, token_in, token_out, amount_in, 0))
    return hops
