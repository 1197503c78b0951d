"""Whole-body renderers write the same bytes as the per-row renderer."""

from __future__ import annotations

import msgspec
import polars as pl
import pytest

from arbitrage.api.graphql import transaction_from_json
from arbitrage.features import FeatureEngine
from arbitrage.ingest import KafkaOrigins, decode_records
from arbitrage.ingest._decode import decode_body
from arbitrage.ingest._derive import derive
from arbitrage.risk import score_risk
from arbitrage.simulator import Simulator
from arbitrage.stream import json_array, render_json_array, render_ndjson, render_transactions


@pytest.fixture(scope="module")
def stored() -> pl.DataFrame:
    """Rows as ingest stores them: base columns, every feature and the risk columns."""
    records = Simulator(seed=11, start=Simulator.start_for(60)).records(60)
    frame = derive(decode_body(msgspec.json.encode(records), "json").frame, source="test")
    return score_risk(FeatureEngine().process(frame))


def test_json_array_body_is_the_rows_joined_byte_for_byte(stored: pl.DataFrame) -> None:
    assert render_json_array(stored) == json_array(render_transactions(stored))


def test_ndjson_body_is_each_row_and_a_newline(stored: pl.DataFrame) -> None:
    assert render_ndjson(stored) == b"".join(row + b"\n" for row in render_transactions(stored))


def test_rows_nest_features_and_risk_and_keep_times_as_rfc3339(stored: pl.DataFrame) -> None:
    row = msgspec.json.decode(render_transactions(stored.head(1))[0])
    assert row["block_time"].endswith("Z") and "T" in row["block_time"]
    assert "risk_score" not in row and "score" in row["risk"]
    assert "hop_count" in row["features"]


def test_a_line_separator_inside_a_value_does_not_split_a_row(stored: pl.DataFrame) -> None:
    odd = stored.head(2).with_columns(pl.lit("bundle\u2028with\x85separators").alias("bundle_id"))
    rows = render_transactions(odd)
    assert len(rows) == 2
    assert msgspec.json.decode(rows[0])["bundle_id"] == "bundle\u2028with\x85separators"


def test_no_rows_render_as_empty_bodies(stored: pl.DataFrame) -> None:
    empty = stored.head(0)
    assert (render_transactions(empty), render_json_array(empty), render_ndjson(empty)) == ([], b"[]", b"")


def test_odd_values_render_alike_in_rows_and_whole_bodies(stored: pl.DataFrame) -> None:
    odd = stored.head(4).with_columns(
        pl.Series("net_profit_sol", [float("nan"), float("inf"), -0.0, 1e22]),
        pl.Series("fee_lamports", [2**64 - 1, 0, 1, 2], dtype=pl.UInt64),
        pl.Series("bundle_id", ['q"uote\\', None, "\x01ctl", "é\u2028"]),
    )
    assert render_ndjson(odd) == b"".join(row + b"\n" for row in render_transactions(odd))
    assert render_json_array(odd) == json_array(render_transactions(odd))
    assert msgspec.json.decode(render_transactions(odd)[0])["net_profit_sol"] is None


def test_a_row_read_from_kafka_renders_its_origin_at_the_top_level_and_in_graphql() -> None:
    records = Simulator(seed=12, start=Simulator.start_for(3)).records(3)
    origins = KafkaOrigins([0, 3, 3], [7, 2**40, 2**40 + 1])
    decoded = decode_records([msgspec.json.encode(r) for r in records], origins=origins)
    stored = score_risk(FeatureEngine().process(derive(decoded.frame, source="kafka")))
    row = msgspec.json.decode(render_transactions(stored)[1])
    assert (row["kafka_partition"], row["kafka_offset"]) == (3, 2**40)
    assert "kafka_offset" not in row["features"]
    tx = transaction_from_json(render_transactions(stored)[1])
    assert (tx.source, tx.kafka_partition, tx.kafka_offset) == ("kafka", 3, str(2**40))
