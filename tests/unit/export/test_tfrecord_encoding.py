"""The bulk TFRecord encoder produces valid framing and the Examples protobuf decodes to."""

from __future__ import annotations

import io
import struct
from datetime import UTC, datetime

import crc32c
import pyarrow as pa
import pytest
from tfrecord import example_pb2

from arbitrage.export import WriterOptions
from arbitrage.export._tfrecord import TFRecordWriter, encode_records


def _masked(data: bytes) -> int:
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def records(data: bytes) -> list[example_pb2.Example]:
    """Parse TFRecord framing strictly (lengths and both CRCs) and decode each Example."""
    out, offset = [], 0
    while offset < len(data):
        header = data[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[offset + 8 : offset + 12])
        assert length_crc == _masked(header)
        body = data[offset + 12 : offset + 12 + length]
        (body_crc,) = struct.unpack("<I", data[offset + 12 + length : offset + 16 + length])
        assert body_crc == _masked(body)
        out.append(example_pb2.Example.FromString(body))
        offset += 16 + length
    return out


def values(example: example_pb2.Example, key: str) -> list[object] | None:
    if key not in example.features.feature:
        return None
    feature = example.features.feature[key]
    kind = feature.WhichOneof("kind")
    return list(getattr(feature, kind).value)


BATCH = pa.RecordBatch.from_pydict(
    {
        "price": pa.array([1.5, None, -2.25], pa.float64()),
        "small": pa.array([0, 127, 128], pa.uint8()),
        "signed": pa.array([-1, 2**40, None], pa.int64()),
        "huge": pa.array([2**64 - 1, 0, 2**63], pa.uint64()),
        "flag": pa.array([True, False, None], pa.bool_()),
        "at": pa.array(
            [datetime(2024, 1, 1, tzinfo=UTC), None, datetime(1970, 1, 1, tzinfo=UTC)], pa.timestamp("ms", "UTC")
        ),
        "text": pa.array(["a", "é" * 300, None], pa.string()),
        "k" * 130: pa.array([1, 2, 3], pa.int32()),
        "f" * 130: pa.array([0.5, 0.25, None], pa.float32()),
    }
)


def test_every_record_has_valid_length_and_crcs_and_decodes_as_an_example():
    examples = records(bytes(encode_records(BATCH)))
    assert len(examples) == 3


def test_values_round_trip_by_type_and_nulls_leave_the_feature_out():
    first, second, third = records(bytes(encode_records(BATCH)))
    assert values(first, "price") == [1.5] and values(second, "price") is None and values(third, "price") == [-2.25]
    assert [values(e, "small") for e in (first, second, third)] == [[0], [127], [128]]
    assert values(first, "signed") == [-1] and values(second, "signed") == [2**40] and values(third, "signed") is None
    assert values(first, "huge") == [-1] and values(third, "huge") == [-(2**63)]  # uint64 wraps to int64
    assert values(first, "flag") == [1] and values(second, "flag") == [0] and values(third, "flag") is None
    assert values(first, "at") == [1704067200000] and values(second, "at") is None and values(third, "at") == [0]
    assert values(first, "text") == [b"a"] and values(second, "text") == ["é".encode() * 300]
    assert values(third, "text") is None
    assert values(third, "k" * 130) == [3] and values(second, "f" * 130) == [0.25]


def test_the_tfrecord_package_reader_reads_the_writer_output(tmp_path):
    from tfrecord.reader import tfrecord_loader

    sink = io.BytesIO()
    writer = TFRecordWriter()
    writer.open(sink, BATCH.schema, WriterOptions(compression="none"))
    writer.write(BATCH)
    writer.close()
    path = tmp_path / "x.tfrecord"
    path.write_bytes(sink.getvalue())
    rows = list(tfrecord_loader(str(path), None))
    assert rows[1]["text"].decode() == "é" * 300 and rows[0]["price"].tolist() == [1.5]


def test_an_empty_batch_writes_nothing():
    assert bytes(encode_records(BATCH.slice(0, 0))) == b""


def test_a_nested_column_is_refused_at_open():
    batch = pa.RecordBatch.from_pydict({"route": pa.array([["a"]], pa.list_(pa.string()))})
    with pytest.raises(TypeError, match="route"):
        TFRecordWriter().open(io.BytesIO(), batch.schema, WriterOptions(compression="none"))
