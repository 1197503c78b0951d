"""A realistic synthetic stream of arbitrage transactions, for demos, tests and benchmarks.

Tokens follow random-walk prices in SOL; each DEX pool quotes the pair with its own
small, drifting deviation, which is what searchers arbitrage. Routes are 2–4-hop cycles
mostly from SOL, some from USDC; some land unprofitable, some fail, many pay Jito tips,
and now and then a burst packs one slot with competing searchers.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from arbitrage.model import WSOL_MINT

_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
DEXES = ("raydium_amm", "raydium_clmm", "orca_whirlpool", "meteora_dlmm", "phoenix", "lifinity")
# (mint, decimals, price in SOL, volatility per step)
TOKENS = (
    (WSOL_MINT, 9, 1.0, 0.0),
    ("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", 6, 1 / 150, 0.0008),
    ("Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB", 6, 1 / 150, 0.0008),
    ("DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263", 5, 1.5e-7, 0.004),
    ("JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN", 6, 0.006, 0.002),
    ("4k3Dyjzvzp8eMZWUXbBCjEvwSkkk59S5iCNLY3QrkX6R", 6, 0.015, 0.002),
    ("mSoLzYCxHdYgdzU16g5QSh3i5K3z3KZK7ytfqcJm7So", 9, 1.2, 0.0005),
    ("J1toso1uCk3RLmjorhTtrVwY9HJ7X8V9yYac6Y7kGCPn", 9, 1.15, 0.0005),
)
USDC_MINT = TOKENS[1][0]
SLOT_MS = 400
_KNOWN_SLOT = (285_000_037, 1_724_267_459_000)
"""A mainnet slot and its block time (ms): simulated slots follow the clock from here."""


def _base58(rng: random.Random, length: int) -> str:
    return "".join(rng.choices(_ALPHABET, k=length))


def _slot_at(time_ms: int) -> int:
    """Slots follow the clock, not the seed: two simulators feeding one server agree on which are recent."""
    return _KNOWN_SLOT[0] + (time_ms - _KNOWN_SLOT[1]) // SLOT_MS


class Simulator:
    """Deterministic for a seed; `start` is the block time of the first slot (default: now - 1 h).

    With `realtime`, block times follow the wall clock instead (for live demos at a set rate).
    """

    def __init__(
        self,
        seed: int | None = 0,
        *,
        start: datetime | None = None,
        tx_per_slot: float = 4.0,
        signers: int = 40,
        realtime: bool = False,
    ) -> None:
        self._realtime = realtime
        self._rng = random.Random(seed)
        self._time_ms = int((start or datetime.now(UTC) - timedelta(hours=1)).timestamp() * 1000)
        self._slot = _slot_at(self._time_ms) - 1
        self._tx_per_slot = tx_per_slot
        self._prices = {mint: price for mint, _, price, _ in TOKENS}
        self._decimals = {mint: dec for mint, dec, _, _ in TOKENS}
        self._signers = [_base58(self._rng, 44) for _ in range(signers)]
        self._leaders = [_base58(self._rng, 44) for _ in range(20)]
        self._mints_except = {m: [o for o, *_ in TOKENS if o != m] for m, *_ in TOKENS}
        self._pools: dict[tuple[str, str, str], tuple[str, float]] = {}
        for dex in DEXES:
            for i, (a, *_rest) in enumerate(TOKENS):
                for b, *_ in TOKENS[i + 1 :]:
                    pool = _base58(self._rng, 44)
                    self._pools[(dex, a, b)] = (pool, 0.0)
        self._pool_keys = list(self._pools)

    @staticmethod
    def start_for(count: int, *, end: datetime | None = None, tx_per_slot: float = 4.0) -> datetime:
        """A start time from which `count` transactions end about `end` (default now), not after it."""
        slots = count / (tx_per_slot * 1.1) * 1.1
        return (end or datetime.now(UTC)) - timedelta(milliseconds=slots * (SLOT_MS + 10))

    def records(self, count: int) -> list[dict[str, Any]]:
        """The next `count` transactions, in slot order."""
        out: list[dict[str, Any]] = []
        while len(out) < count:
            out.extend(self._slot_records())
        del out[count:]
        return out

    def stream(self) -> Iterator[dict[str, Any]]:
        """An endless stream of transactions, slot by slot."""
        while True:
            yield from self._slot_records()

    def ndjson(self, count: int) -> bytes:
        encoder = msgspec.json.Encoder()
        return b"\n".join(encoder.encode(r) for r in self.records(count)) + b"\n"

    def _slot_records(self) -> list[dict[str, Any]]:
        rng = self._rng
        now_ms = int(time.time() * 1000)
        # Never ahead of the clock: an endless stream from the past catches up with now and then
        # follows it (the contract refuses block times over an hour ahead).
        self._time_ms = now_ms if self._realtime else min(self._time_ms + SLOT_MS + rng.randrange(-40, 60), now_ms)
        self._slot = max(self._slot + 1, _slot_at(self._time_ms))
        self._walk()
        burst = rng.random() < 0.03
        n = int(rng.expovariate(1 / self._tx_per_slot)) + (rng.randrange(10, 40) if burst else 0)
        leader = self._leaders[(self._slot // 4) % len(self._leaders)]
        return [self._transaction(leader) for _ in range(n)]

    def _walk(self) -> None:
        rng = self._rng
        for mint, _, _, vol in TOKENS:
            if vol:
                self._prices[mint] *= math.exp(rng.gauss(0, vol))
        for key in rng.sample(self._pool_keys, 16):
            pool, deviation = self._pools[key]
            self._pools[key] = (pool, 0.8 * deviation + rng.gauss(0, 0.002))

    def _candidate(self, start: str) -> tuple[list[str], list[str], float]:
        """A random 2-4-hop cycle from `start`: its mints, DEXes and return per unit in."""
        rng = self._rng
        hops = rng.choice((2, 2, 3, 3, 3, 4))
        path = [start, *rng.sample(self._mints_except[start], hops - 1), start]
        dexes = [rng.choice(DEXES) for _ in range(hops)]
        factor = 1.0
        for dex, token_in, token_out in zip(dexes, path, path[1:], strict=False):
            factor *= self._quote(dex, token_in, token_out)[1]
        return path, dexes, factor

    def _legs(self, path: list[str], dexes: list[str], amount: float) -> tuple[list[dict[str, Any]], float]:
        rng = self._rng
        legs: list[dict[str, Any]] = []
        for dex, token_in, token_out in zip(dexes, path, path[1:], strict=False):
            pool, price = self._quote(dex, token_in, token_out)
            raw_in = max(1, int(amount * 10 ** self._decimals[token_in]))
            out = amount * price
            leg: dict[str, Any] = {
                "dex": dex,
                "pool": pool,
                "token_in": token_in,
                "token_out": token_out,
                "amount_in": raw_in,
                "amount_out": max(1, int(out * 10 ** self._decimals[token_out])),
            }
            if rng.random() < 0.5:
                reserve_in = int(raw_in * rng.uniform(200, 5000))
                leg["reserve_in"] = reserve_in
                leg["reserve_out"] = int(
                    reserve_in * price * 10 ** (self._decimals[token_out] - self._decimals[token_in])
                )
            legs.append(leg)
            amount = out
        return legs, amount

    def _quote(self, dex: str, token_in: str, token_out: str) -> tuple[str, float]:
        """Pool address and the pool's price (units of token_out per unit of token_in)."""
        key = (dex, token_in, token_out) if (dex, token_in, token_out) in self._pools else (dex, token_out, token_in)
        pool, deviation = self._pools[key]
        fair = self._prices[token_in] / self._prices[token_out]
        sign = 1 if key[1] == token_in else -1
        return pool, fair * math.exp(sign * deviation) * 0.9997

    def _transaction(self, leader: str) -> dict[str, Any]:
        rng = self._rng
        start = WSOL_MINT if rng.random() < 0.75 else USDC_MINT
        size_sol = rng.lognormvariate(math.log(2.0), 1.0)
        # A searcher quotes a few candidate cycles and sends the best one; prices may move
        # before it lands, so some arrive unprofitable.
        path, dexes, _ = max((self._candidate(start) for _ in range(6)), key=lambda c: c[2])
        legs, amount = self._legs(path, dexes, size_sol / self._prices[start])
        slippage = math.exp(rng.gauss(-0.0004, 0.0008))
        legs[-1]["amount_out"] = max(1, int(legs[-1]["amount_out"] * slippage))
        amount *= slippage
        gain_sol = (amount - size_sol / self._prices[start]) * self._prices[start]
        success = rng.random() > 0.12
        tip = int(max(0.0, gain_sol) * rng.uniform(0.2, 0.6) * 1e9) if rng.random() < 0.6 else 0
        cu_limit = rng.choice((200_000, 300_000, 400_000, 600_000, 1_400_000))
        cu_price = rng.choice((0, 1_000, 10_000, 100_000, 1_000_000))
        record: dict[str, Any] = {
            "signature": _base58(rng, 88),
            "slot": self._slot,
            "block_time": self._time_ms,
            "signer": rng.choice(self._signers),
            "success": success,
            "legs": legs,
            "fee_lamports": 5000,
            "priority_fee_lamports": cu_limit * cu_price // 1_000_000,
            "jito_tip_lamports": tip,
            "compute_units_consumed": int(cu_limit * rng.uniform(0.3, 0.95)),
            "compute_unit_limit": cu_limit,
            "leader": leader,
        }
        if tip:
            record["bundle_id"] = _base58(rng, 64)
        return record
