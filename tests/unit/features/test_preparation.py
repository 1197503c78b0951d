"""ML preparation: temporal splits with an embargo, scalers fitted on the train split only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import polars as pl
import pytest

from arbitrage.errors import ArbitrageError
from arbitrage.features import DataPreparation, PreparationParams


def frame(n: int = 100) -> pl.DataFrame:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return pl.DataFrame(
        {
            "block_time": [start + timedelta(seconds=i) for i in range(n)],
            "x": [float(i) for i in range(n)],
            "risk_level": ["low" if i % 3 else "high" for i in range(n)],
        }
    )


def test_split_is_in_time_order_with_an_embargo_gap_between_splits() -> None:
    data = frame().sample(fraction=1.0, shuffle=True, seed=1)
    split = DataPreparation().split_temporal(data, train=0.6, val=0.2, test=0.2, gap=timedelta(seconds=5))
    train_end = split.train.get_column("block_time").max()
    assert split.train.height == 60
    assert split.val.get_column("block_time").min() > train_end + timedelta(seconds=5)  # type: ignore[operator]
    assert split.test.get_column("block_time").min() > split.val.get_column("block_time").max() + timedelta(seconds=5)  # type: ignore[operator]
    assert split.val.height == 20 - 5
    assert split.test.height == 20 - 5


def test_split_shares_must_sum_to_one() -> None:
    with pytest.raises(ArbitrageError):
        DataPreparation().split_temporal(frame(), train=0.8, val=0.3, test=0.1)


def test_scaler_is_fitted_on_the_train_split_only() -> None:
    prep = DataPreparation(method="standard")
    split = prep.split_temporal(frame(), train=0.5, val=0.25, test=0.25)
    params = prep.fit(split.train)
    changed_test = split.test.with_columns(pl.col("x") * 1000)
    assert params == prep.fit(split.train)
    assert params.numeric["x"].center == pytest.approx(24.5)  # mean of 0..49, not of 0..99
    train = params.apply(split.train).get_column("x")
    assert train.mean() == pytest.approx(0.0, abs=1e-12)
    assert train.std(ddof=0) == pytest.approx(1.0)
    assert params.apply(changed_test).get_column("x").min() > 50  # far outside the train range


@pytest.mark.parametrize(("method", "low", "high"), [("minmax", 0.0, 1.0), ("robust", -1.0, 1.0)])
def test_minmax_and_robust_scaling_use_train_statistics(method: str, low: float, high: float) -> None:
    data = pl.DataFrame({"block_time": [datetime(2024, 1, 1, tzinfo=UTC)] * 5, "x": [0.0, 1.0, 2.0, 3.0, 4.0]})
    scaled = DataPreparation(method=method).normalize(data)[0].get_column("x")  # type: ignore[arg-type]
    assert scaled.to_list() == pytest.approx(
        [0.0, 0.25, 0.5, 0.75, 1.0] if method == "minmax" else [-1.0, -0.5, 0.0, 0.5, 1.0]
    )
    assert (scaled.min(), scaled.max()) == pytest.approx((low, high))


def test_outliers_are_clipped_to_train_quantiles_and_missing_values_filled_with_the_train_median() -> None:
    train = pl.DataFrame({"x": [1.0, 2.0, 3.0, None, 1000.0]})
    params = DataPreparation(
        method="none", handle_outliers="clip", outlier_quantiles=(0.0, 0.75), missing="median"
    ).fit(train)
    out = params.apply(pl.DataFrame({"x": [None, 5000.0, float("nan")]})).get_column("x").to_list()
    assert out == pytest.approx([2.5, params.numeric["x"].upper, 2.5])
    assert params.numeric["x"].upper < 1000.0


def test_categories_come_from_train_and_unseen_values_fall_to_other() -> None:
    train = pl.DataFrame({"risk_level": ["low", "low", "high"]})
    onehot = DataPreparation().fit(train).apply(pl.DataFrame({"risk_level": ["high", "medium"]}))
    assert onehot.columns == ["risk_level=high", "risk_level=low", "risk_level=__other__"]
    assert onehot.row(1) == (0, 0, 1)
    ordinal = DataPreparation(encoding="ordinal").fit(train).apply(pl.DataFrame({"risk_level": ["high", "medium"]}))
    assert ordinal.get_column("risk_level").to_list() == [1, 3]


def test_fitted_params_round_trip_through_json_and_apply_identically_to_new_data() -> None:
    prep = DataPreparation(method="robust", handle_outliers="clip")
    params = prep.fit(frame())
    restored = msgspec.json.decode(msgspec.json.encode(params), type=PreparationParams)
    new = frame(10)
    assert restored.apply(new).equals(params.apply(new))


def test_a_split_left_empty_by_the_embargo_gap_is_an_error_naming_it() -> None:
    with pytest.raises(ArbitrageError, match="val split is empty"):
        DataPreparation().split_temporal(frame(), train=0.7, val=0.15, test=0.15, gap=timedelta(days=3650))
    empty_test = DataPreparation().split_temporal(frame(), train=0.8, val=0.2, test=0.0, gap=timedelta(0))
    assert empty_test.test.height == 0 and empty_test.val.height > 0


def test_identifiers_are_not_scaled_by_default() -> None:
    """A scaled slot, stream position or Kafka offset is noise to a model and no longer joins back to its row."""
    data = frame().with_columns(
        slot=pl.int_range(300_000_000, 300_000_100, dtype=pl.UInt64),
        stream_position=pl.int_range(1, 101, dtype=pl.UInt64),
        kafka_partition=pl.lit(3, pl.Int32),
        kafka_offset=pl.int_range(0, 100, dtype=pl.Int64),
    )
    params = DataPreparation().fit(data)
    assert set(params.numeric) == {"x"}
    applied = params.apply(data)
    for identifier in ("slot", "stream_position", "kafka_partition", "kafka_offset"):
        assert applied.get_column(identifier).to_list() == data.get_column(identifier).to_list()
