"""Hand-computed feature values on small crafted sequences."""

from __future__ import annotations

import math

import polars as pl
import pytest

from arbitrage.features import FeatureEngine
from tests.unit.features.conftest import OTHER_TOKEN, TOKEN, Tx, rows

MIN = 60_000


def last(frame: pl.DataFrame, column: str) -> float:
    return float(frame.get_column(column)[-1])


def test_vwap_weights_earlier_trades_by_quote_volume_and_excludes_the_transaction_itself() -> None:
    out = FeatureEngine().process(
        rows(
            Tx(1, 0, price=2.0, sol_in=1.0), Tx(2, 10_000, price=4.0, sol_in=3.0), Tx(3, 20_000, price=8.0, sol_in=5.0)
        )
    )
    assert last(out, "vwap_1m") == pytest.approx((2.0 * 1 + 4.0 * 3) / 4)
    assert last(out, "volume_1m") == pytest.approx(4.0)
    assert last(out, "trades_1m") == 2
    assert last(out, "vwap_deviation_bps") == pytest.approx((8.0 - 3.5) / 3.5 * 1e4)
    assert out.get_column("vwap_1m")[0] == pytest.approx(2.0)  # no earlier trade: own price


def test_volatility_returns_and_impermanent_loss_follow_the_log_returns_of_earlier_trades() -> None:
    out = FeatureEngine().process(
        rows(Tx(1, 0, price=1.0), Tx(2, 1_000, price=2.0), Tx(3, 2_000, price=4.0), Tx(4, 3_000, price=4.0))
    )
    ln2 = math.log(2.0)
    assert out.get_column("last_return").to_list() == pytest.approx([0.0, ln2, ln2, 0.0])
    assert last(out, "return_1m") == pytest.approx(2 * ln2)
    assert last(out, "volatility_5s") == pytest.approx(math.sqrt(2) * ln2)
    assert last(out, "il_estimate_1m") == pytest.approx(1 - 2 * 2 / (1 + 4))  # k = 4: 0.2


def test_windows_hold_trades_strictly_newer_than_the_window_length() -> None:
    out = FeatureEngine().process(rows(Tx(1, 0), Tx(2, 1), Tx(3, MIN)))
    assert out.get_column("trades_1m").to_list() == [0, 1, 1]  # the trade at t - 60 s is out


def test_cross_dex_spread_uses_each_dex_latest_price_within_a_minute() -> None:
    out = FeatureEngine().process(
        rows(
            Tx(1, 0, price=2.0, dex="raydium_amm"),
            Tx(2, 1_000, price=2.02, dex="orca_whirlpool"),
            Tx(3, 2_000, price=2.01, dex="raydium_amm"),
            Tx(4, 60_500, price=2.0, dex="phoenix"),
            Tx(5, 61_500, price=2.0, dex="phoenix"),
        )
    )
    spreads = out.get_column("spread_now_bps").to_list()
    assert spreads[0] == 0.0
    assert spreads[1] == 0.0
    assert spreads[2] == pytest.approx((2.02 - 2.0) / 2.0 * 1e4, rel=1e-6)
    assert spreads[3] == pytest.approx((2.02 - 2.01) / 2.01 * 1e4, rel=1e-6)  # raydium's latest is 2.01
    assert spreads[4] == pytest.approx((2.01 - 2.0) / 2.0 * 1e4, rel=1e-6)  # orca's 2.02 is over a minute old
    assert out.get_column("spread_5s_bps")[3] == 0.0
    assert out.get_column("spread_5s_bps")[4] == pytest.approx(spreads[3], rel=1e-9)


def minute_bars(closes: list[float], *, start_slot: int = 1) -> list[Tx]:
    return [Tx(start_slot + i, i * MIN, price=c) for i, c in enumerate(closes)]


def test_rsi_uses_the_last_fourteen_changes_of_one_minute_closes() -> None:
    closes = [10.0 + i for i in range(11)] + [19.0, 18.0, 17.0, 16.0]  # 10 up, 4 down
    out = FeatureEngine().process(rows(*minute_bars(closes), Tx(100, len(closes) * MIN, price=16.0)))
    assert last(out, "rsi_14") == pytest.approx(100 * 10 / 14, rel=1e-6)
    assert out.get_column("rsi_14")[-2] == 50.0  # only 14 closes before it


def test_bollinger_and_zscore_use_the_last_twenty_closes() -> None:
    closes = [float(c) for c in range(1, 21)]
    mean, sd = 10.5, math.sqrt((20**2 - 1) / 12)
    out = FeatureEngine().process(rows(*minute_bars(closes), Tx(100, 20 * MIN, price=mean + sd)))
    assert last(out, "price_zscore") == pytest.approx(1.0, rel=1e-4)
    assert last(out, "bollinger_pct_b") == pytest.approx(0.75, rel=1e-4)
    assert last(out, "bollinger_bandwidth") == pytest.approx(4 * sd / mean, rel=1e-6)


def test_same_slot_features_count_only_earlier_transactions_of_other_signers() -> None:
    a, b, c = "SignerA" + "1" * 33, "SignerB" + "1" * 33, "SignerC" + "1" * 33
    out = FeatureEngine().process(
        rows(
            Tx(7, 0, signer=b, pool="PoolX"),
            Tx(7, 0, signer=a, pool="PoolX"),
            Tx(7, 0, signer=a, pool="PoolX"),
            Tx(7, 0, signer=c, pool="PoolX"),
            Tx(9, 800, signer=a, pool="PoolY"),
        )
    )
    assert out.get_column("sandwich_exposure").to_list() == [0, 1, 1, 3, 0]
    assert out.get_column("slot_position").to_list() == [0, 1, 2, 3, 0]
    assert out.get_column("competitors_same_slot").to_list() == [0, 1, 1, 3, 0]
    assert out.get_column("competitors_10_slots")[-1] == 2  # b and c, two slots back, same pair


def test_fee_percentiles_and_rank_come_from_earlier_transactions_in_recent_slots() -> None:
    fees = [100, 200, 300, 400, 500]
    out = FeatureEngine().process(
        rows(*(Tx(10 + i, i * 400, priority=f) for i, f in enumerate(fees)), Tx(20, 4_000, priority=300))
    )
    assert last(out, "priority_fee_p50") == pytest.approx(300.0)
    assert last(out, "priority_fee_p90") == pytest.approx(460.0)
    assert last(out, "priority_fee_rank") == pytest.approx(0.5)
    assert out.get_column("priority_fee_rank")[0] == 0.5  # nothing before it


def test_slot_windows_reach_back_25_slots_also_into_earlier_batches() -> None:
    """Fee windows hold the last 24 slots before this one; the slot pace looks back 25."""
    for gap, ms_per_slot, fee_p50 in ((24, 500.0, 700.0), (25, 500.0, 0.0), (26, 400.0, 0.0)):
        engine = FeatureEngine()
        engine.process(rows(Tx(100, 0, priority=700)))
        out = engine.process(rows(Tx(100 + gap, gap * 500, priority=100)))
        assert last(out, "ms_per_slot") == pytest.approx(ms_per_slot)
        assert last(out, "slot_gap") == min(gap, 25)
        assert last(out, "priority_fee_p50") == fee_p50


def test_signer_success_rate_is_laplace_smoothed_over_earlier_transactions() -> None:
    out = FeatureEngine().process(rows(Tx(1, 0, success=False), Tx(2, 400), Tx(3, 800)))
    assert out.get_column("signer_success_rate_5m").to_list() == pytest.approx([0.5, 1 / 3, 0.5])
    assert out.get_column("time_since_signer_prev_s").to_list() == pytest.approx([86_400.0, 0.4, 0.4])


def test_volume_24h_counts_the_1440_whole_minutes_before_the_transaction_minute() -> None:
    day = 1_440 * MIN
    engine = FeatureEngine()
    out = pl.concat(
        [
            engine.process(rows(Tx(1, 0, sol_in=1.0), Tx(2, MIN, sol_in=2.0))),
            engine.process(rows(Tx(3, day + MIN + 5, sol_in=4.0), Tx(4, day + MIN + 9, sol_in=8.0))),
        ]
    )
    # minute 0 is 1441 minutes before minute 1441: out; minute 1 is in; so is the earlier same-minute trade
    assert out.get_column("volume_24h").to_list() == pytest.approx([0.0, 1.0, 2.0, 6.0])
    assert out.get_column("volume_change_24h")[2] == pytest.approx(2.0 / 1.0 - 1.0)


def test_rows_come_back_in_input_order_with_a_late_flag_for_slots_already_passed() -> None:
    engine = FeatureEngine()
    first = engine.process(rows(Tx(50, 0), Tx(40, 0, token=TOKEN)))
    assert first.get_column("slot").to_list() == [50, 40]
    assert not first.get_column("late").any()
    second = engine.process(rows(Tx(60, 4_000), Tx(45, 2_000)))
    assert second.get_column("late").to_list() == [False, True]


def test_route_and_economics_come_from_the_transaction_itself() -> None:
    out = FeatureEngine().process(rows(Tx(1, 0, price=2.0, sol_in=1.5, priority=20_000, tip=1_000_000)))
    assert last(out, "hop_count") == 2
    assert last(out, "input_amount") == pytest.approx(1.5)
    assert last(out, "tip_sol") == pytest.approx(0.001)
    assert last(out, "cost_sol") == pytest.approx((5_000 + 20_000 + 1_000_000) / 1e9)
    assert last(out, "priority_fee_per_cu") == pytest.approx(20_000 / 100_000)
    assert last(out, "cu_utilisation") == pytest.approx(0.5)
    assert last(out, "roi_bps") == pytest.approx(-(1_025_000 / 1e9) / 1.5 * 1e4)
    assert last(out, "price") == pytest.approx(2.0)


def test_missing_leg_decimals_fall_back_to_the_known_decimals_of_the_mint() -> None:
    given = rows(Tx(1, 0, price=2.0, sol_in=1.5), Tx(2, 1_000, price=3.0, sol_in=2.0))
    legs = pl.col("legs").list.eval(pl.element().struct.with_fields(pl.lit(None, pl.UInt8).alias("decimals_in")))
    missing = given.with_columns(legs)
    assert missing.get_column("legs").list.first().struct.field("decimals_in").null_count() == 2
    expected, actual = FeatureEngine().process(given), FeatureEngine().process(missing)
    # the first leg's input is wrapped SOL, known to have the 9 decimals the crafted legs declare
    assert actual.get_column("input_amount").to_list() == pytest.approx([1.5, 2.0])
    assert actual.drop("legs").equals(expected.drop("legs"))


def test_bollinger_bandwidth_comes_from_the_closes_even_when_the_own_price_is_unknown() -> None:
    closes = [float(c) for c in range(1, 21)]
    mean, sd = 10.5, math.sqrt((20**2 - 1) / 12)
    unpriced = Tx(100, 20 * MIN, price=math.inf)  # receives no token: no price of its own
    out = FeatureEngine().process(rows(*minute_bars(closes), unpriced))
    assert last(out, "price") == 0.0
    assert last(out, "bollinger_bandwidth") == pytest.approx(4 * sd / mean, rel=1e-9)
    assert last(out, "bollinger_pct_b") == 0.5  # these need the own price
    assert last(out, "price_zscore") == 0.0


def test_a_pair_priced_far_below_another_in_the_same_batch_keeps_its_vwap_and_volumes() -> None:
    """A window's sums must not lose the digits of a small pair to a large pair's running total."""
    large = [Tx(1 + i, i * 100, price=1e6 * (1 + i % 3), sol_in=1e6, token=OTHER_TOKEN) for i in range(50)]
    small = [Tx(60 + i, 6_000 + i * 100, price=3e-6, sol_in=1e-3 * (1 + i % 2)) for i in range(5)]
    out = FeatureEngine().process(rows(*large, *small)).tail(4)
    prices = out.get_column("price").to_list()
    assert out.get_column("vwap_1m").to_list() == pytest.approx(prices, rel=1e-9)
    assert out.get_column("volume_1m").to_list() == pytest.approx([0.001, 0.003, 0.004, 0.006], rel=1e-12)
    assert out.get_column("volume_24h").to_list() == pytest.approx([0.001, 0.003, 0.004, 0.006], rel=1e-12)
    assert out.get_column("vwap_deviation_bps").abs().max() < 1e-6  # type: ignore[operator]
