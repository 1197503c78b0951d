"""The input contract: every rule rejects with the field named, good records are kept."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pyarrow as pa
import pytest

from arbitrage.errors import ValidationError
from arbitrage.ingest import RAW_SCHEMA, decode_body
from arbitrage.simulator import Simulator

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def batch() -> list[dict[str, Any]]:
    return Simulator(seed=3, start=NOW - timedelta(hours=2)).records(20)


def _json(records: list[dict[str, Any]]) -> bytes:
    return msgspec.json.encode(records)


def _arrow(records: list[dict[str, Any]]) -> bytes:
    table = pa.Table.from_pylist(records, schema=RAW_SCHEMA)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


BREAKS: list[tuple[str, Any, str]] = [
    ("signature", "tooShort", "signature"),
    ("signature", "0" * 80, "signature"),  # '0' is not base58
    ("signature", None, "signature"),
    ("slot", 0, "slot"),
    ("slot", -5, "slot"),
    ("block_time", int(datetime(2019, 1, 1, tzinfo=UTC).timestamp() * 1000), "block_time"),
    ("block_time", int((NOW + timedelta(hours=2)).timestamp() * 1000), "block_time"),
    ("block_time", "not a time", "block_time"),
    ("signer", "O" * 40, "signer"),  # 'O' is not base58
    ("signer", "abc", "signer"),
    ("legs", [], "legs"),
    ("fee_lamports", -1, "fee_lamports"),
    ("priority_fee_lamports", "ten", "priority_fee_lamports"),
    ("jito_tip_lamports", -3, "jito_tip_lamports"),
    ("success", "yes", "success"),
    ("leader", "l" * 10, "leader"),
]


@pytest.mark.parametrize(("field", "value", "named"), BREAKS)
def test_a_broken_rule_rejects_only_that_record_and_names_the_field(
    batch: list[dict[str, Any]], field: str, value: Any, named: str
) -> None:
    batch[5][field] = value
    decoded = decode_body(_json(batch), "json", now=NOW)
    assert [(r.index, r.field) for r in decoded.rejects] == [(5, named)]
    assert len(decoded.frame) == 19
    assert batch[5]["signature"] not in decoded.frame["signature"].to_list() or field != "signature"
    assert decoded.rejects[0].reason


def test_a_missing_required_field_is_named(batch: list[dict[str, Any]]) -> None:
    del batch[2]["signer"]
    del batch[4]["legs"]
    decoded = decode_body(_json(batch), "json", now=NOW)
    assert [(r.index, r.field, r.reason) for r in decoded.rejects] == [
        (2, "signer", "required"),
        (4, "legs", "required"),
    ]


LEG_BREAKS: list[tuple[str, Any]] = [
    ("amount_in", -1),
    ("amount_out", 2**64),
    ("decimals_in", 19),
    ("pool", "bad"),
    ("token_out", "I" * 40),  # 'I' is not base58
    ("dex", ""),
    ("reserve_in", 2**64 + 5),
]


@pytest.mark.parametrize(("field", "value"), LEG_BREAKS)
def test_a_broken_leg_names_its_position_and_field(batch: list[dict[str, Any]], field: str, value: Any) -> None:
    batch[7]["legs"][1][field] = value
    decoded = decode_body(_json(batch), "json", now=NOW)
    assert [(r.index, r.field) for r in decoded.rejects] == [(7, f"legs[1].{field}")]
    assert len(decoded.frame) == 19


def test_more_than_64_legs_are_rejected(batch: list[dict[str, Any]]) -> None:
    batch[0]["legs"] = batch[0]["legs"] * 40
    decoded = decode_body(_json(batch), "json", now=NOW)
    assert [(r.index, r.field) for r in decoded.rejects] == [(0, "legs")]


def test_block_time_accepts_milliseconds_and_rfc3339(batch: list[dict[str, Any]]) -> None:
    millis = batch[0]["block_time"]
    batch[1]["block_time"] = datetime.fromtimestamp(millis / 1000, UTC).isoformat().replace("+00:00", "Z")
    decoded = decode_body(_json(batch[:2]), "json", now=NOW)
    assert not decoded.rejects
    assert decoded.frame["block_time"].to_list() == [millis, millis]


def test_defaults_apply_and_unknown_fields_are_ignored(batch: list[dict[str, Any]]) -> None:
    record = batch[0]
    for optional in ("success", "priority_fee_lamports", "jito_tip_lamports", "bundle_id"):
        record.pop(optional, None)
    record["something_new"] = {"nested": True}
    decoded = decode_body(_json([record]), "json", now=NOW)
    row = decoded.frame.row(0, named=True)
    assert (row["success"], row["priority_fee_lamports"], row["jito_tip_lamports"]) == (True, 0, 0)


def test_ndjson_msgpack_and_arrow_decode_to_the_same_columns(batch: list[dict[str, Any]]) -> None:
    as_json = decode_body(_json(batch), "json", now=NOW).frame
    ndjson = b"\n".join(msgspec.json.encode(r) for r in batch) + b"\n"
    assert decode_body(ndjson, "ndjson", now=NOW).frame.equals(as_json)
    assert decode_body(msgspec.msgpack.encode(batch), "msgpack", now=NOW).frame.equals(as_json)
    assert decode_body(_arrow(batch), "arrow", now=NOW).frame.equals(as_json)


def test_arrow_path_applies_the_same_rules(batch: list[dict[str, Any]]) -> None:
    bad = copy.deepcopy(batch)
    bad[3]["signature"] = "0" * 80
    bad[9]["slot"] = 0
    bad[11]["legs"] = []
    bad[12]["legs"][0]["pool"] = "short"
    expected = [(3, "signature"), (9, "slot"), (11, "legs"), (12, "legs[0].pool")]
    via_arrow = decode_body(_arrow(bad), "arrow", now=NOW)
    via_json = decode_body(_json(bad), "json", now=NOW)
    assert [(r.index, r.field) for r in via_arrow.rejects] == expected
    assert [(r.index, r.field) for r in via_json.rejects] == expected
    assert via_arrow.frame.equals(via_json.frame)


def test_a_malformed_ndjson_line_is_rejected_and_the_rest_kept(batch: list[dict[str, Any]]) -> None:
    lines = [msgspec.json.encode(r) for r in batch[:3]]
    body = b"\n".join([lines[0], b'{"signature": "unterminated', lines[1], lines[2]])
    decoded = decode_body(body, "ndjson", now=NOW)
    assert [(r.index, r.field) for r in decoded.rejects] == [(1, "$")]
    assert decoded.rejects[0].raw == b'{"signature": "unterminated'
    assert len(decoded.frame) == 3


@pytest.mark.parametrize(
    ("body", "encoding"), [(b"hello", "ndjson"), (b"[1, 2", "json"), (b"\x00\x01", "arrow"), (b"\xc1", "msgpack")]
)
def test_a_body_that_is_not_readable_at_all_raises(body: bytes, encoding: str) -> None:
    with pytest.raises(ValidationError):
        decode_body(body, encoding, now=NOW)


def test_rejects_keep_their_original_bytes(batch: list[dict[str, Any]]) -> None:
    batch[1]["slot"] = 0
    decoded = decode_body(_json(batch), "json", now=NOW)
    assert msgspec.json.decode(decoded.rejects[0].raw)["signature"] == batch[1]["signature"]


AGREEMENT: list[tuple[str, Any]] = [
    *[(field, value) for field, value, _ in BREAKS if field != "block_time" or not isinstance(value, str)],
    ("slot", 2**63),
    ("signer", None),
    ("success", None),
    ("priority_fee_lamports", None),
    ("bundle_id", "b" * 129),
    ("legs", None),
    ("legs.dex", "d" * 65),
    ("legs.dex", ""),
    ("legs.pool", "short"),
    ("legs.decimals_in", 19),
    ("legs.decimals_in", 300),
    ("legs.amount_in", None),
    ("legs.reserve_out", 2**63),
    ("extra", {"nested": [1, 2]}),
]


@pytest.mark.parametrize(("field", "value"), AGREEMENT)
def test_columnar_json_and_msgspec_paths_agree_on_every_record(
    batch: list[dict[str, Any]], field: str, value: Any
) -> None:
    """JSON goes through Arrow's reader first; msgpack always through msgspec: same outcome."""
    broken = copy.deepcopy(batch)
    target = broken[5]["legs"][0] if field.startswith("legs.") else broken[5]
    target[field.removeprefix("legs.")] = value
    as_json = decode_body(_json(broken), "json", now=NOW)
    as_ndjson = decode_body(b"\n".join(msgspec.json.encode(r) for r in broken), "ndjson", now=NOW)
    as_msgpack = decode_body(msgspec.msgpack.encode(broken), "msgpack", now=NOW)
    for decoded in (as_json, as_ndjson):
        assert [(r.index, r.field) for r in decoded.rejects] == [(r.index, r.field) for r in as_msgpack.rejects]
        assert decoded.indexes == as_msgpack.indexes
        assert decoded.frame.equals(as_msgpack.frame)


def test_missing_defaulted_fields_take_their_defaults_on_the_columnar_path(batch: list[dict[str, Any]]) -> None:
    for record in batch:
        for field in ("success", "priority_fee_lamports", "jito_tip_lamports", "leader", "bundle_id"):
            record.pop(field, None)
    decoded = decode_body(_json(batch), "json", now=NOW)
    assert not decoded.rejects
    assert decoded.frame["success"].to_list() == [True] * len(batch)
    assert decoded.frame["priority_fee_lamports"].to_list() == [0] * len(batch)
    assert decoded.frame["leader"].null_count() == len(batch)
