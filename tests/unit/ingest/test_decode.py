"""The input contract: every rule rejects with the field named, good records are kept."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import polars as pl
import pyarrow as pa
import pytest

from arbitrage.errors import TooManyRecords, ValidationError
from arbitrage.ingest import RAW_SCHEMA, KafkaOrigins, decode_body, decode_records, decode_table
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
    ("slot", 2**63 - 1, "slot"),  # allowed by type, but no clock reaches it by this block time
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
    ("block_time", "2024-05-01T12:00:00", "block_time"),  # RFC 3339 needs its offset
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
    ("dex", "raydium/amm"),  # a name the `dex` filter could never ask for
    ("dex", "orca\nwhirlpool"),
    ("reserve_in", 2**64 + 5),
]


@pytest.mark.parametrize(("field", "value"), LEG_BREAKS)
def test_a_broken_leg_names_its_position_and_field(batch: list[dict[str, Any]], field: str, value: Any) -> None:
    batch[7]["legs"][1][field] = value
    decoded = decode_body(_json(batch), "json", now=NOW)
    assert [(r.index, r.field) for r in decoded.rejects] == [(7, f"legs[1].{field}")]
    assert len(decoded.frame) == 19


@pytest.mark.parametrize("encode", [_json, _arrow])
def test_a_bad_value_in_several_records_rejects_each_of_them(batch: list[dict[str, Any]], encode: Any) -> None:
    """Patterns are tried once per distinct value; every record holding a bad one is still named."""
    bad_mint, bad_key = "0" * 44, "I" * 44
    batch[3]["legs"][0]["token_in"] = bad_mint
    batch[9]["legs"][-1]["token_in"] = bad_mint
    batch[11]["signer"] = batch[14]["signer"] = bad_key
    batch[16]["leader"] = bad_key
    decoded = decode_body(encode(batch), "arrow" if encode is _arrow else "json", now=NOW)
    assert [(r.index, r.field) for r in decoded.rejects] == [
        (3, "legs[0].token_in"),
        (9, f"legs[{len(batch[9]['legs']) - 1}].token_in"),
        (11, "signer"),
        (14, "signer"),
        (16, "leader"),
    ]
    assert len(decoded.frame) == 15


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


ENCODERS = {
    "json": _json,
    "ndjson": lambda records: b"\n".join(msgspec.json.encode(r) for r in records),
    "msgpack": msgspec.msgpack.encode,
    "arrow": _arrow,
}


@pytest.mark.parametrize("encoding", list(ENCODERS))
def test_a_body_over_the_record_limit_is_refused_whole_and_one_at_it_is_decoded(
    batch: list[dict[str, Any]], encoding: str
) -> None:
    encode = ENCODERS[encoding]
    with pytest.raises(TooManyRecords) as refused:
        decode_body(encode(batch), encoding, now=NOW, max_records=len(batch) - 1)
    assert (refused.value.count, refused.value.limit) == (len(batch), len(batch) - 1)
    assert len(decode_body(encode(batch), encoding, now=NOW, max_records=len(batch)).frame) == len(batch)


@pytest.mark.parametrize(("body", "encoding"), [(b"{}\n" * 30, "ndjson"), (b"[" + b"{}," * 29 + b"{}]", "json")])
def test_tiny_bad_records_over_the_limit_are_refused_before_any_is_checked(body: bytes, encoding: str) -> None:
    with pytest.raises(TooManyRecords):
        decode_body(body, encoding, now=NOW, max_records=29)
    assert len(decode_body(body, encoding, now=NOW, max_records=30).rejects) == 30


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


@pytest.mark.parametrize("separator", [b",", b"\n"])
def test_a_lone_surrogate_escape_rejects_its_record_in_an_array_as_in_ndjson(
    batch: list[dict[str, Any]], separator: bytes
) -> None:
    """Text cut inside an emoji (`"\\ud83d"`), in a field the contract ignores: msgspec refuses the
    whole document for it, so the array's records are split apart by Python's parser instead."""
    lines = [msgspec.json.encode(r) for r in batch[:3]]
    lines[1] = b'{"memo": "caf\\ud83d", ' + lines[1][1:]
    body = b"[" + separator.join(lines) + b"]" if separator == b"," else separator.join(lines)
    decoded = decode_body(body, "json" if separator == b"," else "ndjson", now=NOW)
    assert [(r.index, r.field) for r in decoded.rejects] == [(1, "$")]
    assert decoded.frame["signature"].to_list() == [batch[0]["signature"], batch[2]["signature"]]


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
    ("legs.dex", "raydium amm"),
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


def _poisoned(record: dict[str, Any], poison: str, big: int = 10**20) -> bytes:
    """One record as JSON with a defect that neither reader can turn into a contract record."""
    if poison == "block_time beyond 64 bits":
        return msgspec.json.encode({**record, "block_time": big})
    if poison == "block_time below 64 bits":
        return msgspec.json.encode({**record, "block_time": -big})
    marked = copy.deepcopy(record)
    marked["legs"][0]["dex"] = "poisonXX"
    if poison == "invalid UTF-8":
        return msgspec.json.encode(marked).replace(b"poisonXX", b"poison\xff\xfe")
    assert poison == "nested 2,000 deep"
    return msgspec.json.encode(record)[:-1] + b',"x":' + b"[" * 2000 + b"]" * 2000 + b"}"


def _rfc3339(record: dict[str, Any]) -> dict[str, Any]:
    """The same record with an RFC 3339 block time: a batch holding one is read by msgspec, not Arrow."""
    at = datetime.fromtimestamp(record["block_time"] / 1000, UTC)
    return {**record, "block_time": at.isoformat().replace("+00:00", "Z")}


POISONS = [
    ("block_time beyond 64 bits", "block_time", "is more than 1 h in the future"),
    ("block_time below 64 bits", "block_time", "is before 2020-03-16"),
    ("invalid UTF-8", "$", "malformed record: not valid UTF-8"),
    ("nested 2,000 deep", "$", "malformed record: nested too deeply"),
]


@pytest.mark.parametrize(("poison", "field", "reason"), POISONS)
@pytest.mark.parametrize("encoding", ["ndjson", "kafka"])
def test_a_poisoned_record_is_rejected_and_the_others_kept(
    batch: list[dict[str, Any]], poison: str, field: str, reason: str, encoding: str
) -> None:
    batch[0] = _rfc3339(batch[0])
    elements = [msgspec.json.encode(r) for r in batch]
    elements[4] = _poisoned(batch[4], poison)
    if encoding == "kafka":
        decoded = decode_records(elements, now=NOW)
    else:
        decoded = decode_body(b"\n".join(elements), "ndjson", now=NOW)
    assert [(r.index, r.field) for r in decoded.rejects] == [(4, field)]
    assert decoded.rejects[0].reason.startswith(reason)
    assert decoded.rejects[0].raw == elements[4]
    assert len(decoded.frame) == 19


@pytest.mark.parametrize(
    ("poison", "field", "reason", "encoding"),
    [*((*p, "json") for p in POISONS[:3]), (*POISONS[0], "msgpack"), (*POISONS[2], "msgpack")],
)
def test_a_poisoned_record_in_an_array_is_rejected_and_the_others_kept(
    batch: list[dict[str, Any]], poison: str, field: str, reason: str, encoding: str
) -> None:
    big = 2**64 - 1 if encoding == "msgpack" else 10**20  # msgpack holds no integer beyond 64 bits
    elements = [msgspec.json.encode(r) for r in batch]
    elements[4] = _poisoned(batch[4], poison, big)
    body = b"[" + b",".join(elements) + b"]"
    if encoding == "msgpack":
        poisoned = msgspec.json.decode(elements[4].replace(b"poison\xff\xfe", b"poisonXX"))
        body = msgspec.msgpack.encode([*batch[:4], poisoned, *batch[5:]]).replace(b"poisonXX", b"poison\xff\xfe")
    decoded = decode_body(body, encoding, now=NOW)
    assert [(r.index, r.field) for r in decoded.rejects] == [(4, field)]
    assert decoded.rejects[0].reason.startswith(reason)
    assert len(decoded.frame) == 19


def test_a_json_array_nested_too_deeply_is_refused_as_a_whole_with_the_reason(batch: list[dict[str, Any]]) -> None:
    body = b"[" + b",".join([msgspec.json.encode(batch[0]), _poisoned(batch[1], "nested 2,000 deep")]) + b"]"
    with pytest.raises(ValidationError, match="nested too deeply"):
        decode_body(body, "json", now=NOW)


def test_costs_whose_sum_overflows_64_bits_are_rejected_not_wrapped(batch: list[dict[str, Any]]) -> None:
    """The largest sum that fits (2^64 - 1, record 7) is kept."""
    batch[6] |= {"fee_lamports": 2**64 - 1, "priority_fee_lamports": 2**64 - 1, "jito_tip_lamports": 2}
    batch[7] |= {"fee_lamports": 2**63, "priority_fee_lamports": 2**63 - 1, "jito_tip_lamports": 0}
    for body, encoding in ((_json(batch), "json"), (_arrow(batch), "arrow")):
        decoded = decode_body(body, encoding, now=NOW)
        assert [(r.index, r.field) for r in decoded.rejects] == [(6, "fee_lamports")], encoding
        assert "< 2^64" in decoded.rejects[0].reason
        assert len(decoded.frame) == 19


def test_arrow_nulls_in_columns_with_defaults_take_the_defaults(batch: list[dict[str, Any]]) -> None:
    """A columnar null is a value left out (as when a table is built from dicts without the key)."""
    batch[2]["success"] = None
    batch[3]["priority_fee_lamports"] = None
    batch[4]["jito_tip_lamports"] = None
    batch[5]["success"] = False
    decoded = decode_body(_arrow(batch), "arrow", now=NOW)
    assert decoded.rejects == []
    frame = decoded.frame
    assert frame["success"].to_list()[2:6] == [True, True, True, False]
    assert (frame["priority_fee_lamports"][3], frame["jito_tip_lamports"][4]) == (0, 0)
    assert frame["other_cost_lamports"].to_list() == [0] * 20


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_arrow_timestamps_of_any_unit_become_milliseconds(batch: list[dict[str, Any]], unit: str) -> None:
    table = pa.Table.from_pylist(batch, schema=RAW_SCHEMA)
    ms = pa.array([r["block_time"] // 1000 * 1000 for r in batch], pa.int64())
    per_ms = {"s": 0.001, "ms": 1, "us": 1_000, "ns": 1_000_000}[unit]
    raw = pa.array([int(t * per_ms) + (7 if unit in ("us", "ns") else 0) for t in ms.to_pylist()], pa.int64())
    column = raw.cast(pa.timestamp(unit, "UTC"))
    table = table.set_column(table.schema.get_field_index("block_time"), "block_time", column)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    decoded = decode_body(sink.getvalue().to_pybytes(), "arrow", now=NOW)
    assert decoded.rejects == []
    assert decoded.frame["block_time"].to_list() == ms.to_pylist()


def test_arrow_seconds_too_large_for_milliseconds_name_the_column(batch: list[dict[str, Any]]) -> None:
    table = pa.Table.from_pylist(batch, schema=RAW_SCHEMA)
    huge = pa.array([2**62] * len(batch), pa.int64()).cast(pa.timestamp("s"))
    table = table.set_column(table.schema.get_field_index("block_time"), "block_time", huge)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(ValidationError) as raised:
        decode_body(sink.getvalue().to_pybytes(), "arrow", now=NOW)
    assert raised.value.field == "block_time"


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def test_a_value_a_column_cannot_hold_rejects_its_record_not_the_batch(batch: list[dict[str, Any]]) -> None:
    """Columns as a writer infers them (int64, large strings): one negative fee, then slots as text."""
    batch[4]["fee_lamports"] = -5
    table = pl.DataFrame(batch).to_arrow()
    decoded = decode_body(_ipc(table), "arrow", now=NOW)
    assert [(r.index, r.field) for r in decoded.rejects] == [(4, "fee_lamports")]
    assert decoded.frame["signature"].to_list() == [r["signature"] for i, r in enumerate(batch) if i != 4]

    as_text = table.set_column(table.schema.get_field_index("slot"), "slot", pa.array([str(r["slot"]) for r in batch]))
    decoded = decode_table(as_text, now=NOW)
    assert {r.field for r in decoded.rejects} == {"slot"}
    assert len(decoded.rejects) == 20
    assert decoded.rejects[0].reason == "Expected `int`, got `str`"


def test_a_bad_value_leaves_its_neighbours_nulls_as_defaults(batch: list[dict[str, Any]]) -> None:
    """Columns as a writer infers them (int64 fees and amounts, optional columns null): a negative
    value rejects only its record, naming the field; the others keep the defaults their nulls stand for."""
    for record in batch:
        record["jito_tip_lamports"] = record["success"] = None
    batch[2]["fee_lamports"] = -1
    batch[7]["legs"][1]["amount_in"] = -3
    decoded = decode_table(pl.DataFrame(batch).to_arrow(), now=NOW)
    assert [(r.index, r.field) for r in decoded.rejects] == [(2, "fee_lamports"), (7, "legs[1].amount_in")]
    assert decoded.indexes == [i for i in range(len(batch)) if i not in (2, 7)]
    assert decoded.frame["signature"].to_list() == [batch[i]["signature"] for i in decoded.indexes]
    assert decoded.frame["success"].all()
    assert decoded.frame["jito_tip_lamports"].sum() == 0


def test_text_in_a_number_column_is_refused_as_json_refuses_it(batch: list[dict[str, Any]]) -> None:
    table = pl.DataFrame(batch).to_arrow()
    slots = pa.array([str(r["slot"]) if i == 5 else None for i, r in enumerate(batch)], pa.string())
    mixed = table.set_column(table.schema.get_field_index("slot"), "slot", slots)
    decoded = decode_table(mixed, now=NOW)
    assert (decoded.rejects[5].field, decoded.rejects[5].reason) == ("slot", "Expected `int`, got `str`")
    as_numbers = table.set_column(table.schema.get_field_index("slot"), "slot", pa.array([r["slot"] for r in batch]))
    assert decode_table(as_numbers, now=NOW).rejects == []


def test_columns_that_cast_stay_columnar_and_equal_the_json_reading(batch: list[dict[str, Any]]) -> None:
    decoded = decode_table(pl.DataFrame(batch).to_arrow(), now=NOW)
    assert decoded.rejects == []
    assert decoded.frame.equals(decode_body(_json(batch), "json", now=NOW).frame)


def test_records_without_the_defaulted_fields_stay_on_the_columnar_path(batch: list[dict[str, Any]]) -> None:
    """Nearly every record leaves `other_cost_lamports` out; that must not send batches to msgspec."""
    from arbitrage.ingest._decode import _arrow_columns

    batch[3]["other_cost_lamports"] = 7
    elements = [msgspec.json.encode(r) for r in batch]
    frame = _arrow_columns(elements)
    assert frame is not None
    assert frame["other_cost_lamports"].to_list() == [0, 0, 0, 7] + [0] * 16
    batch[5]["other_cost_lamports"] = None  # an explicit null: msgspec decides (and rejects it)
    assert _arrow_columns([msgspec.json.encode(r) for r in batch]) is None
    assert [(r.index, r.field) for r in decode_body(_json(batch), "json", now=NOW).rejects] == [
        (5, "other_cost_lamports")
    ]


def test_kafka_origins_follow_their_records_past_a_reject_and_a_record_cannot_claim_one(
    batch: list[dict[str, Any]],
) -> None:
    batch[3]["slot"] = 0
    batch[7]["kafka_partition"], batch[7]["kafka_offset"] = 9, 999  # a sender cannot set its own origin
    elements = [msgspec.json.encode(r) for r in batch]
    origins = KafkaOrigins([i % 4 for i in range(20)], [100 + i for i in range(20)])
    decoded = decode_records(elements, origins=origins, now=NOW)
    assert [r.index for r in decoded.rejects] == [3]
    by_signature = {row["signature"]: row for row in decoded.frame.iter_rows(named=True)}
    for index, record in enumerate(batch):
        if index != 3:
            row = by_signature[record["signature"]]
            assert (row["kafka_partition"], row["kafka_offset"]) == (index % 4, 100 + index)
    assert "kafka_partition" not in decode_records(elements, now=NOW).frame.columns
