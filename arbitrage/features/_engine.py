"""The feature pipeline: point-in-time features on columnar batches with bounded state.

Each batch is computed over (state tail + batch) and only the new rows are kept, so any
batch boundaries give the values one big backfill gives. The state between batches is
bounded by time, not by history length:
- the raw rows of the last 5 whole minutes and of the last 25 slots (the longest raw
  windows), with the per-row values later rows look back at (`r`, `spread`);
- per (pair, minute) bars of the last 48 h for the minute-aligned 24 h windows and the
  one-minute indicators (RSI, Bollinger);
- the last event time of each pair and signer seen in the last 24 h.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Final

import msgspec
import polars as pl

from arbitrage.features._registry import FEATURES, LATE_COLUMN
from arbitrage.features._windows import KEY, add_window_key, same_group_prev, window_sum, window_width
from arbitrage.model import KNOWN_DECIMALS, LAMPORTS_PER_SOL, WSOL_MINT

_STABLES: Final = ["EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB"]
_S5: Final = 5_000
_M1: Final = 60_000
_M5: Final = 300_000
_DAY_MS: Final = 86_400_000
_DAY_MINUTES: Final = 1_440
RECENT_SLOTS: Final = 25
_COMPETITION_SLOTS: Final = 10
_TAIL_MINUTES: Final = 5
_BAR_KEEP_MINUTES: Final = 2 * _DAY_MINUTES + _TAIL_MINUTES + 2
_WARMUP_MINUTES: Final = 12
_SIZE_LOOKBACK: Final = 10
_RSI_BARS: Final = 14
_BOLLINGER_BARS: Final = 20

HISTORY_WINDOW: Final = timedelta(hours=48, minutes=15)
"""How far back before the newest stored transaction `FeatureEngine.from_history` needs rows."""

_TAIL_SCHEMA: Final[dict[str, pl.DataType]] = {
    "seq": pl.Int64(),
    "slot": pl.Int64(),
    "t": pl.Int64(),
    "minute": pl.Int64(),
    "block_ms": pl.Int64(),
    "pair": pl.String(),
    "dex": pl.String(),
    "pool": pl.String(),
    "signer": pl.String(),
    "failed": pl.Int64(),
    "arb": pl.Int64(),
    "price": pl.Float64(),
    "qvol": pl.Float64(),
    "side_qvol": pl.Float64(),
    "prio": pl.Float64(),
    "tip": pl.Float64(),
    "r": pl.Float64(),
    "spread": pl.Float64(),
}
_BAR_SCHEMA: Final[dict[str, pl.DataType]] = {
    "pair": pl.String(),
    "minute": pl.Int64(),
    "volume": pl.Float64(),
    "trades": pl.Int64(),
    "close": pl.Float64(),
}
_LAST_SEEN_SCHEMA: Final[dict[str, pl.DataType]] = {"key": pl.String(), "last_t": pl.Int64()}


class RollingState(msgspec.Struct):
    """What the engine remembers between batches; see the module docstring for its bounds."""

    tail: pl.DataFrame
    bars: pl.DataFrame
    last_pair: pl.DataFrame
    last_signer: pl.DataFrame
    max_t: int | None = None
    max_slot: int | None = None
    bar_cutoff: int | None = None
    next_seq: int = 0

    @classmethod
    def empty(cls) -> RollingState:
        """State before any transaction."""
        return cls(
            tail=pl.DataFrame(schema=_TAIL_SCHEMA),
            bars=pl.DataFrame(schema=_BAR_SCHEMA),
            last_pair=pl.DataFrame(schema=_LAST_SEEN_SCHEMA),
            last_signer=pl.DataFrame(schema=_LAST_SEEN_SCHEMA),
        )


def _ui(amount: pl.Expr, decimals: pl.Expr) -> pl.Expr:
    return amount.cast(pl.Float64) / pl.lit(10.0).pow(decimals)


def _decimals(mint: pl.Expr, given: pl.Expr) -> pl.Expr:
    return given.cast(pl.Int64).fill_null(mint.replace_strict(KNOWN_DECIMALS, default=6, return_dtype=pl.Int64))


def _quote_rank(mint: pl.Expr) -> pl.Expr:
    return pl.when(mint == WSOL_MINT).then(0).when(mint.is_in(_STABLES)).then(1).otherwise(2)


def _safe_div(num: pl.Expr, den: pl.Expr, fill: float = 0.0) -> pl.Expr:
    return pl.when(den != 0).then(num / den).otherwise(fill)


def _own_columns(batch: pl.DataFrame, state: RollingState) -> pl.DataFrame:
    """Processing order, event time and everything that needs only the row itself."""
    start_time = pl.col("block_time").dt.epoch("ms")
    event_time = start_time if state.max_t is None else pl.max_horizontal(start_time, pl.lit(state.max_t))
    late = pl.lit(False) if state.max_slot is None else pl.col("slot").cast(pl.Int64) < state.max_slot
    first, last = pl.col("_first").struct, pl.col("_last").struct
    token_in, token_out = pl.col("token_in"), pl.col("token_out")
    frame = (
        batch.with_row_index("_row")
        .sort("slot", maintain_order=True)
        .with_columns(
            (pl.int_range(pl.len(), dtype=pl.Int64) + state.next_seq).alias("seq"),
            pl.col("slot").cast(pl.Int64).alias("slot_i"),
            start_time.alias("block_ms"),
            event_time.cum_max().alias("t"),
            late.alias("late"),
            pl.col("legs").list.first().alias("_first"),
            pl.col("legs").list.last().alias("_last"),
        )
        .with_columns(
            first.field("dex").alias("dex"),
            first.field("pool").alias("pool"),
            first.field("token_in").alias("token_in"),
            first.field("token_out").alias("token_out"),
            _decimals(first.field("token_in"), first.field("decimals_in")).alias("_dec_in"),
            _decimals(first.field("token_out"), first.field("decimals_out")).alias("_dec_out"),
            _ui(last.field("amount_out"), _decimals(last.field("token_out"), last.field("decimals_out"))).alias(
                "output_amount"
            ),
        )
        .with_columns(
            _ui(first.field("amount_in"), pl.col("_dec_in")).alias("ui_in"),
            _ui(first.field("amount_out"), pl.col("_dec_out")).alias("ui_out"),
            _ui(first.field("reserve_in"), pl.col("_dec_in")).alias("res_in"),
            _ui(first.field("reserve_out"), pl.col("_dec_out")).alias("res_out"),
            _quote_rank(token_in).alias("_rank_in"),
            _quote_rank(token_out).alias("_rank_out"),
        )
        .with_columns(
            (
                (pl.col("_rank_out") < pl.col("_rank_in"))
                | ((pl.col("_rank_out") == pl.col("_rank_in")) & (token_out < token_in))
            ).alias("quote_is_out")
        )
    )
    q_out = pl.col("quote_is_out")
    raw_price = pl.when(q_out).then(pl.col("ui_out") / pl.col("ui_in")).otherwise(pl.col("ui_in") / pl.col("ui_out"))
    return frame.with_columns(
        (pl.col("t") // _M1).alias("minute"),
        pl.when(q_out)
        .then(pl.concat_str("token_in", pl.lit("/"), "token_out"))
        .otherwise(pl.concat_str("token_out", pl.lit("/"), "token_in"))
        .alias("pair"),
        pl.when(raw_price.is_finite() & (raw_price > 0)).then(raw_price).alias("price"),
        pl.when(q_out).then(pl.col("ui_out")).otherwise(pl.col("ui_in")).alias("qvol"),
        pl.when(q_out).then(pl.col("res_out")).otherwise(pl.col("res_in")).fill_null(0.0).alias("liquidity_depth"),
        (~pl.col("success")).cast(pl.Int64).alias("failed"),
        (pl.col("success") & (pl.col("net_profit_sol") > 0)).fill_null(False).cast(pl.Int64).alias("arb"),
        pl.col("priority_fee_lamports").cast(pl.Float64).alias("prio"),
        pl.col("jito_tip_lamports").cast(pl.Float64).alias("tip"),
    ).with_columns(
        pl.when(q_out).then(-pl.col("qvol")).otherwise(pl.col("qvol")).alias("side_qvol"),
    )


def _route_and_time(frame: pl.DataFrame) -> pl.DataFrame:
    """Route, economics and calendar features: functions of the row alone."""
    cu = pl.col("compute_units_consumed").cast(pl.Float64)
    limit = pl.col("compute_unit_limit").cast(pl.Float64)
    profit = pl.col("net_profit_sol")
    revenue = pl.col("gross_revenue_sol")
    gain_in_start = pl.col("output_amount") - pl.col("ui_in")
    input_sol = (
        pl.when(pl.col("start_token") == WSOL_MINT)
        .then(pl.col("ui_in"))
        .when(pl.col("circular") & (gain_in_start != 0))
        .then(revenue * pl.col("ui_in") / gain_in_start)
    )
    day_fraction = (pl.col("block_ms") % _DAY_MS) / _DAY_MS
    week_fraction = (pl.col("block_time").dt.weekday().cast(pl.Float64) - 1.0 + day_fraction) / 7.0
    tau = 2.0 * math.pi
    return frame.with_columns(
        pl.col("hops").alias("hop_count"),
        pl.col("dexes").list.n_unique().alias("dex_count"),
        pl.col("route").list.n_unique().alias("token_count"),
        pl.col("circular").alias("is_circular"),
        (pl.col("start_token") == WSOL_MINT).alias("starts_in_wsol"),
        pl.col("bundle_id").is_not_null().alias("in_bundle"),
        pl.col("ui_in").fill_nan(0.0).alias("input_amount"),
        revenue.is_not_null().alias("revenue_known"),
        revenue.fill_null(0.0).alias("revenue_sol"),
        (pl.col("fee_lamports").cast(pl.Float64) / LAMPORTS_PER_SOL).alias("fee_sol"),
        (pl.col("prio") / LAMPORTS_PER_SOL).alias("priority_fee_sol"),
        (pl.col("tip") / LAMPORTS_PER_SOL).alias("tip_sol"),
        pl.col("total_cost_sol").alias("cost_sol"),
        profit.fill_null(0.0).alias("profit_sol"),
        pl.when(input_sol > 0).then(profit / input_sol * 1e4).otherwise(0.0).fill_null(0.0).alias("roi_bps"),
        pl.when(revenue > 0)
        .then(pl.col("tip") / LAMPORTS_PER_SOL / revenue)
        .otherwise(0.0)
        .fill_null(0.0)
        .alias("tip_share"),
        cu.fill_null(0.0).alias("compute_units"),
        pl.when(limit > 0).then(cu / limit).otherwise(0.0).fill_null(0.0).alias("cu_utilisation"),
        pl.when(cu > 0).then(pl.col("prio") / cu).otherwise(0.0).fill_null(0.0).alias("priority_fee_per_cu"),
        pl.when(cu > 0).then(profit * LAMPORTS_PER_SOL / cu).otherwise(0.0).fill_null(0.0).alias("profit_per_cu"),
        pl.col("price").fill_null(0.0).alias("price_feature"),
        pl.col("qvol").fill_nan(0.0).alias("trade_size"),
        pl.when(pl.col("res_in").is_not_null() & ((pl.col("res_in") + pl.col("ui_in")) > 0))
        .then(pl.col("ui_in") / (pl.col("res_in") + pl.col("ui_in")) * 1e4)
        .otherwise(0.0)
        .alias("price_impact_bps"),
        (day_fraction * tau).sin().alias("hour_sin"),
        (day_fraction * tau).cos().alias("hour_cos"),
        (week_fraction * tau).sin().alias("dow_sin"),
        (week_fraction * tau).cos().alias("dow_cos"),
        (pl.col("block_time").dt.weekday() >= 6).alias("is_weekend"),
    )


def _cross_dex_spread(dexes: list[str]) -> pl.Expr:
    """(max - min) / min of each DEX's latest earlier price on the pair within 1 m, in bps."""
    latest: list[pl.Expr] = []
    for dex in dexes:
        quoted = (pl.col("dex") == dex) & pl.col("price").is_not_null()
        price = pl.when(quoted).then(pl.col("price")).shift(1).forward_fill()
        group = pl.when(quoted).then(pl.col("_gid")).shift(1).forward_fill()
        seen = pl.when(quoted).then(pl.col("t")).shift(1).forward_fill()
        latest.append(pl.when((group == pl.col("_gid")) & (seen > pl.col("t") - _M1)).then(price))
    if len(latest) < 2:
        return pl.lit(0.0)
    quoted_dexes = pl.sum_horizontal([p.is_not_null().cast(pl.Int64) for p in latest])
    high, low = pl.max_horizontal(latest), pl.min_horizontal(latest)
    return pl.when(quoted_dexes >= 2).then((high - low) / low * 1e4).otherwise(0.0)


def _pair_windows(rows: pl.DataFrame, first_new: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-pair time windows; returns (new rows' pair features by seq, all rows with r/spread)."""
    ordered, s2 = add_window_key(rows.sort("pair", "t", "seq"), ["pair"], "t", _M5)
    is_new = pl.col("seq") >= first_new
    prev_price = same_group_prev("price")
    recent = pl.col("t").shift(1) > pl.col("t") - _M5
    r_new = pl.when(recent & prev_price.is_not_null() & pl.col("price").is_not_null()).then(
        (pl.col("price") / prev_price).log()
    )
    dexes = ordered.get_column("dex").drop_nulls().unique().sort().to_list()
    ordered = ordered.with_columns(
        pl.when(is_new).then(r_new.fill_null(0.0)).otherwise(pl.col("r")).alias("r"),
        pl.when(is_new).then(_cross_dex_spread(dexes)).otherwise(pl.col("spread")).alias("spread"),
        pl.lit(1, pl.Int64).alias("one"),
    )
    compared = [
        ((pl.col("_gid").shift(k) == pl.col("_gid")) & (pl.col("t").shift(k) > pl.col("t") - _M5)).alias(f"_cmp_{k}")
        for k in range(1, _SIZE_LOOKBACK + 1)
    ]
    ordered = ordered.with_columns(compared)
    smaller = [
        (pl.col(f"_cmp_{k}") & (pl.col("qvol").shift(k) < pl.col("qvol"))).cast(pl.Int64)
        for k in range(1, _SIZE_LOOKBACK + 1)
    ]
    n_compared = pl.sum_horizontal(pl.col(f"_cmp_{k}").cast(pl.Int64) for k in range(1, _SIZE_LOOKBACK + 1))
    vq = pl.when(pl.col("price").is_not_null()).then(pl.col("qvol")).otherwise(0.0)
    pv = (pl.col("price") * pl.col("qvol")).fill_null(0.0)
    r2 = pl.col("r") * pl.col("r")
    ordered = ordered.with_columns(
        pl.when(n_compared > 0)
        .then(pl.sum_horizontal(smaller) / n_compared)
        .otherwise(0.5)
        .alias("trade_size_percentile"),
        same_group_prev("t").alias("prev_pair_t"),
        window_sum(pl.col("one"), _S5, s2).alias("c5s"),
        window_sum(pl.col("one"), _M1, s2).alias("trades_1m"),
        window_sum(pl.col("one"), _M5, s2).alias("trades_5m"),
        window_sum(pl.col("spread"), _S5, s2).alias("spread_sum_5s"),
        window_sum(pl.col("spread"), _M1, s2).alias("spread_sum_1m"),
        window_sum(r2, _S5, s2).alias("r2_5s"),
        window_sum(r2, _M1, s2).alias("r2_1m"),
        window_sum(r2, _M5, s2).alias("r2_5m"),
        window_sum(pl.col("r"), _M1, s2).alias("return_1m"),
        window_sum(pl.col("r"), _M5, s2).alias("return_5m"),
        window_sum(pv, _M1, s2).alias("pv_1m"),
        window_sum(pv, _M5, s2).alias("pv_5m"),
        window_sum(vq, _M1, s2).alias("vq_1m"),
        window_sum(vq, _M5, s2).alias("vq_5m"),
        window_sum(pl.col("qvol"), _M1, s2).alias("volume_1m"),
        window_sum(pl.col("qvol"), _M5, s2).alias("volume_5m"),
        window_sum(pl.col("side_qvol"), _M1, s2).alias("flow_1m"),
        window_sum(pl.col("side_qvol"), _M5, s2).alias("flow_5m"),
        window_sum(pl.col("failed"), _M5, s2).alias("failed_5m"),
    )
    by_minute, s2m = add_window_key(ordered, ["pair"], "minute", 1)
    by_minute = by_minute.with_columns(
        window_sum(pl.col("qvol"), 1, s2m).alias("minute_volume"),
        window_sum(pl.col("one"), 1, s2m).alias("minute_trades"),
    )
    shared = [name for name in _TAIL_SCHEMA if name not in ("seq", "r", "spread")]
    new = by_minute.filter(is_new).sort("seq").drop(*shared, KEY, "_gid", "one", "^_cmp_.*$")
    return new, by_minute.select(_TAIL_SCHEMA.keys()).sort("seq")


def _signer_windows(rows: pl.DataFrame, first_new: int) -> pl.DataFrame:
    """The signer's earlier transactions over 5 m and its previous event time."""
    picked = rows.select("seq", "signer", "t", "failed", pl.lit(1, pl.Int64).alias("one"))
    ordered, s2 = add_window_key(picked.sort("signer", "t", "seq"), ["signer"], "t", _M5)
    return (
        ordered.with_columns(
            window_sum(pl.col("one") - pl.col("failed"), _M5, s2).alias("signer_successes"),
            window_sum(pl.col("one"), _M5, s2).alias("signer_tx_count_5m"),
            same_group_prev("t").alias("prev_signer_t"),
        )
        .filter(pl.col("seq") >= first_new)
        .sort("seq")
        .select("signer_successes", "signer_tx_count_5m", "prev_signer_t")
    )


def _slot_counts(rows: pl.DataFrame, first_new: int, groups: list[str], widths: dict[str, int]) -> pl.DataFrame:
    """Counts of the group's earlier transactions within `width` slots, for the new rows."""
    picked = rows.select("seq", "slot", *groups, pl.lit(1, pl.Int64).alias("one"))
    ordered, s2 = add_window_key(picked.sort(*groups, "slot", "seq"), groups, "slot", max(widths.values()))
    return (
        ordered.with_columns(window_sum(pl.col("one"), width, s2).alias(name) for name, width in widths.items())
        .filter(pl.col("seq") >= first_new)
        .sort("seq")
        .select(widths.keys())
    )


def _rank(value: pl.Expr, low: pl.Expr, p50: pl.Expr, p90: pl.Expr, high: pl.Expr) -> pl.Expr:
    """Rank in a window, linear between min=0, p50=0.5, p90=0.9 and max=1."""

    def between(lo: pl.Expr, hi: pl.Expr, r_lo: float, r_hi: float) -> pl.Expr:
        return pl.when(hi > lo).then(r_lo + (r_hi - r_lo) * (value - lo) / (hi - lo)).otherwise(r_hi)

    return (
        pl.when(low.is_null())
        .then(0.5)
        .when(value <= low)
        .then(0.0)
        .when(value <= p50)
        .then(between(low, p50, 0.0, 0.5))
        .when(value <= p90)
        .then(between(p50, p90, 0.5, 0.9))
        .when(value < high)
        .then(between(p90, high, 0.9, 1.0))
        .otherwise(1.0)
    )


def _network(rows: pl.DataFrame, first_new: int) -> pl.DataFrame:
    """All captured transactions by slot: activity, fee percentiles, congestion."""
    picked = rows.select("seq", "slot", "block_ms", "failed", "arb", "prio", "tip", pl.lit(1, pl.Int64).alias("one"))
    ordered, s2 = add_window_key(picked.sort("slot", "seq"), [], "slot", RECENT_SLOTS)
    recent = window_width(RECENT_SLOTS, s2)
    new_slot = pl.col("slot") != pl.col("slot").shift(1)
    prev_slot = pl.when(new_slot).then(pl.col("slot").shift(1)).forward_fill()
    prev_block = pl.when(new_slot).then(pl.col("block_ms").shift(1)).forward_fill()
    gap = pl.col("slot") - prev_slot
    close_enough = prev_slot.is_not_null() & (gap <= RECENT_SLOTS)

    def quantiles(column: str) -> list[pl.Expr]:
        values = pl.col(column)
        return [
            values.rolling_min_by(KEY, window_size=recent, closed="left").alias(f"{column}_min"),
            values.rolling_quantile_by(KEY, recent, quantile=0.5, interpolation="linear", closed="left").alias(
                f"{column}_p50"
            ),
            values.rolling_quantile_by(KEY, recent, quantile=0.9, interpolation="linear", closed="left").alias(
                f"{column}_p90"
            ),
            values.rolling_max_by(KEY, window_size=recent, closed="left").alias(f"{column}_max"),
        ]

    windowed = (
        ordered.with_columns(
            window_sum(pl.col("one"), 1, s2).alias("slot_position"),
            window_sum(pl.col("one"), RECENT_SLOTS, s2).alias("recent_txs"),
            window_sum(pl.col("failed"), RECENT_SLOTS, s2).alias("recent_failed"),
            window_sum(pl.col("arb"), RECENT_SLOTS, s2).alias("recent_arbs"),
            *quantiles("prio"),
            *quantiles("tip"),
            pl.when(close_enough).then(gap).otherwise(RECENT_SLOTS).cast(pl.Float64).alias("slot_gap"),
            pl.when(close_enough).then((pl.col("block_ms") - prev_block) / gap).otherwise(400.0).alias("ms_per_slot"),
        )
        .filter(pl.col("seq") >= first_new)
        .sort("seq")
    )
    return windowed.select(
        "slot_position",
        "slot_gap",
        "ms_per_slot",
        (pl.col("recent_txs") / RECENT_SLOTS).alias("txs_per_slot"),
        (pl.col("recent_arbs") / RECENT_SLOTS).alias("arbs_per_slot"),
        pl.col("prio_p50").fill_null(0.0).alias("priority_fee_p50"),
        pl.col("prio_p90").fill_null(0.0).alias("priority_fee_p90"),
        _rank(pl.col("prio"), pl.col("prio_min"), pl.col("prio_p50"), pl.col("prio_p90"), pl.col("prio_max")).alias(
            "priority_fee_rank"
        ),
        pl.col("tip_p50").fill_null(0.0).alias("tip_p50"),
        pl.col("tip_p90").fill_null(0.0).alias("tip_p90"),
        _rank(pl.col("tip"), pl.col("tip_min"), pl.col("tip_p50"), pl.col("tip_p90"), pl.col("tip_max")).alias(
            "tip_rank"
        ),
        _safe_div(pl.col("recent_failed").cast(pl.Float64), pl.col("recent_txs").cast(pl.Float64)).alias(
            "congestion_score"
        ),
    )


def _bars(rows: pl.DataFrame, since_minute: int | None) -> pl.DataFrame:
    """Per (pair, minute) bars (quote volume, trades, last price) of rows from `since_minute` on."""
    if since_minute is not None:
        rows = rows.filter(pl.col("minute") >= since_minute)
    return rows.group_by("pair", "minute").agg(
        pl.col("qvol").sum().alias("volume"),
        pl.len().cast(pl.Int64).alias("trades"),
        pl.col("price").drop_nulls().last().alias("close"),
    )


def _bar_features(rows: pl.DataFrame, new_pairs: pl.Series, first_minute: int, state: RollingState) -> pl.DataFrame:
    """Minute-aligned 24 h / 48 h sums and one-minute indicators, each as of its bar's start."""
    active = pl.col("pair").is_in(new_pairs.implode())
    older = state.bars.filter(active & (pl.col("minute") >= first_minute - 2 * _DAY_MINUTES - 1))
    recent = _bars(rows.filter(active), state.bar_cutoff).select(_BAR_SCHEMA.keys())
    bars = pl.concat([older, recent]).sort("pair", "minute")
    keyed, s2 = add_window_key(bars, ["pair"], "minute", 2 * _DAY_MINUTES + 1)
    names = [f"_close_{k}" for k in range(1, _BOLLINGER_BARS + 1)]
    keyed = keyed.with_columns(
        pl.when(
            (pl.col("_gid").shift(k) == pl.col("_gid")) & (pl.col("minute").shift(k) >= pl.col("minute") - _DAY_MINUTES)
        )
        .then(pl.col("close").shift(k))
        .alias(name)
        for k, name in enumerate(names, start=1)
    )
    closes = [pl.col(name) for name in names]
    changes = [closes[k] - closes[k + 1] for k in range(_RSI_BARS)]
    gains = pl.sum_horizontal([pl.max_horizontal(c, 0.0) for c in changes])
    losses = pl.sum_horizontal([pl.max_horizontal(-c, 0.0) for c in changes])
    rsi_ready = pl.all_horizontal([c.is_not_null() for c in closes[: _RSI_BARS + 1]])
    bands_ready = pl.all_horizontal([c.is_not_null() for c in closes])
    day = window_width(_DAY_MINUTES + 1, s2)
    with_mean = keyed.with_columns(
        window_sum(pl.col("volume"), _DAY_MINUTES + 1, s2).alias("bar_volume_24h"),
        window_sum(pl.col("trades"), _DAY_MINUTES + 1, s2).alias("bar_trades_24h"),
        window_sum(pl.col("volume"), 2 * _DAY_MINUTES + 1, s2).alias("bar_volume_48h"),
        pl.col("minute").rolling_min_by(KEY, window_size=day, closed="left").alias("first_minute_24h"),
        pl.when(rsi_ready & (gains + losses > 0))
        .then(100.0 * gains / (gains + losses))
        .otherwise(50.0)
        .alias("rsi_14"),
        pl.when(bands_ready).then(pl.sum_horizontal(closes) / _BOLLINGER_BARS).alias("band_mean"),
    )
    spread = pl.sum_horizontal([(c - pl.col("band_mean")) ** 2 for c in closes]) / _BOLLINGER_BARS
    return with_mean.select(
        "pair",
        "minute",
        "bar_volume_24h",
        "bar_trades_24h",
        "bar_volume_48h",
        "first_minute_24h",
        "rsi_14",
        "band_mean",
        pl.when(bands_ready).then(spread.sqrt()).alias("band_sd"),
    )


def _il(log_return: pl.Expr) -> pl.Expr:
    """Impermanent loss 1 - 2 sqrt(k) / (1 + k) at k = exp(r), as (1 - sqrt k)^2 / (1 + k) to stay exact near k = 1."""
    root = (log_return / 2.0).exp()
    return (1.0 - root) ** 2 / (1.0 + root * root)


def _last_seen(seen: pl.DataFrame, rows: pl.DataFrame, column: str) -> pl.DataFrame:
    """Last event time per key after `rows`."""
    latest = rows.group_by(column).agg(pl.col("t").max().alias("last_t")).rename({column: "key"})
    return pl.concat([seen, latest]).group_by("key").agg(pl.col("last_t").max())


def _since(prev_t: pl.Expr) -> pl.Expr:
    capped = pl.min_horizontal((pl.col("t") - prev_t) / 1000.0, pl.lit(86_400.0))
    return pl.when(prev_t.is_not_null()).then(capped).otherwise(86_400.0)


class FeatureEngine:
    """Computes `FEATURES` for batches of stored transactions, remembering what it must.

    Rows are processed in point-in-time order: by `slot`, then input position. Feed
    batches in that order; a row whose slot is below one already processed is still
    computed (against the current state) but flagged `late`, and a rebuild (a fresh
    engine over the ordered history) gives it its proper values.
    """

    def __init__(self, state: RollingState | None = None) -> None:
        self.state = state if state is not None else RollingState.empty()

    @classmethod
    def from_history(cls, history: pl.DataFrame) -> FeatureEngine:
        """An engine warmed up on stored rows, as if it had processed all of them.

        The caller loads every stored transaction with `block_time` within
        `HISTORY_WINDOW` (48 h 15 min) of the newest one, ordered by slot and then
        ingestion time (ties keep the given order). Only the last minutes go through
        `process`; older rows are folded straight into the bars and last-seen times.
        """
        engine = cls()
        if history.height == 0:
            return engine
        ordered = history.sort("slot", maintain_order=True)
        own = _own_columns(ordered, engine.state)
        newest_minute = int(own.get_column("minute").max())  # type: ignore[arg-type]
        newest_slot = int(own.get_column("slot_i").max())  # type: ignore[arg-type]
        split = newest_minute - _WARMUP_MINUTES
        warm = (pl.col("minute") >= split) | (pl.col("slot_i") >= newest_slot - 2 * RECENT_SLOTS)
        early = own.filter(~warm)
        state = engine.state
        state.bars = _bars(own.filter(pl.col("minute") < split), None).select(_BAR_SCHEMA.keys())
        state.bar_cutoff = split
        if early.height:
            state.last_pair = _last_seen(state.last_pair, early, "pair")
            state.last_signer = _last_seen(state.last_signer, early, "signer")
            state.max_t = int(early.get_column("t").max())  # type: ignore[arg-type]
            state.max_slot = int(early.get_column("slot_i").max())  # type: ignore[arg-type]
            state.next_seq = early.height
        engine.process(ordered.slice(early.height))
        return engine

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        """The batch, rows in their input order, with every feature column and `late` added."""
        state = self.state
        own = _route_and_time(_own_columns(batch, state))
        first_new = state.next_seq
        new_rows = own.select(
            pl.col("slot_i").alias("slot") if name == "slot" else pl.col(name)
            for name in _TAIL_SCHEMA
            if name not in ("r", "spread")
        ).with_columns(pl.lit(None, pl.Float64).alias("r"), pl.lit(None, pl.Float64).alias("spread"))
        rows = pl.concat([state.tail, new_rows.select(_TAIL_SCHEMA.keys())])
        pair, processed = _pair_windows(rows, first_new)
        parts = [
            own,
            pair.drop("seq"),
            _signer_windows(rows, first_new),
            _slot_counts(rows, first_new, ["pool"], {"pool_same_slot": 1}),
            _slot_counts(rows, first_new, ["pool", "signer"], {"own_same_slot": 1}),
            _slot_counts(rows, first_new, ["pair"], {"pair_same_slot": 1, "pair_10_slots": _COMPETITION_SLOTS}),
            _slot_counts(
                rows, first_new, ["pair", "signer"], {"own_pair_same_slot": 1, "own_pair_10_slots": _COMPETITION_SLOTS}
            ),
            _network(rows, first_new),
        ]
        first_minute = int(own.get_column("minute").min()) if own.height else 0  # type: ignore[arg-type]
        bars = _bar_features(rows, own.get_column("pair").unique(), first_minute, state)
        joined = (
            pl.concat(parts, how="horizontal")
            .join(bars, on=["pair", "minute"], how="left", maintain_order="left")
            .join(
                state.last_pair.rename({"key": "pair", "last_t": "seen_pair_t"}),
                on="pair",
                how="left",
                maintain_order="left",
            )
            .join(
                state.last_signer.rename({"key": "signer", "last_t": "seen_signer_t"}),
                on="signer",
                how="left",
                maintain_order="left",
            )
        )
        features = joined.select("_row", *_feature_expressions()).sort("_row").drop("_row")
        self._advance(own, processed)
        return pl.concat([batch, features], how="horizontal")

    def _advance(self, own: pl.DataFrame, processed: pl.DataFrame) -> None:
        """Fold the batch into the state and drop what no later window can reach."""
        state = self.state
        if own.height == 0:
            return
        max_t = int(own.get_column("t").max())  # type: ignore[arg-type]
        batch_max_slot = int(own.get_column("slot_i").max())  # type: ignore[arg-type]
        max_slot = batch_max_slot if state.max_slot is None else max(state.max_slot, batch_max_slot)
        cutoff = max_t // _M1 - _TAIL_MINUTES
        folded = _bars(processed.filter(pl.col("minute") < cutoff), state.bar_cutoff).select(_BAR_SCHEMA.keys())
        state.bars = pl.concat([state.bars, folded]).filter(pl.col("minute") >= max_t // _M1 - _BAR_KEEP_MINUTES)
        state.tail = processed.filter((pl.col("minute") >= cutoff) | (pl.col("slot") >= max_slot - RECENT_SLOTS))
        within_day = pl.col("last_t") > max_t - _DAY_MS
        state.last_pair = _last_seen(state.last_pair, own, "pair").filter(within_day)
        state.last_signer = _last_seen(state.last_signer, own, "signer").filter(within_day)
        state.max_t, state.max_slot, state.bar_cutoff = max_t, max_slot, cutoff
        state.next_seq += own.height


def _feature_expressions() -> list[pl.Expr]:
    """The registered features from the joined intermediate columns, in registry order."""
    volume_24h = pl.col("bar_volume_24h").fill_null(0.0) + pl.col("minute_volume")
    prior_24h = pl.col("bar_volume_48h").fill_null(0.0) - pl.col("bar_volume_24h").fill_null(0.0)
    mean, sd = pl.col("band_mean"), pl.col("band_sd")
    own_price = pl.col("price")
    band_ready = mean.is_not_null() & (sd > 0) & own_price.is_not_null()
    vwap_1m = pl.when(pl.col("vq_1m") > 0).then(pl.col("pv_1m") / pl.col("vq_1m")).otherwise(own_price)
    vwap_5m = pl.when(pl.col("vq_5m") > 0).then(pl.col("pv_5m") / pl.col("vq_5m")).otherwise(own_price)
    first_minute = pl.min_horizontal(pl.col("first_minute_24h"), pl.col("minute"))
    computed: dict[str, pl.Expr] = {
        "price": pl.col("price_feature"),
        "last_return": pl.col("r"),
        "spread_now_bps": pl.col("spread"),
        "spread_5s_bps": _safe_div(pl.col("spread_sum_5s"), pl.col("c5s").cast(pl.Float64)),
        "spread_1m_bps": _safe_div(pl.col("spread_sum_1m"), pl.col("trades_1m").cast(pl.Float64)),
        "vwap_1m": vwap_1m.fill_null(0.0),
        "vwap_5m": vwap_5m.fill_null(0.0),
        "vwap_deviation_bps": pl.when(own_price.is_not_null() & (vwap_1m > 0))
        .then((own_price - vwap_1m) / vwap_1m * 1e4)
        .otherwise(0.0),
        "volatility_5s": pl.col("r2_5s").sqrt(),
        "volatility_1m": pl.col("r2_1m").sqrt(),
        "volatility_5m": pl.col("r2_5m").sqrt(),
        "rsi_14": pl.col("rsi_14").fill_null(50.0),
        "bollinger_pct_b": pl.when(band_ready).then((own_price - (mean - 2 * sd)) / (4 * sd)).otherwise(0.5),
        "bollinger_bandwidth": pl.when(band_ready & (mean > 0)).then(4 * sd / mean).otherwise(0.0),
        "price_zscore": pl.when(band_ready).then((own_price - mean) / sd).otherwise(0.0),
        "volume_24h": volume_24h,
        "trades_24h": pl.col("bar_trades_24h").fill_null(0) + pl.col("minute_trades"),
        "volume_change_24h": pl.when(prior_24h > 0).then(volume_24h / prior_24h - 1.0).otherwise(0.0),
        "avg_trade_size_5m": _safe_div(pl.col("volume_5m"), pl.col("trades_5m").cast(pl.Float64)),
        "order_flow_imbalance_1m": _safe_div(pl.col("flow_1m"), pl.col("volume_1m")),
        "order_flow_imbalance_5m": _safe_div(pl.col("flow_5m"), pl.col("volume_5m")),
        "sandwich_exposure": pl.col("pool_same_slot") - pl.col("own_same_slot"),
        "il_estimate_1m": _il(pl.col("return_1m")),
        "il_estimate_5m": _il(pl.col("return_5m")),
        "pair_age_s": pl.min_horizontal((pl.col("t") - first_minute * _M1) / 1000.0, pl.lit(86_400.0)),
        "pair_failure_rate_5m": _safe_div(pl.col("failed_5m").cast(pl.Float64), pl.col("trades_5m").cast(pl.Float64)),
        "competitors_same_slot": pl.col("pair_same_slot") - pl.col("own_pair_same_slot"),
        "competitors_10_slots": pl.col("pair_10_slots") - pl.col("own_pair_10_slots"),
        "signer_success_rate_5m": (pl.col("signer_successes") + 1.0) / (pl.col("signer_tx_count_5m") + 2.0),
        "time_since_pair_prev_s": _since(pl.coalesce(pl.col("prev_pair_t"), pl.col("seen_pair_t"))),
        "time_since_signer_prev_s": _since(pl.coalesce(pl.col("prev_signer_t"), pl.col("seen_signer_t"))),
    }
    expressions = []
    for feature in (*FEATURES, LATE_COLUMN):
        value = computed.get(feature.name, pl.col(feature.name))
        if feature.dtype == "Float64":
            value = value.cast(pl.Float64).fill_nan(0.0).fill_null(0.0)
        expressions.append(value.cast(feature.polars_dtype).alias(feature.name))
    return expressions
