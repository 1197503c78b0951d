"""The feature registry: every feature column declared once, with what it means.

The table's feature columns (migration 002), the export schema, `docs/features.md` and
`GET /features` are all generated from `FEATURES`; the engine's output is tested
against it, so a feature cannot exist without being documented here.

Conventions every definition relies on:
- "earlier" means strictly before in point-in-time order: by `slot`, then position in
  the input. Same-slot windows use only the transactions earlier in the same slot.
  A `late` row is the exception: it is processed when it arrives, so until the engine
  restarts (its state reloaded in slot order) the rows after it count it as coming after
  the rows already processed, at the event time of its arrival.
- "event time" is the running maximum of `block_time` in that order, so windows are
  well defined even when block times step backwards.
- A "pair" is the first leg's two mints, oriented base/quote with quote = wrapped SOL,
  else USDC/USDT, else the mint that sorts first; its "price" is the first leg's implied
  price in quote per base and its "trade" is the first leg of each earlier transaction.
- A window "over 1 m" holds earlier transactions with event time in (t - 1 m, t].
- Values with nothing to measure take the documented fill, so every column is non-null.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec
import polars as pl

FeatureGroup = Literal["route", "price", "volume", "network", "risk", "time"]
FeatureDtype = Literal["Float64", "UInt32", "Bool", "String"]

POLARS_DTYPES: Final[dict[str, pl.DataType]] = {
    "Float64": pl.Float64(),
    "UInt32": pl.UInt32(),
    "Bool": pl.Boolean(),
    "String": pl.String(),
}
CLICKHOUSE_TYPES: Final[dict[str, str]] = {
    "Float64": "Float64",
    "UInt32": "UInt32",
    "Bool": "Bool",
    "String": "LowCardinality(String)",
}


class Feature(msgspec.Struct, frozen=True):
    """One registered column: its name, group, type, unit, look-back window and meaning."""

    name: str
    group: str
    dtype: FeatureDtype
    unit: str
    window: str
    definition: str

    @property
    def polars_dtype(self) -> pl.DataType:
        """The polars dtype the engine produces for this column."""
        return POLARS_DTYPES[self.dtype]

    @property
    def clickhouse_type(self) -> str:
        """The ClickHouse column type the migration declares."""
        return CLICKHOUSE_TYPES[self.dtype]


def _f(name: str, group: FeatureGroup, dtype: FeatureDtype, unit: str, window: str, definition: str) -> Feature:
    return Feature(name, group, dtype, unit, window, definition)


FEATURES: Final[tuple[Feature, ...]] = (
    # route & economics: the transaction's own fields, no look-back
    _f("hop_count", "route", "UInt32", "legs", "-", "Number of legs (swaps) in the route."),
    _f("dex_count", "route", "UInt32", "DEXes", "-", "Number of distinct DEXes the route touches."),
    _f("token_count", "route", "UInt32", "mints", "-", "Number of distinct mints in the route."),
    _f("is_circular", "route", "Bool", "flag", "-", "Route starts and ends in the same mint."),
    _f("starts_in_wsol", "route", "Bool", "flag", "-", "Route starts in wrapped SOL."),
    _f("in_bundle", "route", "Bool", "flag", "-", "Transaction was sent in a Jito bundle."),
    _f(
        "input_amount",
        "route",
        "Float64",
        "start token",
        "-",
        "First leg's input amount in UI units of the start token.",
    ),
    _f("output_amount", "route", "Float64", "end token", "-", "Last leg's output amount in UI units of the end token."),
    _f(
        "revenue_known",
        "route",
        "Bool",
        "flag",
        "-",
        "Gross revenue in SOL is known (it is not for non-circular routes).",
    ),
    _f("revenue_sol", "route", "Float64", "SOL", "-", "Gross revenue in SOL; 0 when unknown."),
    _f("fee_sol", "route", "Float64", "SOL", "-", "Base fee."),
    _f("priority_fee_sol", "route", "Float64", "SOL", "-", "Priority fee."),
    _f("tip_sol", "route", "Float64", "SOL", "-", "Jito tip."),
    _f(
        "cost_sol",
        "route",
        "Float64",
        "SOL",
        "-",
        "Total cost: fee + priority fee + tip + other costs the signer paid (third-party fees).",
    ),
    _f(
        "profit_sol",
        "route",
        "Float64",
        "SOL",
        "-",
        "Net profit (gross revenue minus total cost); 0 when revenue is unknown.",
    ),
    _f(
        "roi_bps",
        "route",
        "Float64",
        "bps",
        "-",
        "Net profit over the input valued in SOL, x 1e4; 0 when either is unknown.",
    ),
    _f("tip_share", "route", "Float64", "ratio", "-", "Tip over gross revenue in SOL; 0 when revenue <= 0."),
    _f("compute_units", "route", "Float64", "CU", "-", "Compute units consumed; 0 when unknown."),
    _f(
        "cu_utilisation",
        "route",
        "Float64",
        "ratio",
        "-",
        "Compute units consumed over the requested limit; 0 when unknown.",
    ),
    _f(
        "priority_fee_per_cu",
        "route",
        "Float64",
        "lamports/CU",
        "-",
        "Priority fee over compute units consumed; 0 when unknown.",
    ),
    _f(
        "profit_per_cu",
        "route",
        "Float64",
        "lamports/CU",
        "-",
        "Net profit over compute units consumed; 0 when unknown.",
    ),
    # price: per pair, earlier transactions only (the transaction's own price is its own data)
    _f("price", "price", "Float64", "quote/base", "-", "The transaction's own first-leg price; 0 when an amount is 0."),
    _f(
        "last_return",
        "price",
        "Float64",
        "log",
        "5 m",
        "Log return from the pair's previous trade (if within 5 m) to this one; 0 otherwise.",
    ),
    _f(
        "spread_now_bps",
        "price",
        "Float64",
        "bps",
        "1 m",
        "Cross-DEX spread: (max - min) / min of each DEX's latest earlier price on the pair within 1 m; 0 with fewer than two DEXes.",
    ),
    _f(
        "spread_5s_bps",
        "price",
        "Float64",
        "bps",
        "5 s",
        "Mean `spread_now_bps` of the pair's earlier trades over 5 s; 0 when none.",
    ),
    _f(
        "spread_1m_bps",
        "price",
        "Float64",
        "bps",
        "1 m",
        "Mean `spread_now_bps` of the pair's earlier trades over 1 m; 0 when none.",
    ),
    _f(
        "vwap_1m",
        "price",
        "Float64",
        "quote/base",
        "1 m",
        "Volume-weighted price of the pair's earlier trades over 1 m; own price when none.",
    ),
    _f(
        "vwap_5m",
        "price",
        "Float64",
        "quote/base",
        "5 m",
        "Volume-weighted price of the pair's earlier trades over 5 m; own price when none.",
    ),
    _f(
        "vwap_deviation_bps",
        "price",
        "Float64",
        "bps",
        "1 m",
        "(own price - vwap_1m) / vwap_1m x 1e4; 0 when the price is unknown.",
    ),
    _f(
        "volatility_5s",
        "price",
        "Float64",
        "log",
        "5 s",
        "Realised volatility: sqrt of the sum of squared `last_return` of earlier trades over 5 s.",
    ),
    _f("volatility_1m", "price", "Float64", "log", "1 m", "Realised volatility over 1 m (as volatility_5s)."),
    _f("volatility_5m", "price", "Float64", "log", "5 m", "Realised volatility over 5 m (as volatility_5s)."),
    _f("return_1m", "price", "Float64", "log", "1 m", "Sum of `last_return` of the pair's earlier trades over 1 m."),
    _f("return_5m", "price", "Float64", "log", "5 m", "Sum of `last_return` of the pair's earlier trades over 5 m."),
    _f(
        "rsi_14",
        "price",
        "Float64",
        "0-100",
        "14 bars",
        "RSI(14), simple averages, on the closes of the pair's last 15 one-minute bars before this minute (bars with trades, within 24 h); 50 when fewer.",
    ),
    _f(
        "bollinger_pct_b",
        "price",
        "Float64",
        "ratio",
        "20 bars",
        "(own price - lower) / (upper - lower), bands = mean +/- 2 sd of the last 20 one-minute closes before this minute (within 24 h); 0.5 when unavailable.",
    ),
    _f(
        "bollinger_bandwidth",
        "price",
        "Float64",
        "ratio",
        "20 bars",
        "(upper - lower) / mean of the same Bollinger bands; 0 when unavailable.",
    ),
    _f(
        "price_zscore",
        "price",
        "Float64",
        "sd",
        "20 bars",
        "(own price - mean) / sd of the last 20 one-minute closes; 0 when unavailable or sd = 0.",
    ),
    # volume & liquidity
    _f("trade_size", "volume", "Float64", "quote", "-", "Own first-leg size in quote units."),
    _f("volume_1m", "volume", "Float64", "quote", "1 m", "Pair volume (quote units) of earlier trades over 1 m."),
    _f("volume_5m", "volume", "Float64", "quote", "5 m", "Pair volume (quote units) of earlier trades over 5 m."),
    _f(
        "volume_24h",
        "volume",
        "Float64",
        "quote",
        "24 h",
        "Pair volume over 24 h aligned to minutes: the 1,440 whole minutes before this one plus earlier trades in this minute.",
    ),
    _f("trades_1m", "volume", "UInt32", "trades", "1 m", "Pair trade count of earlier trades over 1 m."),
    _f("trades_5m", "volume", "UInt32", "trades", "5 m", "Pair trade count of earlier trades over 5 m."),
    _f("trades_24h", "volume", "UInt32", "trades", "24 h", "Pair trade count over 24 h, minute-aligned as volume_24h."),
    _f(
        "volume_change_24h",
        "volume",
        "Float64",
        "ratio",
        "48 h",
        "volume_24h over the pair's volume in the 1,440 minutes before that, minus 1; 0 when that is 0.",
    ),
    _f("avg_trade_size_5m", "volume", "Float64", "quote", "5 m", "volume_5m / trades_5m; 0 when no trades."),
    _f(
        "trade_size_percentile",
        "volume",
        "Float64",
        "ratio",
        "10 trades",
        "Share of the pair's last 10 earlier trades (within 5 m) smaller than this one; 0.5 when none.",
    ),
    _f(
        "price_impact_bps",
        "volume",
        "Float64",
        "bps",
        "-",
        "Constant-product impact of the first leg: amount_in / (reserve_in + amount_in) x 1e4; 0 without reserves.",
    ),
    _f(
        "liquidity_depth",
        "volume",
        "Float64",
        "quote",
        "-",
        "First-leg pool reserve on the quote side, UI units; 0 without reserves.",
    ),
    _f(
        "order_flow_imbalance_1m",
        "volume",
        "Float64",
        "ratio",
        "1 m",
        "(base bought - base sold) in quote volume over total, earlier trades over 1 m; 0 when none.",
    ),
    _f("order_flow_imbalance_5m", "volume", "Float64", "ratio", "5 m", "As order_flow_imbalance_1m over 5 m."),
    # network: all captured transactions, by slot
    _f("slot_position", "network", "UInt32", "transactions", "slot", "Earlier captured transactions in the same slot."),
    _f(
        "txs_per_slot",
        "network",
        "Float64",
        "transactions/slot",
        "25 slots",
        "Earlier captured transactions in the last 25 slots (own slot included), divided by 25.",
    ),
    _f(
        "arbs_per_slot",
        "network",
        "Float64",
        "transactions/slot",
        "25 slots",
        "As txs_per_slot, counting only successful ones with net profit > 0.",
    ),
    _f(
        "priority_fee_p50",
        "network",
        "Float64",
        "lamports",
        "25 slots",
        "Median priority fee of earlier transactions in the last 25 slots; 0 when none.",
    ),
    _f(
        "priority_fee_p90",
        "network",
        "Float64",
        "lamports",
        "25 slots",
        "90th percentile priority fee over the same window; 0 when none.",
    ),
    _f(
        "priority_fee_rank",
        "network",
        "Float64",
        "ratio",
        "25 slots",
        "Own priority fee's rank in that window, interpolated linearly through min=0, p50=0.5, p90=0.9, max=1; 0.5 when none.",
    ),
    _f(
        "tip_p50",
        "network",
        "Float64",
        "lamports",
        "25 slots",
        "Median Jito tip of earlier transactions in the last 25 slots; 0 when none.",
    ),
    _f(
        "tip_p90",
        "network",
        "Float64",
        "lamports",
        "25 slots",
        "90th percentile Jito tip over the same window; 0 when none.",
    ),
    _f(
        "tip_rank",
        "network",
        "Float64",
        "ratio",
        "25 slots",
        "Own tip's rank in that window, interpolated as priority_fee_rank; 0.5 when none.",
    ),
    _f(
        "slot_gap",
        "network",
        "Float64",
        "slots",
        "25 slots",
        "Slots since the previous captured slot; 25 when none within 25 slots.",
    ),
    _f(
        "ms_per_slot",
        "network",
        "Float64",
        "ms",
        "25 slots",
        "Block-time delta to the previous captured slot over slot_gap; 400 when none within 25 slots.",
    ),
    _f(
        "congestion_score",
        "network",
        "Float64",
        "ratio",
        "25 slots",
        "Failure rate of earlier transactions in the last 25 slots; 0 when none.",
    ),
    # risk inputs
    _f(
        "sandwich_exposure",
        "risk",
        "UInt32",
        "transactions",
        "slot",
        "Earlier transactions of other signers on the same first-leg pool in the same slot.",
    ),
    _f(
        "il_estimate_1m",
        "risk",
        "Float64",
        "ratio",
        "1 m",
        "Impermanent loss 1 - 2 sqrt(k) / (1 + k) with k = exp(return_1m).",
    ),
    _f(
        "il_estimate_5m",
        "risk",
        "Float64",
        "ratio",
        "5 m",
        "Impermanent loss as il_estimate_1m with k = exp(return_5m).",
    ),
    _f(
        "pair_age_s",
        "risk",
        "Float64",
        "s",
        "24 h",
        "Seconds since the start of the pair's first minute with trades in the last 1,440 minutes (own minute if none), capped at 86,400.",
    ),
    _f(
        "pair_failure_rate_5m",
        "risk",
        "Float64",
        "ratio",
        "5 m",
        "Failed share of the pair's earlier trades over 5 m; 0 when none.",
    ),
    _f(
        "competitors_same_slot",
        "risk",
        "UInt32",
        "transactions",
        "slot",
        "Earlier transactions of other signers on the same pair in the same slot.",
    ),
    _f(
        "competitors_10_slots",
        "risk",
        "UInt32",
        "transactions",
        "10 slots",
        "Earlier transactions of other signers on the same pair in the last 10 slots (own slot included).",
    ),
    _f(
        "signer_success_rate_5m",
        "risk",
        "Float64",
        "ratio",
        "5 m",
        "(successes + 1) / (transactions + 2) of the signer's earlier transactions over 5 m.",
    ),
    _f("signer_tx_count_5m", "risk", "UInt32", "transactions", "5 m", "The signer's earlier transactions over 5 m."),
    # time
    _f("hour_sin", "time", "Float64", "-", "-", "sin(2 pi x time of day / 24 h) of block_time (UTC)."),
    _f("hour_cos", "time", "Float64", "-", "-", "cos(2 pi x time of day / 24 h) of block_time (UTC)."),
    _f("dow_sin", "time", "Float64", "-", "-", "sin(2 pi x (weekday + time of day) / 7) of block_time, Monday = 0."),
    _f("dow_cos", "time", "Float64", "-", "-", "cos(2 pi x (weekday + time of day) / 7) of block_time, Monday = 0."),
    _f("is_weekend", "time", "Bool", "flag", "-", "block_time falls on Saturday or Sunday (UTC)."),
    _f(
        "time_since_pair_prev_s",
        "time",
        "Float64",
        "s",
        "24 h",
        "Event time since the pair's previous transaction; 86,400 when none within 24 h.",
    ),
    _f(
        "time_since_signer_prev_s",
        "time",
        "Float64",
        "s",
        "24 h",
        "Event time since the signer's previous transaction; 86,400 when none within 24 h.",
    ),
)

LATE_COLUMN: Final = Feature(
    "late",
    "quality",
    "Bool",
    "flag",
    "-",
    "Arrived after a higher slot had been processed: its features saw later data, and the rows after it (not flagged) "
    "count it at its arrival, not its slot, until the next start reloads the history in slot order. Stored values "
    "are never recomputed; a fresh `FeatureEngine` over the rows in slot order gives the in-order ones.",
)

FEATURE_NAMES: Final[tuple[str, ...]] = tuple(f.name for f in FEATURES)


def feature_schema() -> dict[str, pl.DataType]:
    """Polars schema of the columns `FeatureEngine.process` adds, in order (for exports)."""
    return {f.name: f.polars_dtype for f in (*FEATURES, LATE_COLUMN)}


def feature_columns_sql() -> list[str]:
    """ClickHouse column definitions (`name Type`) of the feature columns and the late flag."""
    return [f"{f.name} {f.clickhouse_type}" for f in (*FEATURES, LATE_COLUMN)]
