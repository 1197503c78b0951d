"""Opportunity records: the API's JSON of each profitable stored row, less the keys `opportunity_omit` names."""

from __future__ import annotations

from pathlib import Path

import msgspec
import polars as pl
import pytest

from arbitrage.config import load_settings
from arbitrage.errors import ConfigError
from arbitrage.features import FeatureEngine
from arbitrage.ingest._decode import decode_body
from arbitrage.ingest._derive import derive
from arbitrage.ingest.kafka import KafkaOptions
from arbitrage.ingest.kafka._records import opportunities
from arbitrage.risk import score_risk
from arbitrage.simulator import Simulator
from arbitrage.stream import render_transactions


@pytest.fixture(scope="module")
def stored() -> pl.DataFrame:
    """Rows as ingest stores them (features and risk included), with the Kafka origin columns."""
    records = Simulator(seed=19, start=Simulator.start_for(80)).records(80)
    frame = derive(decode_body(msgspec.json.encode(records), "json").frame, source="kafka")
    return score_risk(FeatureEngine().process(frame)).with_columns(
        pl.int_range(pl.len()).cast(pl.Int32).mod(3).alias("kafka_partition"),
        pl.int_range(pl.len()).cast(pl.Int64).alias("kafka_offset"),
    )


def _api_rows(stored: pl.DataFrame) -> dict[str, dict[str, object]]:
    profitable = stored.filter(pl.col("net_profit_sol") > 0)
    return {row["signature"]: row for row in map(msgspec.json.decode, render_transactions(profitable))}


def test_by_default_an_opportunity_is_the_api_row_without_its_features(stored: pl.DataFrame) -> None:
    published = opportunities(stored, KafkaOptions(bootstrap_servers="127.0.0.1:9092").opportunity_omit)
    api = _api_rows(stored)
    assert 0 < len(published) < len(stored)
    assert [key.decode() for key in published.keys] == list(api)
    for key, value in zip(published.keys, published.values, strict=True):
        row = msgspec.json.decode(value)
        expected = {k: v for k, v in api[key.decode()].items() if k != "features"}
        assert row == expected
        assert "risk" in row and "legs" in row


def test_omitting_nothing_publishes_the_api_row_byte_for_byte(stored: pl.DataFrame) -> None:
    published = opportunities(stored, ())
    assert published.values == render_transactions(stored.filter(pl.col("net_profit_sol") > 0))


def test_each_named_key_is_left_out_and_the_partitions_follow_the_rows(stored: pl.DataFrame) -> None:
    published = opportunities(stored, ("features", "legs", "risk"))
    profitable = stored.filter(pl.col("net_profit_sol") > 0)
    rows = [msgspec.json.decode(value) for value in published.values]
    assert all({"features", "legs", "risk"}.isdisjoint(row) and "route" in row for row in rows)
    assert published.partitions == profitable["kafka_partition"].to_list()


@pytest.mark.parametrize(
    ("value", "message"),
    [('["feature"]', "'feature' is not a key"), ('["signature"]', "always keeps its signature")],
)
def test_a_bad_opportunity_omit_stops_start_up_naming_the_key(value: str, message: str, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"[kafka]\nopportunity_omit = {value}\n")
    with pytest.raises(ConfigError, match=rf"`kafka.opportunity_omit`: .*{message}"):
        load_settings(config, env={})


def test_opportunity_omit_reaches_the_consumer_options() -> None:
    settings = load_settings(env={"ARB_KAFKA__OPPORTUNITY_OMIT": '["legs"]'})
    assert KafkaOptions.from_settings(settings.kafka).opportunity_omit == ("legs",)
