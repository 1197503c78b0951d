"""A slow, plain-Python reading of every feature's documented definition, row by row.

Written from `docs/features.md` and the conventions in `arbitrage/features/_registry.py`
only, never from the engine: each feature scans the earlier rows it is defined over.
Quadratic in the worst case; meant for a few hundred rows.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import polars as pl

from arbitrage.model import KNOWN_DECIMALS, WSOL_MINT

USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
USDT = "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB"
SECOND, MINUTE, DAY = 1_000, 60_000, 86_400_000


@dataclass
class Row:
    """One transaction's inputs, and its point-in-time place (`pos`) and event time (`t`)."""

    index: int
    pos: int
    slot: int
    block_ms: int
    t: int
    signer: str
    success: bool
    net_profit: float | None
    priority: float
    tip: float
    dex: str
    pool: str
    pair: tuple[str, str]
    price: float | None
    quote_size: float
    bought: bool
    raw: dict[str, Any]

    @property
    def minute(self) -> int:
        return self.t // MINUTE


def _ui(amount: int | None, decimals: int | None, mint: str) -> float | None:
    if amount is None:
        return None
    return amount / 10.0 ** (KNOWN_DECIMALS.get(mint, 6) if decimals is None else decimals)


def _quote_rank(mint: str) -> int:
    return 0 if mint == WSOL_MINT else 1 if mint in (USDC, USDT) else 2


def _rows(frame: pl.DataFrame) -> list[Row]:
    """The frame's rows in point-in-time order (slot, then input position), with event time."""
    records = frame.to_dicts()
    order = sorted(range(len(records)), key=lambda i: (records[i]["slot"], i))
    rows: list[Row] = []
    event_time = -(2**62)
    for pos, i in enumerate(order):
        raw = records[i]
        leg = raw["legs"][0]
        block_ms = int(raw["block_time"].timestamp() * 1000 + 0.5)
        event_time = max(event_time, block_ms)
        token_in, token_out = leg["token_in"], leg["token_out"]
        out_is_quote = (_quote_rank(token_out), token_out) < (_quote_rank(token_in), token_in)
        ui_in = _ui(leg["amount_in"], leg["decimals_in"], token_in)
        ui_out = _ui(leg["amount_out"], leg["decimals_out"], token_out)
        assert ui_in is not None and ui_out is not None
        quote_size, base_size = (ui_out, ui_in) if out_is_quote else (ui_in, ui_out)
        price = quote_size / base_size if quote_size > 0 and base_size > 0 else None
        rows.append(
            Row(
                index=i,
                pos=pos,
                slot=raw["slot"],
                block_ms=block_ms,
                t=event_time,
                signer=raw["signer"],
                success=raw["success"],
                net_profit=raw["net_profit_sol"],
                priority=float(raw["priority_fee_lamports"]),
                tip=float(raw["jito_tip_lamports"]),
                dex=leg["dex"],
                pool=leg["pool"],
                pair=(token_in, token_out) if out_is_quote else (token_out, token_in),
                price=price,
                quote_size=quote_size,
                bought=not out_is_quote,
                raw=raw,
            )
        )
    return rows


def _quantile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks at q (m - 1)."""
    ordered = sorted(values)
    at = q * (len(ordered) - 1)
    below = math.floor(at)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (at - below) * (ordered[above] - ordered[below])


def _rank(value: float, window: list[float]) -> float:
    """Piecewise linear through (min, 0), (p50, 0.5), (p90, 0.9), (max, 1)."""
    if not window:
        return 0.5
    points = [(min(window), 0.0), (_quantile(window, 0.5), 0.5), (_quantile(window, 0.9), 0.9), (max(window), 1.0)]
    if value <= points[0][0]:
        return 0.0
    for (x_lo, r_lo), (x_hi, r_hi) in itertools.pairwise(points):
        if value <= x_hi and x_hi > x_lo:
            return r_lo + (r_hi - r_lo) * (value - x_lo) / (x_hi - x_lo)
    return 1.0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _il(log_return: float) -> float:
    k = math.exp(log_return)
    return 1 - 2 * math.sqrt(k) / (1 + k)


def _since(t: int, earlier: Row | None) -> float:
    if earlier is None or t - earlier.t >= DAY:
        return 86_400.0
    return (t - earlier.t) / 1000


def reference_features(frame: pl.DataFrame) -> list[dict[str, float]]:
    """Every window and calendar feature of each row, in the frame's row order."""
    rows = _rows(frame)
    by_pair: dict[tuple[str, str], list[Row]] = {}
    by_signer: dict[str, list[Row]] = {}
    out: list[dict[str, float]] = [{} for _ in rows]
    last_return: list[float] = []
    spread_now: list[float] = []
    for row in rows:
        pair_rows = by_pair.setdefault(row.pair, [])
        signer_rows = by_signer.setdefault(row.signer, [])
        earlier = rows[: row.pos]

        def pair_within(width: int, row: Row = row, pair_rows: list[Row] = pair_rows) -> list[Row]:
            return [r for r in pair_rows if r.t > row.t - width]

        previous = pair_rows[-1] if pair_rows else None
        r = 0.0
        if previous and previous.t > row.t - 5 * MINUTE and previous.price and row.price:
            r = math.log(row.price / previous.price)
        latest_by_dex: dict[str, float] = {}
        for other in pair_within(MINUTE):
            if other.price is not None:
                latest_by_dex[other.dex] = other.price
        prices = list(latest_by_dex.values())
        spread = (max(prices) - min(prices)) / min(prices) * 1e4 if len(prices) >= 2 else 0.0

        f = out[row.index]
        f["last_return"] = r
        f["spread_now_bps"] = spread
        f["spread_5s_bps"] = _mean([spread_now[o.pos] for o in pair_within(5 * SECOND)])
        f["spread_1m_bps"] = _mean([spread_now[o.pos] for o in pair_within(MINUTE)])
        own_price = row.price if row.price is not None else 0.0
        for name, width in (("1m", MINUTE), ("5m", 5 * MINUTE)):
            priced = [(o.price, o.quote_size) for o in pair_within(width) if o.price is not None]
            weight = math.fsum(size for _, size in priced)
            f[f"vwap_{name}"] = math.fsum(p * size for p, size in priced) / weight if weight > 0 else own_price
        vwap = f["vwap_1m"]
        f["vwap_deviation_bps"] = (own_price - vwap) / vwap * 1e4 if row.price is not None and vwap > 0 else 0.0
        for name, width in (("5s", 5 * SECOND), ("1m", MINUTE), ("5m", 5 * MINUTE)):
            f[f"volatility_{name}"] = math.sqrt(sum(last_return[o.pos] ** 2 for o in pair_within(width)))
        for name, width in (("1m", MINUTE), ("5m", 5 * MINUTE)):
            window = pair_within(width)
            f[f"return_{name}"] = sum(last_return[o.pos] for o in window)
            volume = sum(o.quote_size for o in window)
            f[f"volume_{name}"] = volume
            f[f"trades_{name}"] = len(window)
            flow = sum(o.quote_size if o.bought else -o.quote_size for o in window)
            f[f"order_flow_imbalance_{name}"] = flow / volume if volume else 0.0
        window_5m = pair_within(5 * MINUTE)
        f["avg_trade_size_5m"] = f["volume_5m"] / len(window_5m) if window_5m else 0.0
        f["pair_failure_rate_5m"] = _mean([0.0 if o.success else 1.0 for o in window_5m])
        last_ten = window_5m[-10:]
        f["trade_size_percentile"] = (
            sum(o.quote_size < row.quote_size for o in last_ten) / len(last_ten) if last_ten else 0.5
        )

        _bar_features(f, row, pair_rows)

        same_slot = [o for o in earlier if o.slot == row.slot]
        recent = [o for o in earlier if o.slot > row.slot - 25]
        f["slot_position"] = len(same_slot)
        f["txs_per_slot"] = len(recent) / 25
        f["arbs_per_slot"] = sum(o.success and (o.net_profit or 0) > 0 for o in recent) / 25
        for name, values, own in (
            ("priority_fee", [o.priority for o in recent], row.priority),
            ("tip", [o.tip for o in recent], row.tip),
        ):
            f[f"{name}_p50"] = _quantile(values, 0.5) if values else 0.0
            f[f"{name}_p90"] = _quantile(values, 0.9) if values else 0.0
            f[f"{name}_rank"] = _rank(own, values)
        f["congestion_score"] = _mean([0.0 if o.success else 1.0 for o in recent])
        previous_slot_rows = [o for o in earlier if o.slot < row.slot]
        gap = row.slot - previous_slot_rows[-1].slot if previous_slot_rows else None
        if gap is not None and gap <= 25:
            f["slot_gap"] = gap
            f["ms_per_slot"] = (row.block_ms - previous_slot_rows[-1].block_ms) / gap
        else:
            f["slot_gap"], f["ms_per_slot"] = 25.0, 400.0

        f["sandwich_exposure"] = sum(o.pool == row.pool and o.signer != row.signer for o in same_slot)
        f["competitors_same_slot"] = sum(o.pair == row.pair and o.signer != row.signer for o in same_slot)
        f["competitors_10_slots"] = sum(
            o.pair == row.pair and o.signer != row.signer for o in earlier if o.slot > row.slot - 10
        )
        f["il_estimate_1m"] = _il(f["return_1m"])
        f["il_estimate_5m"] = _il(f["return_5m"])
        signer_5m = [o for o in signer_rows if o.t > row.t - 5 * MINUTE]
        f["signer_tx_count_5m"] = len(signer_5m)
        f["signer_success_rate_5m"] = (sum(o.success for o in signer_5m) + 1) / (len(signer_5m) + 2)
        f["time_since_pair_prev_s"] = _since(row.t, previous)
        f["time_since_signer_prev_s"] = _since(row.t, signer_rows[-1] if signer_rows else None)
        _calendar(f, row.block_ms)

        last_return.append(r)
        spread_now.append(spread)
        pair_rows.append(row)
        signer_rows.append(row)
    return out


def _bar_features(f: dict[str, float], row: Row, pair_rows: list[Row]) -> None:
    """The minute-aligned 24 h sums and the one-minute bar indicators."""
    minute = row.minute
    day = [o for o in pair_rows if minute - 1_440 <= o.minute]  # earlier: minute <= own minute
    prior_day = [o for o in pair_rows if minute - 2_880 <= o.minute < minute - 1_440]
    f["volume_24h"] = sum(o.quote_size for o in day)
    f["trades_24h"] = len(day)
    prior = sum(o.quote_size for o in prior_day)
    f["volume_change_24h"] = f["volume_24h"] / prior - 1 if prior else 0.0
    closes_by_minute: dict[int, float | None] = {}
    for o in pair_rows:
        if minute - 1_440 <= o.minute < minute and (o.price is not None or o.minute not in closes_by_minute):
            closes_by_minute[o.minute] = o.price
    first_minute = min(closes_by_minute, default=minute)
    f["pair_age_s"] = min((row.t - first_minute * MINUTE) / 1000, 86_400.0)
    closes = [closes_by_minute[m] for m in sorted(closes_by_minute)]

    rsi_closes = [c for c in closes[-15:] if c is not None]  # a bar without a price: no RSI
    f["rsi_14"] = 50.0
    if len(rsi_closes) == 15:
        changes = [b - a for a, b in itertools.pairwise(rsi_closes)]
        gain = sum(c for c in changes if c > 0) / 14
        loss = sum(-c for c in changes if c < 0) / 14
        if gain + loss > 0:
            f["rsi_14"] = 100 * gain / (gain + loss)

    band = [c for c in closes[-20:] if c is not None]
    f["bollinger_pct_b"], f["bollinger_bandwidth"], f["price_zscore"] = 0.5, 0.0, 0.0
    if len(band) == 20:
        mean = sum(band) / 20
        sd = math.sqrt(sum((c - mean) ** 2 for c in band) / 20)  # population sd
        if sd > 0:
            f["bollinger_bandwidth"] = 4 * sd / mean
            if row.price is not None:
                f["bollinger_pct_b"] = (row.price - (mean - 2 * sd)) / (4 * sd)
                f["price_zscore"] = (row.price - mean) / sd


def _calendar(f: dict[str, float], block_ms: int) -> None:
    day_fraction = (block_ms % DAY) / DAY
    weekday = (block_ms // DAY + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    f["hour_sin"] = math.sin(2 * math.pi * day_fraction)
    f["hour_cos"] = math.cos(2 * math.pi * day_fraction)
    f["dow_sin"] = math.sin(2 * math.pi * (weekday + day_fraction) / 7)
    f["dow_cos"] = math.cos(2 * math.pi * (weekday + day_fraction) / 7)
    f["is_weekend"] = weekday >= 5


def reference_row_features(frame: pl.DataFrame) -> list[dict[str, float]]:
    """The features a transaction gives alone, from its legs and fee fields."""
    out = []
    for raw in frame.to_dicts():
        legs = raw["legs"]
        first, last = legs[0], legs[-1]
        ui_in = _ui(first["amount_in"], first["decimals_in"], first["token_in"])
        ui_out = _ui(first["amount_out"], first["decimals_out"], first["token_out"])
        assert ui_in is not None and ui_out is not None
        route = [first["token_in"], *(leg["token_out"] for leg in legs)]
        fee, prio, tip = (raw[k] / 1e9 for k in ("fee_lamports", "priority_fee_lamports", "jito_tip_lamports"))
        revenue = raw["gross_revenue_sol"]
        cost = fee + prio + tip + raw["other_cost_lamports"] / 1e9
        profit = revenue - cost if revenue is not None else 0.0
        cu, limit = raw["compute_units_consumed"], raw["compute_unit_limit"]
        out_is_quote = (_quote_rank(first["token_out"]), first["token_out"]) < (
            _quote_rank(first["token_in"]),
            first["token_in"],
        )
        reserve_in = _ui(first["reserve_in"], first["decimals_in"], first["token_in"])
        reserve_out = _ui(first["reserve_out"], first["decimals_out"], first["token_out"])
        output = _ui(last["amount_out"], last["decimals_out"], last["token_out"])
        assert output is not None
        gain = output - ui_in  # in the start token, valued in SOL by the revenue when circular
        input_sol = (
            ui_in
            if route[0] == WSOL_MINT
            else revenue * ui_in / gain
            if route[0] == route[-1] and gain and revenue is not None
            else None
        )
        out.append(
            {
                "hop_count": len(legs),
                "dex_count": len({leg["dex"] for leg in legs}),
                "token_count": len(set(route)),
                "is_circular": route[0] == route[-1],
                "starts_in_wsol": route[0] == WSOL_MINT,
                "in_bundle": raw["bundle_id"] is not None,
                "input_amount": ui_in,
                "output_amount": output,
                "revenue_known": revenue is not None,
                "revenue_sol": revenue if revenue is not None else 0.0,
                "fee_sol": fee,
                "priority_fee_sol": prio,
                "tip_sol": tip,
                "cost_sol": cost,
                "profit_sol": profit,
                "roi_bps": profit / input_sol * 1e4 if revenue is not None and input_sol and input_sol > 0 else 0.0,
                "tip_share": tip / revenue if revenue is not None and revenue > 0 else 0.0,
                "compute_units": float(cu or 0),
                "cu_utilisation": cu / limit if cu is not None and limit else 0.0,
                "priority_fee_per_cu": prio * 1e9 / cu if cu else 0.0,
                "profit_per_cu": profit * 1e9 / cu if cu else 0.0,
                "price": (ui_out / ui_in if out_is_quote else ui_in / ui_out) if ui_in > 0 and ui_out > 0 else 0.0,
                "trade_size": ui_out if out_is_quote else ui_in,
                "price_impact_bps": ui_in / (reserve_in + ui_in) * 1e4 if reserve_in is not None else 0.0,
                "liquidity_depth": (reserve_out if out_is_quote else reserve_in) or 0.0,
            }
        )
    return out


def reference_risk(features: dict[str, float]) -> dict[str, float | str]:
    """The documented risk components and score of one row's features."""
    components = {
        "risk_sandwich": 1 - math.exp(-features["sandwich_exposure"]),
        "risk_il": 1 - math.exp(-features["il_estimate_5m"] / 0.001),
        "risk_token": (
            (1 - features["pair_age_s"] / 86_400)
            + (1 - math.exp(-features["volatility_5m"] / 0.02))
            + math.exp(-features["trades_24h"] / 100)
            + features["pair_failure_rate_5m"]
        )
        / 4,
        "risk_competition": 1 - math.exp(-(features["competitors_same_slot"] + features["competitors_10_slots"] / 10)),
        "risk_execution": 0.5 * (1 - features["signer_success_rate_5m"]) + 0.5 * features["congestion_score"],
    }
    weights = {"risk_sandwich": 0.25, "risk_il": 0.10, "risk_token": 0.20, "risk_competition": 0.25}
    score = sum(components[name] * w for name, w in weights.items()) + 0.20 * components["risk_execution"]
    level = "low" if score < 1 / 3 else "medium" if score < 2 / 3 else "high"
    return {**components, "risk_score": score, "risk_level": level}
