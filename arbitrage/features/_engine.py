"""The feature pipeline: point-in-time features on columnar batches with bounded state.

Each batch is computed over (state tail + batch) and only the new rows are kept, so any
batch boundaries give the values one big backfill gives. The state between batches is
bounded by time, not by history length:
- the raw rows of the last 5 whole minutes and of the last 25 slots (the longest raw
  windows), with the per-row values later rows look back at (`r`, `spread`);
- per (pair, minute) bars of the last 48 h for the minute-aligned 24 h windows and the
  one-minute indicators (RSI, Bollinger);
- the last event time of each pair and signer seen in the last 24 h.

One prebuilt polars plan computes everything a row gives alone; every window runs in
numpy over integer codes of the strings (see `_windows`): a stable sort per grouping,
window starts by `searchsorted`, counts from positions, sums from prefix sums, and the
fee quantiles from one sort per window length.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
from datetime import timedelta
from typing import Any, Final, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt
import polars as pl

from arbitrage.features._registry import FEATURES, LATE_COLUMN
from arbitrage.features._windows import (
    Bools,
    Floats,
    GroupSums,
    Ints,
    SortedGroups,
    prefix_sums,
    window_quantiles,
    window_sums,
)
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

_Scalar = TypeVar("_Scalar", bound=np.generic)

HISTORY_WINDOW: Final = timedelta(hours=48, minutes=15)
"""How far back before the newest stored transaction `FeatureEngine.from_history` needs rows."""

HISTORY_COLUMNS: Final = (
    "slot",
    "block_time",
    "signer",
    "success",
    "fee_lamports",
    "priority_fee_lamports",
    "jito_tip_lamports",
    "compute_units_consumed",
    "compute_unit_limit",
    "bundle_id",
    "legs",
    "route",
    "dexes",
    "hops",
    "circular",
    "start_token",
    "gross_revenue_sol",
    "total_cost_sol",
    "net_profit_sol",
)
"""The stored columns `process` reads (`_row_stages`); of `legs` only the first and the last leg.
What a restart loads for `from_history`, so keep it in step with `_row_stages`."""

_CODE_SPACES: Final = itertools.count()
"""Names for string-code mappings: one per call, and one per state for each of `_PERSISTENT_KEYS`.

Polars drops a mapping once nothing uses it."""

_TAIL_SCHEMA: Final[dict[str, pl.DataType]] = {  # pair, dex, pool: a state's `key_types` instead
    "seq": pl.Int64(),
    "slot": pl.Int64(),
    "t": pl.Int64(),
    "minute": pl.Int64(),
    "block_ms": pl.Int64(),
    "pair": pl.String(),
    "dex": pl.String(),
    "pool": pl.String(),
    "signer": pl.String(),
    "failed": pl.Float64(),
    "arb": pl.Float64(),
    "price": pl.Float64(),
    "qvol": pl.Float64(),
    "side_qvol": pl.Float64(),
    "prio": pl.Float64(),
    "tip": pl.Float64(),
    "r": pl.Float64(),
    "spread": pl.Float64(),
}
_STRINGS: Final = ("pair", "dex", "pool", "signer")
_PERSISTENT_KEYS: Final = ("pair", "dex", "pool")
_NUMBERS: Final = tuple(name for name in _TAIL_SCHEMA if name not in _STRINGS)
_FLOAT_INPUTS: Final = {
    "failed": "failed",
    "arb": "arb",
    "window_price": "price",
    "qvol": "qvol",
    "side_qvol": "side_qvol",
    "prio": "prio",
    "tip": "tip",
}
"""`_row_frame` columns the windows read, by their name among the rows' columns."""
_BAR_SCHEMA: Final[dict[str, pl.DataType]] = {
    "pair": pl.String(),
    "minute": pl.Int64(),
    "volume": pl.Float64(),
    "trades": pl.Int64(),
    "close": pl.Float64(),
}
_ROW_FEATURES: Final = (
    "hop_count",
    "dex_count",
    "token_count",
    "is_circular",
    "starts_in_wsol",
    "in_bundle",
    "input_amount",
    "output_amount",
    "revenue_known",
    "revenue_sol",
    "fee_sol",
    "priority_fee_sol",
    "tip_sol",
    "cost_sol",
    "profit_sol",
    "roi_bps",
    "tip_share",
    "compute_units",
    "cu_utilisation",
    "priority_fee_per_cu",
    "profit_per_cu",
    "price",
    "trade_size",
    "price_impact_bps",
    "liquidity_depth",
)


class RollingState(msgspec.Struct):
    """What the engine remembers between batches; see the module docstring for its bounds.

    `last_pair` and `last_signer` map a key to its last event time (ms); entries older
    than a day are dropped in bulk once the map has doubled since the last drop (a
    day-old entry gives the same feature value as a missing one).
    """

    tail: pl.DataFrame
    bars: pl.DataFrame
    last_pair: dict[str, int]
    last_signer: dict[str, int]
    key_types: dict[str, pl.Categorical]
    """Pairs, DEXes and pools keep one mapping to codes for the state's life, so the tail and
    the stored bars need no re-encoding; signers (an unbounded set) are encoded per batch."""
    max_t: int | None = None
    max_slot: int | None = None
    bar_cutoff: int | None = None
    next_seq: int = 0
    seen_pruned_at: int = 0

    @classmethod
    def empty(cls) -> RollingState:
        """State before any transaction."""
        key_types = {
            name: pl.Categorical(pl.Categories(f"arbitrage.features.{name}.{next(_CODE_SPACES)}"))
            for name in _PERSISTENT_KEYS
        }
        return cls(
            tail=pl.DataFrame(schema={**_TAIL_SCHEMA, **key_types}),
            bars=pl.DataFrame(schema=_BAR_SCHEMA | {"pair": key_types["pair"]}),
            last_pair={},
            last_signer={},
            key_types=key_types,
        )


def _ui(amount: pl.Expr, decimals: pl.Expr) -> pl.Expr:
    return amount.cast(pl.Float64) / pl.lit(10.0).pow(decimals)


def _decimals(mint: pl.Expr, given: pl.Expr) -> pl.Expr:
    return given.cast(pl.Int64).fill_null(mint.replace_strict(KNOWN_DECIMALS, default=6, return_dtype=pl.Int64))


def _quote_rank(mint: pl.Expr) -> pl.Expr:
    return pl.when(mint == WSOL_MINT).then(0).when(mint.is_in(_STABLES)).then(1).otherwise(2)


def _registered(name: str, value: pl.Expr) -> pl.Expr:
    """`value` as the registry declares `name`: its dtype, Float64 with NaN and null as 0."""
    feature = _REGISTRY[name]
    if feature.dtype == "Float64":
        value = value.cast(pl.Float64).fill_nan(0.0).fill_null(0.0)
    return value.cast(feature.polars_dtype).alias(name)


@functools.cache
def _row_stages() -> tuple[list[str | pl.Expr], list[pl.Expr], list[pl.Expr], list[pl.Expr]]:
    """The expressions of `_row_frame`, stage by stage (built once: building them costs more than running them)."""
    first, last = pl.col("legs").list.first().struct, pl.col("legs").list.last().struct
    legs: list[str | pl.Expr] = [
        "slot",
        "block_time",
        "signer",
        "success",
        "fee_lamports",
        "compute_units_consumed",
        "compute_unit_limit",
        "net_profit_sol",
        "gross_revenue_sol",
        "total_cost_sol",
        "start_token",
        "circular",
        "hops",
        pl.col("bundle_id").is_not_null().alias("_in_bundle"),
        pl.col("dexes").list.n_unique().alias("_dex_count"),
        pl.col("route").list.n_unique().alias("_token_count"),
        first.field("dex").alias("_dex"),
        first.field("pool").alias("_pool"),
        first.field("token_in").alias("_token_in"),
        first.field("token_out").alias("_token_out"),
        first.field("amount_in").alias("_amount_in"),
        first.field("amount_out").alias("_amount_out"),
        first.field("reserve_in").alias("_reserve_in"),
        first.field("reserve_out").alias("_reserve_out"),
        first.field("decimals_in").alias("_decimals_in"),
        first.field("decimals_out").alias("_decimals_out"),
        last.field("token_out").alias("_last_token_out"),
        last.field("amount_out").alias("_last_amount_out"),
        last.field("decimals_out").alias("_last_decimals_out"),
        pl.col("block_time").dt.epoch("ms").alias("_block_ms"),
        pl.col("priority_fee_lamports").cast(pl.Float64).alias("_prio"),
        pl.col("jito_tip_lamports").cast(pl.Float64).alias("_tip"),
    ]
    token_in, token_out = pl.col("_token_in"), pl.col("_token_out")
    amounts = [
        _ui(pl.col("_last_amount_out"), pl.col("_last_decimals_out")).alias("_output_amount"),
        _ui(pl.col("_amount_in"), pl.col("_decimals_in")).alias("_ui_in"),
        _ui(pl.col("_amount_out"), pl.col("_decimals_out")).alias("_ui_out"),
        _ui(pl.col("_reserve_in"), pl.col("_decimals_in")).alias("_res_in"),
        _ui(pl.col("_reserve_out"), pl.col("_decimals_out")).alias("_res_out"),
        (
            (_quote_rank(token_out) < _quote_rank(token_in))
            | ((_quote_rank(token_out) == _quote_rank(token_in)) & (token_out < token_in))
        ).alias("_q_out"),
    ]
    q_out, ui_in, ui_out = pl.col("_q_out"), pl.col("_ui_in"), pl.col("_ui_out")
    raw_price = pl.when(q_out).then(ui_out / ui_in).otherwise(ui_in / ui_out)
    priced = [
        pl.when(raw_price.is_finite() & (raw_price > 0)).then(raw_price).alias("window_price"),
        pl.when(q_out).then(ui_out).otherwise(ui_in).alias("qvol"),
    ]
    price, qvol, res_in = pl.col("window_price"), pl.col("qvol"), pl.col("_res_in")
    prio, tip = pl.col("_prio"), pl.col("_tip")
    output_amount = pl.col("_output_amount")
    cu = pl.col("compute_units_consumed").cast(pl.Float64)
    limit = pl.col("compute_unit_limit").cast(pl.Float64)
    profit = pl.col("net_profit_sol")
    revenue = pl.col("gross_revenue_sol")
    gain_in_start = output_amount - ui_in
    input_sol = (
        pl.when(pl.col("start_token") == WSOL_MINT)
        .then(ui_in)
        .when(pl.col("circular") & (gain_in_start != 0))
        .then(revenue * ui_in / gain_in_start)
    )
    row_features = {
        "hop_count": pl.col("hops"),
        "dex_count": pl.col("_dex_count"),
        "token_count": pl.col("_token_count"),
        "is_circular": pl.col("circular"),
        "starts_in_wsol": pl.col("start_token") == WSOL_MINT,
        "in_bundle": pl.col("_in_bundle"),
        "input_amount": ui_in.fill_nan(0.0),
        "output_amount": output_amount,
        "revenue_known": revenue.is_not_null(),
        "revenue_sol": revenue.fill_null(0.0),
        "fee_sol": pl.col("fee_lamports").cast(pl.Float64) / LAMPORTS_PER_SOL,
        "priority_fee_sol": prio / LAMPORTS_PER_SOL,
        "tip_sol": tip / LAMPORTS_PER_SOL,
        "cost_sol": pl.col("total_cost_sol"),
        "profit_sol": profit.fill_null(0.0),
        "roi_bps": pl.when(input_sol > 0).then(profit / input_sol * 1e4).otherwise(0.0).fill_null(0.0),
        "tip_share": pl.when(revenue > 0).then(tip / LAMPORTS_PER_SOL / revenue).otherwise(0.0).fill_null(0.0),
        "compute_units": cu.fill_null(0.0),
        "cu_utilisation": pl.when(limit > 0).then(cu / limit).otherwise(0.0).fill_null(0.0),
        "priority_fee_per_cu": pl.when(cu > 0).then(prio / cu).otherwise(0.0).fill_null(0.0),
        "profit_per_cu": pl.when(cu > 0).then(profit * LAMPORTS_PER_SOL / cu).otherwise(0.0).fill_null(0.0),
        "price": price.fill_null(0.0),
        "trade_size": qvol.fill_nan(0.0),
        "price_impact_bps": pl.when(res_in.is_not_null() & ((res_in + ui_in) > 0))
        .then(ui_in / (res_in + ui_in) * 1e4)
        .otherwise(0.0),
        "liquidity_depth": pl.when(q_out).then(pl.col("_res_out")).otherwise(res_in).fill_null(0.0),
    }
    outputs = [
        *(_registered(name, value) for name, value in row_features.items()),
        pl.col("slot").cast(pl.Int64).alias("slot"),
        pl.col("_block_ms").alias("block_ms"),
        pl.when(q_out)
        .then(pl.concat_str(token_in, pl.lit("/"), token_out))
        .otherwise(pl.concat_str(token_out, pl.lit("/"), token_in))
        .alias("pair"),
        pl.col("_dex").alias("dex"),
        pl.col("_pool").alias("pool"),
        pl.col("signer"),
        (~pl.col("success")).cast(pl.Float64).fill_null(np.nan).alias("failed"),
        (pl.col("success") & (profit > 0)).fill_null(False).cast(pl.Float64).alias("arb"),
        price.fill_null(np.nan),
        qvol.fill_null(np.nan),
        pl.when(q_out).then(-qvol).otherwise(qvol).fill_null(np.nan).alias("side_qvol"),
        prio.fill_null(np.nan).alias("prio"),
        tip.fill_null(np.nan).alias("tip"),
    ]
    return legs, amounts, priced, outputs


def _row_frame(batch: pl.DataFrame) -> pl.DataFrame:
    """In input order: the registered features of the row alone (but calendar ones) and the windows' inputs."""
    legs, amounts, priced, outputs = _row_stages()
    fields = batch.select(legs)
    decimals = [
        _decimals(pl.col(mint), pl.col(given)).alias(given)
        if fields.get_column(given).null_count()
        else pl.col(given).cast(pl.Int64)
        for mint, given in (
            ("_token_in", "_decimals_in"),
            ("_token_out", "_decimals_out"),
            ("_last_token_out", "_last_decimals_out"),
        )
    ]
    return fields.lazy().with_columns(decimals).with_columns(amounts).with_columns(priced).select(outputs).collect()


def _calendar(block_ms: Ints) -> dict[str, np.ndarray]:
    """Time-of-day and day-of-week features of UTC block times in ms."""
    day_fraction = (block_ms % _DAY_MS) / _DAY_MS
    weekday = (block_ms // _DAY_MS + 3) % 7 + 1  # ISO: Monday = 1; 1970-01-01 was a Thursday
    week_fraction = (weekday.astype(np.float64) - 1.0 + day_fraction) / 7.0
    tau = 2.0 * math.pi
    return {
        "hour_sin": np.sin(day_fraction * tau),
        "hour_cos": np.cos(day_fraction * tau),
        "dow_sin": np.sin(week_fraction * tau),
        "dow_cos": np.cos(week_fraction * tau),
        "is_weekend": weekday >= 6,
    }


def _codes(column: pl.Series) -> Ints:
    """Integer codes of a string series from a mapping of its own (equal strings, equal codes; null is 0)."""
    space = pl.Categorical(pl.Categories(f"arbitrage.features.codes.{next(_CODE_SPACES)}"))
    return _category_codes(column.cast(space))


def _category_codes(column: pl.Series) -> Ints:
    """A categorical series' codes, shifted so that null is 0."""
    physical = column.to_physical()
    if physical.null_count():
        physical = physical.cast(pl.Int64).fill_null(-1)
    return physical.to_numpy().astype(np.int64) + 1


def _numbers(frame: pl.DataFrame, name: str) -> Floats:
    """A numeric column as float64 numpy, null as NaN."""
    return frame.get_column(name).cast(pl.Float64).to_numpy()


class _Rows:
    """State tail + new rows in processing (`seq`) order, as numpy arrays and string codes.

    Floats use NaN for null. `bar_pair` holds the codes of the stored bars' pairs, in the
    same code space as `pair` (the state's `key_types`).
    """

    def __init__(self, state: RollingState, new: dict[str, np.ndarray], new_strings: pl.DataFrame) -> None:
        tail = state.tail
        self.first_new = tail.height
        # One cast at a time: casts into named categories that polars runs in parallel hand out
        # codes in a varying order, which reorders groups and moves float sums run to run.
        new_strings = new_strings.with_columns(
            [new_strings.get_column(name).cast(dtype) for name, dtype in state.key_types.items()]
        )
        self.strings = pl.concat([tail.select(_STRINGS), new_strings])
        size = self.strings.height
        self.pair, self.dex, self.pool = (_category_codes(self.strings.get_column(name)) for name in _PERSISTENT_KEYS)
        self.signer = _codes(self.strings.get_column("signer"))
        self.bar_pair = _category_codes(state.bars.get_column("pair"))
        columns: dict[str, npt.NDArray[Any]] = {
            name: np.concatenate([tail.get_column(name).to_numpy(), new[name]]).astype(
                np.float64 if _TAIL_SCHEMA[name] == pl.Float64 else np.int64
            )
            for name in _NUMBERS
        }
        self.columns = columns
        self.size = size
        self._name_columns()
        self.slot_follows_order = bool(np.all(self.slot[1:] >= self.slot[:-1]))

    def _name_columns(self) -> None:
        columns = self.columns
        self.seq: Ints = columns["seq"]
        self.slot: Ints = columns["slot"]
        self.t: Ints = columns["t"]
        self.minute: Ints = columns["minute"]
        self.block_ms: Ints = columns["block_ms"]
        self.failed: Floats = columns["failed"]
        self.arb: Floats = columns["arb"]
        self.price: Floats = columns["price"]
        self.qvol: Floats = columns["qvol"]
        self.side_qvol: Floats = columns["side_qvol"]
        self.prio: Floats = columns["prio"]
        self.tip: Floats = columns["tip"]
        self.r: Floats = columns["r"]
        self.spread: Floats = columns["spread"]

    def new_positions(self, g: SortedGroups) -> Ints:
        """Where the new rows (not the tail's) sit in `g`'s sorted order: the rows whose features are read."""
        return np.flatnonzero(g.order >= self.first_new)

    def for_new(self, g: SortedGroups, values: npt.NDArray[_Scalar], at: Ints) -> npt.NDArray[_Scalar]:
        """Values of the sorted rows `at` (the new rows) in processing order, one per new row."""
        out = np.empty((*values.shape[:-1], self.size - self.first_new), dtype=values.dtype)
        out[..., g.order[at] - self.first_new] = values
        return out

    def since_slot(self, first_slot: int) -> _Rows:
        """Every new row, and the tail's rows from `first_slot` on: all that a window of a few slots can reach."""
        kept_tail = np.flatnonzero(self.slot[: self.first_new] >= first_slot)
        if kept_tail.shape[0] == self.first_new:
            return self
        keep = np.concatenate([kept_tail, np.arange(self.first_new, self.size)])
        view = copy.copy(self)
        view.first_new, view.size = kept_tail.shape[0], keep.shape[0]
        view.strings = self.strings[keep]
        view.pair, view.dex, view.pool, view.signer = (
            self.pair[keep],
            self.dex[keep],
            self.pool[keep],
            self.signer[keep],
        )
        view.columns = {name: column[keep] for name, column in self.columns.items()}
        view._name_columns()
        return view

    def by(self, codes: Ints | None, *, time: Ints | None = None, max_width: int) -> SortedGroups:
        """Rows sorted by (codes, event time), or by (codes, `time`) when given (a slot)."""
        if time is None:
            return SortedGroups(codes, self.t, time_follows_order=True, max_width=max_width)
        return SortedGroups(codes, time, time_follows_order=self.slot_follows_order, max_width=max_width)


def _zero_nan(values: Floats) -> Floats:
    return np.where(np.isnan(values), 0.0, values)


def _ratio(num: Floats, den: Floats, fill: float = 0.0) -> Floats:
    """num / den where den != 0, else `fill`."""
    return np.where(den != 0, num / np.where(den != 0, den, 1.0), fill)


def _cross_dex_spread(rows: _Rows, g: SortedGroups, price: Floats, at: Ints) -> Floats:
    """(max - min) / min of each DEX's latest earlier price on the pair within 1 m, in bps, for the sorted rows `at`."""
    dex = rows.dex[g.order]
    dexes = np.flatnonzero(np.bincount(dex))
    dexes = dexes[dexes != 0]
    if dexes.shape[0] < 2:
        return np.zeros(at.shape[0])
    has_price = ~np.isnan(price)
    latest = np.full((dexes.shape[0], at.shape[0]), np.nan)
    for k, code in enumerate(dexes):
        quotes = np.flatnonzero((dex == code) & has_price)
        before = np.searchsorted(quotes, at) - 1
        found = before >= 0
        safe = quotes[np.where(found, before, 0)] if quotes.shape[0] else np.zeros_like(at)
        fresh = found & (g.group[safe] == g.group[at]) & (g.time[safe] > g.time[at] - _M1)
        latest[k] = np.where(fresh, price[safe], np.nan)
    quoted = (~np.isnan(latest)).sum(axis=0)
    high = np.max(np.where(np.isnan(latest), -np.inf, latest), axis=0)
    low = np.min(np.where(np.isnan(latest), np.inf, latest), axis=0)
    return np.where(quoted >= 2, (high - low) / np.where(quoted >= 2, low, 1.0) * 1e4, 0.0)


def _pair_windows(rows: _Rows) -> tuple[dict[str, np.ndarray], SortedGroups]:
    """Per-pair windows of the new rows (processing order), including their `r` and `spread`; and the pair order."""
    g = rows.by(rows.pair, max_width=_M5)
    order = g.order
    at = rows.new_positions(g)  # only the new rows' features are read
    price, qvol = rows.price[order], rows.qvol[order]
    prev = _earlier(g, at, 1)
    has_prev = prev >= 0
    safe_prev = np.where(has_prev, prev, 0)
    prev_price = np.where(has_prev, price[safe_prev], np.nan)
    recent = has_prev & (g.time[safe_prev] > g.time[at] - _M5)
    r, spread = rows.r[order], rows.spread[order]
    with np.errstate(divide="ignore", invalid="ignore"):
        r[at] = np.where(recent & ~np.isnan(prev_price) & ~np.isnan(price[at]), np.log(price[at] / prev_price), 0.0)
    spread[at] = _cross_dex_spread(rows, g, price, at)

    compared = np.zeros(at.shape[0], dtype=np.int64)
    smaller = np.zeros(at.shape[0], dtype=np.int64)
    for k in range(1, _SIZE_LOOKBACK + 1):
        back = _earlier(g, at, k)
        same = back >= 0
        back = np.where(same, back, 0)
        same &= g.time[back] > g.time[at] - _M5
        compared += same
        smaller += same & (qvol[back] < qvol[at])

    quoted = ~np.isnan(price)
    volume = _zero_nan(qvol)
    vq = np.where(quoted, volume, 0.0)
    pv = _zero_nan(price * qvol)
    r2 = r * r
    side = _zero_nan(rows.side_qvol[order])
    failed = _zero_nan(rows.failed[order])
    extended = GroupSums(np.stack([spread, r2, r, pv, vq]), g.first)  # vwap deviations cancel: keep digits
    plain = GroupSums(np.stack([volume, side, failed]), g.first, extended=False)
    start_5s, start_1m, start_5m = (g.window_start(width, at) for width in (_S5, _M1, _M5))
    spread_5s, r2_5s = extended.over(start_5s, at, slice(2))
    spread_1m, r2_1m, ret_1m, pv_1m, vq_1m = extended.over(start_1m, at)
    r2_5m, ret_5m, pv_5m, vq_5m = extended.over(start_5m, at, slice(1, None))
    vol_1m, flow_1m = plain.over(start_1m, at, slice(2))
    vol_5m, flow_5m, failed_5m = plain.over(start_5m, at)
    minute_start = g.run_start(rows.minute[order])[at]
    minute_volume = plain.over(minute_start, at, 0)
    prev_t = np.where(has_prev, g.time[safe_prev], -1)
    out = {
        "r": r[at],
        "spread": spread[at],
        "trade_size_percentile": np.where(compared > 0, smaller / np.maximum(compared, 1), 0.5),
        "prev_pair_t": prev_t,
        "c5s": (at - start_5s).astype(np.float64),
        "trades_1m": at - start_1m,
        "trades_5m": at - start_5m,
        "spread_sum_5s": spread_5s,
        "spread_sum_1m": spread_1m,
        "r2_5s": r2_5s,
        "r2_1m": r2_1m,
        "r2_5m": r2_5m,
        "return_1m": ret_1m,
        "return_5m": ret_5m,
        "pv_1m": pv_1m,
        "pv_5m": pv_5m,
        "vq_1m": vq_1m,
        "vq_5m": vq_5m,
        "volume_1m": vol_1m,
        "volume_5m": vol_5m,
        "flow_1m": flow_1m,
        "flow_5m": flow_5m,
        "failed_5m": failed_5m,
        "minute_volume": minute_volume,
        "minute_trades": at - minute_start,
    }
    return {name: rows.for_new(g, values, at) for name, values in out.items()}, g


def _earlier(g: SortedGroups, at: Ints, k: int) -> Ints:
    """Position of the k-th earlier row of the same group as each sorted row `at`, else -1."""
    back = at - k
    valid = back >= 0
    valid[valid] = g.group[back[valid]] == g.group[at[valid]]
    return np.where(valid, back, -1)


def _signer_windows(rows: _Rows) -> dict[str, np.ndarray]:
    """The signer's earlier transactions over 5 m and its previous event time (new rows, processing order)."""
    g = rows.by(rows.signer, max_width=_M5)
    failed = rows.failed[g.order]
    successes = np.where(np.isnan(failed), 0.0, 1.0 - failed)
    at = rows.new_positions(g)
    start = g.window_start(_M5, at)
    prev = _earlier(g, at, 1)
    out = {
        "signer_successes": window_sums(prefix_sums(successes, extended=False), start, at),
        "signer_tx_count_5m": at - start,
        "prev_signer_t": np.where(prev >= 0, g.time[np.where(prev >= 0, prev, 0)], -1),
    }
    return {name: rows.for_new(g, values, at) for name, values in out.items()}


def _slot_counts(rows: _Rows, codes: Ints, widths: dict[str, int]) -> dict[str, Ints]:
    """Counts of the group's earlier transactions within `width` slots (new rows, processing order)."""
    g = rows.by(codes, time=rows.slot, max_width=max(widths.values()))
    at = rows.new_positions(g)
    return {name: rows.for_new(g, at - g.window_start(width, at), at) for name, width in widths.items()}


def _combined(left: Ints, right: Ints) -> Ints:
    return left * (int(right.max(initial=0)) + 1) + right


def _rank(value: Floats, low: Floats, p50: Floats, p90: Floats, high: Floats) -> Floats:
    """Rank in a window, linear between min=0, p50=0.5, p90=0.9 and max=1; 0.5 for an empty window."""

    def between(lo: Floats, hi: Floats, r_lo: float, r_hi: float) -> Floats:
        return np.where(hi > lo, r_lo + (r_hi - r_lo) * (value - lo) / (hi - lo), r_hi)

    with np.errstate(divide="ignore", invalid="ignore"):
        return np.select(
            [np.isnan(low), value <= low, value <= p50, value <= p90, value < high],
            [
                np.full_like(value, 0.5),
                np.zeros_like(value),
                between(low, p50, 0.0, 0.5),
                between(p50, p90, 0.5, 0.9),
                between(p90, high, 0.9, 1.0),
            ],
            1.0,
        )


def _network(rows: _Rows) -> dict[str, np.ndarray]:
    """All captured transactions by slot: activity, fee percentiles, congestion (new rows, processing order)."""
    g = rows.by(None, time=rows.slot, max_width=RECENT_SLOTS)
    order, slot = g.order, g.time
    at = rows.new_positions(g)  # only the new rows' features are read
    slot_start = g.run_start(slot)[at]
    start = g.window_start(RECENT_SLOTS, at)
    counts = prefix_sums(np.stack([_zero_nan(rows.failed[order]), _zero_nan(rows.arb[order])]), extended=False)
    recent_failed, recent_arbs = window_sums(counts, start, at)
    recent_txs = at - start
    before = slot_start - 1
    has_prev = before >= 0
    safe = np.where(has_prev, before, 0)
    gap = slot[at] - slot[safe]
    close_enough = has_prev & (gap <= RECENT_SLOTS)
    block_ms = rows.block_ms[order]
    prio, tip = rows.prio[order], rows.tip[order]
    all_starts = np.zeros(g.size, dtype=np.int64)
    all_starts[at] = start
    low, high, (p50, p90) = window_quantiles(np.stack([prio, tip]), all_starts, (0.5, 0.9), at=at)
    (prio_min, tip_min), (prio_max, tip_max) = low[:, at], high[:, at]
    (prio_p50, tip_p50), (prio_p90, tip_p90) = p50[:, at], p90[:, at]
    prio, tip = prio[at], tip[at]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {
            "slot_position": at - slot_start,
            "slot_gap": np.where(close_enough, gap, RECENT_SLOTS).astype(np.float64),
            "ms_per_slot": np.where(close_enough, (block_ms[at] - block_ms[safe]) / np.where(gap != 0, gap, 1), 400.0),
            "txs_per_slot": recent_txs / RECENT_SLOTS,
            "arbs_per_slot": recent_arbs / RECENT_SLOTS,
            "priority_fee_p50": _zero_nan(prio_p50),
            "priority_fee_p90": _zero_nan(prio_p90),
            "priority_fee_rank": _rank(prio, prio_min, prio_p50, prio_p90, prio_max),
            "tip_p50": _zero_nan(tip_p50),
            "tip_p90": _zero_nan(tip_p90),
            "tip_rank": _rank(tip, tip_min, tip_p50, tip_p90, tip_max),
            "congestion_score": _ratio(recent_failed, recent_txs.astype(np.float64)),
        }
    return {name: rows.for_new(g, values, at) for name, values in out.items()}


class _MinuteBars(msgspec.Struct):
    """Per (pair, minute) bars of the rows from the bar cutoff on, one per run of the pair order."""

    first_row: Ints
    minute: Ints
    volume: Floats
    trades: Ints
    close: Floats
    recent: Bools
    row_bar: Ints


def _minute_bars(rows: _Rows, g: SortedGroups, since_minute: int | None) -> _MinuteBars:
    """Bars (quote volume, trades, last price) of every (pair, minute) run in the pair order.

    `recent` marks the bars at or after `since_minute` (the others are already stored);
    `row_bar` gives each row's bar, in the pair order.
    """
    order = g.order
    minute = rows.minute[order]
    starts = g.first.copy()
    if g.size:
        starts[1:] |= minute[1:] != minute[:-1]
    first = np.flatnonzero(starts)
    price = rows.price[order]
    last_quoted = np.maximum.accumulate(np.where(np.isnan(price), -1, np.arange(g.size)))
    ends = np.append(first[1:], g.size) - 1
    close_at = last_quoted[ends] if g.size else ends
    has_close = close_at >= first
    bar_minute = minute[first]
    return _MinuteBars(
        first_row=order[first],
        minute=bar_minute,
        volume=np.add.reduceat(_zero_nan(rows.qvol[order]), first) if g.size else np.zeros(0),
        trades=np.diff(np.append(first, g.size)),
        close=np.where(has_close, price[np.where(has_close, close_at, 0)], np.nan),
        recent=np.ones(first.shape[0], bool) if since_minute is None else bar_minute >= since_minute,
        row_bar=np.cumsum(starts) - 1,
    )


def _bar_features(rows: _Rows, g: SortedGroups, bars: _MinuteBars, stored: pl.DataFrame) -> dict[str, np.ndarray]:
    """Minute-aligned 24 h / 48 h sums and one-minute indicators of each new row's bar, as of its start."""
    # Only the new rows' bars are read, so only their pairs' bars take part.
    needed = np.zeros(int(max(rows.pair.max(initial=0), rows.bar_pair.max(initial=0))) + 1, dtype=np.bool_)
    needed[rows.pair[rows.first_new :]] = True
    recent = np.flatnonzero(bars.recent)
    recent = recent[needed[rows.pair[bars.first_row[recent]]]]
    recent = recent[np.argsort(bars.minute[recent], kind="stable")]
    kept = np.flatnonzero(needed[rows.bar_pair])
    pair = np.concatenate([rows.bar_pair[kept], rows.pair[bars.first_row[recent]]])
    minute = np.concatenate([stored.get_column("minute").to_numpy()[kept], bars.minute[recent]])
    volume = np.concatenate([_numbers(stored, "volume")[kept], bars.volume[recent]])
    trades = np.concatenate([stored.get_column("trades").to_numpy()[kept], bars.trades[recent]])
    close = np.concatenate([_numbers(stored, "close")[kept], bars.close[recent]])
    in_time_order = bool(np.all(minute[1:] >= minute[:-1]))  # stored bars are kept in minute order
    b = SortedGroups(pair, minute, time_follows_order=in_time_order, max_width=2 * _DAY_MINUTES + 1)
    at = np.empty(pair.shape[0], dtype=np.int64)
    at[b.order] = np.arange(b.size)
    query = at[kept.shape[0] :]
    day_start = b.window_start(_DAY_MINUTES + 1, query)
    two_day_start = b.window_start(2 * _DAY_MINUTES + 1, query)
    sums = GroupSums(np.stack([volume[b.order], trades[b.order].astype(np.float64)]), b.first)
    volume_24h, trades_24h_sum = sums.over(day_start, query)
    trades_24h = np.rint(trades_24h_sum).astype(np.int64)
    volume_48h = sums.over(two_day_start, query, 0)
    sorted_minute, sorted_close = b.time, close[b.order]
    first_minute = np.where(day_start < query, sorted_minute[day_start], np.iinfo(np.int64).max)

    closes = np.full((_BOLLINGER_BARS, query.shape[0]), np.nan)
    for k in range(1, _BOLLINGER_BARS + 1):
        back = query - k
        ok = back >= 0
        back = np.where(ok, back, 0)
        ok &= (b.group[back] == b.group[query]) & (sorted_minute[back] >= sorted_minute[query] - _DAY_MINUTES)
        closes[k - 1] = np.where(ok, sorted_close[back], np.nan)
    gains = np.zeros(query.shape[0])
    losses = np.zeros(query.shape[0])
    for k in range(_RSI_BARS):
        change = closes[k] - closes[k + 1]
        gains = gains + np.maximum(change, 0.0)
        losses = losses + np.maximum(-change, 0.0)
    rsi_ready = ~np.isnan(closes[: _RSI_BARS + 1]).any(axis=0)
    bands_ready = ~np.isnan(closes).any(axis=0)
    moved = gains + losses
    with np.errstate(divide="ignore", invalid="ignore"):
        rsi = np.where(rsi_ready & (moved > 0), 100.0 * gains / moved, 50.0)
    total = closes[0].copy()
    for k in range(1, _BOLLINGER_BARS):
        total = total + closes[k]
    mean = total / _BOLLINGER_BARS
    squares = (closes[0] - mean) ** 2
    for k in range(1, _BOLLINGER_BARS):
        squares = squares + (closes[k] - mean) ** 2
    sd = np.sqrt(squares / _BOLLINGER_BARS)
    per_bar = {
        "bar_volume_24h": volume_24h,
        "bar_trades_24h": trades_24h,
        "bar_volume_48h": volume_48h,
        "first_minute_24h": first_minute,
        "rsi_14": rsi,
        "band_mean": np.where(bands_ready, mean, np.nan),
        "band_sd": np.where(bands_ready, sd, np.nan),
    }
    bar_of_recent = np.full(bars.minute.shape[0], 0, dtype=np.int64)
    bar_of_recent[recent] = np.arange(recent.shape[0])
    row_bar = bar_of_recent[bars.row_bar]
    at = rows.new_positions(g)
    return {name: rows.for_new(g, values[row_bar[at]], at) for name, values in per_bar.items()}


def _il(log_return: Floats) -> Floats:
    """Impermanent loss 1 - 2 sqrt(k) / (1 + k) at k = exp(r), as (1 - sqrt k)^2 / (1 + k) to stay exact near k = 1."""
    root = np.exp(log_return / 2.0)
    return (1.0 - root) ** 2 / (1.0 + root * root)


def _since(t: Ints, prev_t: Ints) -> Floats:
    """Seconds from `prev_t` (-1: none) to `t`, capped at a day."""
    return np.where(prev_t >= 0, np.minimum((t - prev_t) / 1000.0, 86_400.0), 86_400.0)


def _seen_before(prev_t: Ints, keys: pl.Series, seen: dict[str, int]) -> Ints:
    """`prev_t`, or where it is -1 the key's last event time before the tail (else -1)."""
    missing = np.flatnonzero(prev_t < 0)
    if missing.shape[0] == 0 or not seen:
        return prev_t
    found = np.array([seen.get(key, -1) for key in keys.gather(missing).to_list()], dtype=np.int64)
    out = prev_t.copy()
    out[missing] = found
    return out


def _remember_last(seen: dict[str, int], codes: Ints, keys: pl.Series, t: Ints) -> None:
    """Record each key's event time at its last new row (event times never decrease in processing order)."""
    _, from_end = np.unique(codes[::-1], return_index=True)
    last = codes.shape[0] - 1 - from_end
    seen.update(zip(keys.gather(last).to_list(), t[last].tolist(), strict=True))


class HistoryFold:
    """Warms an engine on stored history given in slot-ordered pieces, one piece in memory at a time.

    A restart used to load the whole `HISTORY_WINDOW` at once: about 3 GB per million rows,
    so two days of a busy feed did not fit in memory. Only the last minutes go through
    `process`; older rows are folded straight into the per-minute bars and the last-seen
    times, which a piece at a time gives exactly: event times are running maxima in slot
    order (carried from piece to piece), and a bar split between two pieces is summed, its
    close the later piece's.
    """

    def __init__(self, newest_block_ms: int, newest_slot: int) -> None:
        """`newest_*`: the newest block time (ms) and slot of the history to come."""
        self._split = newest_block_ms // _M1 - _WARMUP_MINUTES
        self._warm_slot = newest_slot - 2 * RECENT_SLOTS
        self._engine = FeatureEngine()
        self._bars: list[pl.DataFrame] = []
        self._recent: list[pl.DataFrame] = []
        self._max_t: int | None = None

    def add(self, piece: pl.DataFrame) -> None:
        """The next rows of the history: later slots than every earlier piece, ordered as `from_history` says."""
        if piece.height == 0:
            return
        new, strings = _window_inputs(_row_frame(piece), None, self._max_t, 0)
        own = pl.DataFrame(
            {
                "slot": new["slot"],
                "t": new["t"],
                "minute": new["minute"],
                "qvol": new["qvol"],
                "window_price": new["price"],
            }
        ).with_columns(*strings.get_columns(), pl.col("window_price").fill_nan(None), pl.col("qvol").fill_nan(None))
        self._max_t = int(new["t"][-1])
        self._bars.append(_history_bars(own.filter(pl.col("minute") < self._split)))
        if self._recent:  # the warm-up began in an earlier piece: all of this one goes through `process`
            self._recent.append(piece)
            return
        # Event times never fall in slot order, so the rows to warm up on are the pieces' last ones.
        warm = (new["minute"] >= self._split) | (new["slot"] >= self._warm_slot)
        early = int(np.argmax(warm)) if bool(warm.any()) else piece.height
        if early:
            self._fold(own.head(early))
        if early < piece.height:
            self._recent.append(piece.slice(early))

    def engine(self) -> FeatureEngine:
        """The warmed engine (call once, after the last piece)."""
        state = self._engine.state
        if self._bars:
            parts = pl.concat(self._bars)
            merged = parts.group_by("pair", "minute").agg(
                pl.col("volume").sum(),
                pl.col("trades").sum(),
                pl.col("close").drop_nulls().last(),
            )
            state.bars = (
                merged.sort("minute", "pair")
                .select(_BAR_SCHEMA.keys())
                .with_columns(pl.col("pair").cast(state.key_types["pair"]))
            )
            state.bar_cutoff = self._split
        if self._recent:
            self._engine.process(pl.concat(self._recent))
        return self._engine

    def _fold(self, early: pl.DataFrame) -> None:
        state = self._engine.state
        for column, seen in (("pair", state.last_pair), ("signer", state.last_signer)):
            latest = early.group_by(column).agg(pl.col("t").max())
            seen.update(zip(latest.get_column(column).to_list(), latest.get_column("t").to_list(), strict=True))
        state.max_t = int(early.get_column("t").max())  # type: ignore[arg-type]
        state.max_slot = int(early.get_column("slot").max())  # type: ignore[arg-type]
        state.next_seq += early.height


def _history_bars(frame: pl.DataFrame) -> pl.DataFrame:
    """Per (pair, minute) bars of rows with `pair`, `minute`, `qvol` and `window_price`."""
    bars = frame.group_by("pair", "minute").agg(
        pl.col("qvol").fill_null(0.0).sum().alias("volume"),
        pl.len().cast(pl.Int64).alias("trades"),
        pl.col("window_price").drop_nulls().last().alias("close"),
    )
    return bars.sort("minute", "pair").select(_BAR_SCHEMA.keys())


def _window_inputs(
    frame: pl.DataFrame, seq_order: Ints | None, max_t: int | None, next_seq: int
) -> tuple[dict[str, np.ndarray], pl.DataFrame]:
    """The new rows' numeric columns (processing order, NaN for null) and their strings, from `_row_frame`."""
    inputs = frame.select("slot", "block_ms", *_STRINGS, *_FLOAT_INPUTS)
    if seq_order is not None:
        inputs = inputs[seq_order]
    block_ms = inputs.get_column("block_ms").to_numpy()
    event_ms = block_ms if max_t is None else np.maximum(block_ms, max_t)
    t = np.maximum.accumulate(event_ms) if event_ms.shape[0] else event_ms
    nan = np.full(inputs.height, np.nan)
    new = {
        "seq": next_seq + np.arange(inputs.height, dtype=np.int64),
        "slot": inputs.get_column("slot").to_numpy(),
        "t": t,
        "minute": t // _M1,
        "block_ms": block_ms,
        **{name: inputs.get_column(column).to_numpy() for column, name in _FLOAT_INPUTS.items()},
        "r": nan,
        "spread": nan,
    }
    return new, inputs.select(_STRINGS)


_REGISTRY: Final = {f.name: f for f in (*FEATURES, LATE_COLUMN)}


class FeatureEngine:
    """Computes `FEATURES` for batches of stored transactions, remembering what it must.

    Rows are processed in point-in-time order: by `slot`, then input position. Feed
    batches in that order; a row whose slot is below one already processed is still
    computed (against the current state) but flagged `late`, and a rebuild (a fresh
    engine over the ordered history) gives it its proper values. Until then it also sits
    in the state as processed: the (unflagged) rows after it count it at its arrival,
    after the rows already processed, not at its slot; `from_history` puts it back in
    slot order, so a restart changes what later rows see.
    """

    def __init__(self, state: RollingState | None = None) -> None:
        self.state = state if state is not None else RollingState.empty()

    @classmethod
    def from_history(cls, history: pl.DataFrame) -> FeatureEngine:
        """An engine warmed up on stored rows, as if it had processed all of them.

        The caller gives every stored transaction with `block_time` within `HISTORY_WINDOW`
        (48 h 15 min) of the newest one, ordered by slot and then arrival (ingestion time,
        then stream position; ties keep the given order). `HistoryFold` does the same from
        that history read a piece at a time.
        """
        if history.height == 0:
            return cls()
        ordered = history.sort("slot", maintain_order=True)
        newest_ms = ordered.select(pl.col("block_time").dt.epoch("ms").max()).item()
        fold = HistoryFold(int(newest_ms), int(ordered.get_column("slot").max()))  # type: ignore[arg-type]
        fold.add(ordered)
        return fold.engine()

    def __call__(self, batch: pl.DataFrame) -> pl.DataFrame:
        return self.process(batch)

    def checkpoint(self) -> RollingState:
        """The state as it is now, for `restore`: processing replaces the frames it holds and
        updates only the two last-seen maps in place, so those are the only copies."""
        state = self.state
        return msgspec.structs.replace(state, last_pair=dict(state.last_pair), last_signer=dict(state.last_signer))

    def restore(self, checkpoint: object) -> None:
        """Forget every batch processed since `checkpoint` was taken (their rows were not stored)."""
        assert isinstance(checkpoint, RollingState)
        self.state = msgspec.structs.replace(
            checkpoint, last_pair=dict(checkpoint.last_pair), last_signer=dict(checkpoint.last_signer)
        )

    def process(self, batch: pl.DataFrame) -> pl.DataFrame:
        """The batch, rows in their input order, with every feature column and `late` added."""
        state = self.state
        if batch.height == 0:
            return batch.with_columns(pl.lit(None, f.polars_dtype).alias(f.name) for f in _REGISTRY.values())
        row_frame = _row_frame(batch)
        slots = row_frame.get_column("slot").to_numpy()
        seq_order = None if bool(np.all(slots[1:] >= slots[:-1])) else np.argsort(slots, kind="stable")
        new, new_strings = _window_inputs(row_frame, seq_order, state.max_t, state.next_seq)
        rows = _Rows(state, new, new_strings)
        pair, by_pair = _pair_windows(rows)
        bars = _minute_bars(rows, by_pair, state.bar_cutoff)
        # Slot windows reach back a few slots: only those rows of the tail take part.
        recent = rows.since_slot(int(new["slot"].min()) - max(RECENT_SLOTS, _COMPETITION_SLOTS))
        values = {
            **pair,
            **_bar_features(rows, by_pair, bars, state.bars),
            **_signer_windows(rows),
            **_slot_counts(recent, recent.pool, {"pool_same_slot": 1}),
            **_slot_counts(recent, _combined(recent.pool, recent.signer), {"own_same_slot": 1}),
            **_slot_counts(recent, recent.pair, {"pair_same_slot": 1, "pair_10_slots": _COMPETITION_SLOTS}),
            **_slot_counts(
                recent,
                _combined(recent.pair, recent.signer),
                {"own_pair_same_slot": 1, "own_pair_10_slots": _COMPETITION_SLOTS},
            ),
            **_network(recent),
        }
        values["prev_pair_t"] = _seen_before(values["prev_pair_t"], new_strings.get_column("pair"), state.last_pair)
        values["prev_signer_t"] = _seen_before(
            values["prev_signer_t"], new_strings.get_column("signer"), state.last_signer
        )
        computed = _window_features(values, new)
        if seq_order is not None:
            computed = {name: _unsort(column, seq_order) for name, column in computed.items()}
        block_ms = row_frame.get_column("block_ms").to_numpy()
        computed.update(_calendar(block_ms))
        slots_late = np.zeros(batch.height, dtype=np.bool_) if state.max_slot is None else slots < state.max_slot
        computed["late"] = slots_late
        columns = [
            row_frame.get_column(f.name)
            if f.name in _ROW_FEATURES
            else pl.Series(f.name, computed[f.name], dtype=f.polars_dtype)
            for f in _REGISTRY.values()
        ]
        rows.columns["r"][rows.first_new :] = values["r"]
        rows.columns["spread"][rows.first_new :] = values["spread"]
        self._advance(rows, by_pair, bars)
        return batch.hstack(columns)

    def _advance(self, rows: _Rows, by_pair: SortedGroups, bars: _MinuteBars) -> None:
        """Fold the batch into the state and drop what no later window can reach."""
        state = self.state
        fresh = slice(rows.first_new, None)
        max_t = int(rows.t[fresh].max())
        batch_max_slot = int(rows.slot[fresh].max())
        max_slot = batch_max_slot if state.max_slot is None else max(state.max_slot, batch_max_slot)
        cutoff = max_t // _M1 - _TAIL_MINUTES
        folding = np.flatnonzero(bars.recent & (bars.minute < cutoff))
        folding = folding[np.argsort(bars.minute[folding], kind="stable")]
        folded = pl.DataFrame(
            {
                "pair": rows.strings.get_column("pair").gather(bars.first_row[folding]),
                "minute": bars.minute[folding],
                "volume": bars.volume[folding],
                "trades": bars.trades[folding],
                "close": pl.Series(bars.close[folding]).fill_nan(None),
            },
            schema=state.bars.schema,
        )
        state.bars = (
            pl.concat([state.bars, folded]).filter(pl.col("minute") >= max_t // _M1 - _BAR_KEEP_MINUTES).rechunk()
        )
        keep = np.flatnonzero((rows.minute >= cutoff) | (rows.slot >= max_slot - RECENT_SLOTS))
        tail = {name: column[keep] for name, column in rows.columns.items()}
        strings = rows.strings[keep]
        state.tail = pl.DataFrame({**tail, **{name: strings.get_column(name) for name in _STRINGS}}).select(
            _TAIL_SCHEMA.keys()
        )
        for table, codes, name in ((state.last_pair, rows.pair, "pair"), (state.last_signer, rows.signer, "signer")):
            _remember_last(table, codes[fresh], rows.strings.get_column(name).slice(rows.first_new), rows.t[fresh])
        seen = len(state.last_pair) + len(state.last_signer)
        if seen > 2 * state.seen_pruned_at + 1_024:
            for table in (state.last_pair, state.last_signer):
                for key in [key for key, last_t in table.items() if last_t <= max_t - _DAY_MS]:
                    del table[key]
            state.seen_pruned_at = len(state.last_pair) + len(state.last_signer)
        state.max_t, state.max_slot, state.bar_cutoff = max_t, max_slot, cutoff
        state.next_seq += rows.size - rows.first_new


def _unsort(values: np.ndarray, seq_order: Ints) -> np.ndarray:
    """Values in processing order, back in input order."""
    out = np.empty_like(values)
    out[seq_order] = values
    return out


def _window_features(v: dict[str, np.ndarray], new: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The registered window features of the new rows (processing order), NaN as 0."""
    price, t, minute = new["price"], new["t"], new["minute"]
    quoted = ~np.isnan(price)
    with np.errstate(divide="ignore", invalid="ignore"):
        vwap_1m = np.where(v["vq_1m"] > 0, v["pv_1m"] / v["vq_1m"], price)
        vwap_5m = np.where(v["vq_5m"] > 0, v["pv_5m"] / v["vq_5m"], price)
        volume_24h = _zero_nan(v["bar_volume_24h"]) + v["minute_volume"]
        prior_24h = _zero_nan(v["bar_volume_48h"]) - _zero_nan(v["bar_volume_24h"])
        mean, sd = v["band_mean"], v["band_sd"]
        bands = ~np.isnan(mean) & (sd > 0)  # the bands need the closes only, %b and the z-score also the own price
        band_ready = bands & quoted
        trades_5m = v["trades_5m"].astype(np.float64)
        first_minute = np.minimum(v["first_minute_24h"], minute)
        features: dict[str, np.ndarray] = {
            "last_return": v["r"],
            "spread_now_bps": v["spread"],
            "spread_5s_bps": _ratio(v["spread_sum_5s"], v["c5s"]),
            "spread_1m_bps": _ratio(v["spread_sum_1m"], v["trades_1m"].astype(np.float64)),
            "vwap_1m": vwap_1m,
            "vwap_5m": vwap_5m,
            "vwap_deviation_bps": np.where(quoted & (vwap_1m > 0), (price - vwap_1m) / vwap_1m * 1e4, 0.0),
            "volatility_5s": np.sqrt(v["r2_5s"]),
            "volatility_1m": np.sqrt(v["r2_1m"]),
            "volatility_5m": np.sqrt(v["r2_5m"]),
            "return_1m": v["return_1m"],
            "return_5m": v["return_5m"],
            "rsi_14": v["rsi_14"],
            "bollinger_pct_b": np.where(band_ready, (price - (mean - 2 * sd)) / (4 * sd), 0.5),
            "bollinger_bandwidth": np.where(bands & (mean > 0), 4 * sd / mean, 0.0),
            "price_zscore": np.where(band_ready, (price - mean) / sd, 0.0),
            "volume_1m": v["volume_1m"],
            "volume_5m": v["volume_5m"],
            "volume_24h": volume_24h,
            "trades_1m": v["trades_1m"],
            "trades_5m": v["trades_5m"],
            "trades_24h": v["bar_trades_24h"] + v["minute_trades"],
            "volume_change_24h": np.where(prior_24h > 0, volume_24h / prior_24h - 1.0, 0.0),
            "avg_trade_size_5m": _ratio(v["volume_5m"], trades_5m),
            "trade_size_percentile": v["trade_size_percentile"],
            "order_flow_imbalance_1m": _ratio(v["flow_1m"], v["volume_1m"]),
            "order_flow_imbalance_5m": _ratio(v["flow_5m"], v["volume_5m"]),
            "slot_position": v["slot_position"],
            "txs_per_slot": v["txs_per_slot"],
            "arbs_per_slot": v["arbs_per_slot"],
            "priority_fee_p50": v["priority_fee_p50"],
            "priority_fee_p90": v["priority_fee_p90"],
            "priority_fee_rank": v["priority_fee_rank"],
            "tip_p50": v["tip_p50"],
            "tip_p90": v["tip_p90"],
            "tip_rank": v["tip_rank"],
            "slot_gap": v["slot_gap"],
            "ms_per_slot": v["ms_per_slot"],
            "congestion_score": v["congestion_score"],
            "sandwich_exposure": v["pool_same_slot"] - v["own_same_slot"],
            "il_estimate_1m": _il(v["return_1m"]),
            "il_estimate_5m": _il(v["return_5m"]),
            "pair_age_s": np.minimum((t - first_minute * _M1) / 1000.0, 86_400.0),
            "pair_failure_rate_5m": _ratio(v["failed_5m"], trades_5m),
            "competitors_same_slot": v["pair_same_slot"] - v["own_pair_same_slot"],
            "competitors_10_slots": v["pair_10_slots"] - v["own_pair_10_slots"],
            "signer_success_rate_5m": (v["signer_successes"] + 1.0) / (v["signer_tx_count_5m"] + 2.0),
            "signer_tx_count_5m": v["signer_tx_count_5m"],
            "time_since_pair_prev_s": _since(t, v["prev_pair_t"]),
            "time_since_signer_prev_s": _since(t, v["prev_signer_t"]),
        }
    return {
        name: _zero_nan(values.astype(np.float64)) if _REGISTRY[name].dtype == "Float64" else values
        for name, values in features.items()
    }
