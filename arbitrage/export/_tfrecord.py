"""TFRecord files of `tf.train.Example`s, encoded in bulk from Arrow columns.

A per-row protobuf loop tops out far below the export targets, so each column is encoded
straight into protobuf wire format with numpy and pyarrow kernels:

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }      one map entry per column
    Feature  { BytesList = 1 | FloatList = 2 | Int64List = 3 }
    *List    { repeated value = 1; }                    floats and int64s packed

and the entries of a row are concatenated with `binary_join_element_wise`. Each record is
framed as TFRecord does: uint64 length, masked CRC-32C of the length, the bytes, masked
CRC-32C of the bytes. Columns map as: floats → FloatList (float32, as TensorFlow stores
them; NaN and ±inf kept, beyond ±3.4e38 ±inf), integers, booleans (0/1) and timestamps (epoch units of the column) → Int64List
(UInt64 values above 2^63 wrap to negative int64), strings → BytesList (UTF-8). A null
leaves the feature out of that row's Example, as TensorFlow expects for missing values.
"""

from __future__ import annotations

from typing import BinaryIO, ClassVar

import crc32c
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from arbitrage.export._writers import CONVERTED_BATCH_ROWS, ColumnType, WriterOptions, epoch_format, open_compressed

_MASK_DELTA = 0xA282EAD8
_KIND_NAMES = {1: "bytes_list", 2: "float_list", 3: "int64_list"}
SLICE_ROWS = 8_192


class TFRecordWriter:
    """One `tf.train.Example` per row; `gzip` compression is TensorFlow's `GZIP` type."""

    compressions: ClassVar[tuple[str, ...]] = ("none", "gzip")
    default_compression: ClassVar[str] = "none"
    nested_types: ClassVar[bool] = False
    batch_rows: ClassVar[int] = CONVERTED_BATCH_ROWS

    def extension(self, options: WriterOptions) -> str:
        return "tfrecord.gz" if options.compression == "gzip" else "tfrecord"

    def column_type(self, field: pa.Field, options: WriterOptions) -> ColumnType:
        """The `tf.train.Feature` list the column is written as."""
        return {"type": _KIND_NAMES[_kind(field)], **epoch_format(field.type)}

    def open(self, sink: BinaryIO, schema: pa.Schema, options: WriterOptions) -> None:
        self._out = open_compressed(sink, options.compression)
        self._schema = schema
        for field in schema:
            _kind(field)  # fail at open, not mid-export, on a column TFRecord cannot hold

    def write(self, batch: pa.RecordBatch) -> None:
        # Encoded Examples are several times the batch's size: encode in slices to bound memory.
        for offset in range(0, batch.num_rows, SLICE_ROWS):
            self._out.write(encode_records(batch.slice(offset, SLICE_ROWS)))

    def close(self) -> None:
        self._out.close()


def encode_records(batch: pa.RecordBatch) -> memoryview:
    """The TFRecord-framed Examples of every row of a flat batch, concatenated."""
    entries = [_entry(field.name, column) for field, column in zip(batch.schema, batch.columns, strict=True)]
    features = pc.binary_join_element_wise(*entries, b"") if entries else pa.array([b""] * batch.num_rows, pa.binary())
    example = _prefixed(0x0A, features)
    data_offsets, view = _buffers(example)
    lengths = np.diff(data_offsets).astype("<u8")
    length_crcs = np.fromiter(
        (crc32c.crc32c(b) for b in _rows(lengths.tobytes(), 8, len(lengths))), np.uint32, len(lengths)
    )
    data_crcs = np.fromiter(
        (crc32c.crc32c(view[a:b]) for a, b in zip(data_offsets[:-1].tolist(), data_offsets[1:].tolist(), strict=True)),
        np.uint32,
        len(lengths),
    )
    header = np.empty((len(lengths), 12), np.uint8)
    header[:, :8] = lengths.view(np.uint8).reshape(-1, 8)
    header[:, 8:] = _masked(length_crcs).view(np.uint8).reshape(-1, 4)
    footer = _masked(data_crcs).view(np.uint8).reshape(-1, 4)
    framed = pc.binary_join_element_wise(_fixed(header), example, _fixed(footer), b"")
    return _buffers(framed)[1]


def _entry(key: str, column: pa.Array) -> pa.Array:
    """Per row, the bytes of one `feature` map entry (empty where the value is null)."""
    kind = _kind(pa.field(key, column.type))
    key_bytes = key.encode()
    valid = column.is_valid().to_numpy(zero_copy_only=False) if column.null_count else None
    if kind == 2 and len(key_bytes) < 110:
        # 0A len | 0A klen key | 12 08 | 12 06 | 0A 04 | float32: fixed width, no joins.
        prefix = bytes([0x0A, 12 + len(key_bytes), 0x0A, len(key_bytes)]) + key_bytes + b"\x12\x08\x12\x06\x0a\x04"
        values = column.cast(pa.float32()).fill_null(0).to_numpy(zero_copy_only=False)
        matrix = np.empty((len(values), len(prefix) + 4), np.uint8)
        matrix[:, : len(prefix)] = np.frombuffer(prefix, np.uint8)
        matrix[:, len(prefix) :] = values.astype("<f4").view(np.uint8).reshape(-1, 4)
        lengths = np.full(len(values), matrix.shape[1], np.int64)
    elif kind == 3 and len(key_bytes) < 110:
        # 0A len | 0A klen key | 12 (4+L) | 1A (2+L) | 0A L | varint(L bytes): one matrix, no joins.
        digits, varint_lengths = _varint_matrix(_as_int64(column).view(np.uint64))
        prefix = bytes([0x0A, 0, 0x0A, len(key_bytes)]) + key_bytes + b"\x12\x00\x1a\x00\x0a\x00"
        width = len(prefix)
        matrix = np.empty((len(digits), width + 10), np.uint8)
        matrix[:, :width] = np.frombuffer(prefix, np.uint8)
        matrix[:, 1] = 8 + len(key_bytes) + varint_lengths
        matrix[:, width - 5] = 4 + varint_lengths
        matrix[:, width - 3] = 2 + varint_lengths
        matrix[:, width - 1] = varint_lengths
        matrix[:, width:] = digits
        lengths = width + varint_lengths
    else:
        return _entry_joined(key_bytes, kind, column)
    if valid is not None:
        lengths = np.where(valid, lengths, 0)
    return _ragged(matrix, lengths)


def _entry_joined(key_bytes: bytes, kind: int, column: pa.Array) -> pa.Array:
    """The general (variable-length) entry encoding, used for bytes and very long keys."""
    if kind == 2:
        values = column.cast(pa.float32()).fill_null(0).to_numpy(zero_copy_only=False)
        body = np.empty((len(values), 6), np.uint8)
        body[:, 0] = 0x0A
        body[:, 1] = 4
        body[:, 2:] = values.astype("<f4").view(np.uint8).reshape(-1, 4)
        list_body = _fixed(body)
    elif kind == 3:
        list_body = _int64_list(_as_int64(column))
    else:
        list_body = _prefixed(0x0A, column.cast(pa.binary()).fill_null(b""))
    feature = _prefixed(0x12 if kind == 2 else (0x1A if kind == 3 else 0x0A), list_body)
    entry_body = pc.binary_join_element_wise(_encode_key(key_bytes), _prefixed(0x12, feature), b"")
    entry = _prefixed(0x0A, entry_body)
    if column.null_count:
        entry = pc.if_else(column.is_valid(), entry, pa.scalar(b"", pa.binary()))
    return entry


def _kind(field: pa.Field) -> int:
    """The Feature oneof field number of a column: 1 bytes, 2 float, 3 int64."""
    t = field.type
    if pa.types.is_floating(t):
        return 2
    if pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_temporal(t):
        return 3
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return 1
    raise TypeError(f"column {field.name!r} of type {t} cannot be written to TFRecord; flatten it first")


def _as_int64(column: pa.Array) -> np.ndarray:
    t = column.type
    if pa.types.is_boolean(t):
        column = column.cast(pa.int8())
    elif pa.types.is_temporal(t):
        column = column.cast(pa.int64()) if not pa.types.is_date32(t) else column.cast(pa.int32())
    values: np.ndarray = column.fill_null(0).to_numpy(zero_copy_only=False)
    return values.astype(np.int64) if values.dtype != np.uint64 else values.view(np.int64)


def _int64_list(values: np.ndarray) -> pa.Array:
    """Int64List with one packed value per row: 0x0A, length, varint."""
    digits, lengths = _varint_matrix(values.view(np.uint64))
    body = np.empty((len(values), 12), np.uint8)
    body[:, 0] = 0x0A
    body[:, 1] = lengths
    body[:, 2:] = digits
    return _ragged(body, lengths + 2)


def _encode_key(key: bytes) -> bytes:
    return b"\x0a" + _varint_bytes(len(key)) + key


def _prefixed(tag: int, values: pa.Array) -> pa.Array:
    """`tag`, varint(length), value: a length-delimited protobuf field per row."""
    offsets, _ = _buffers(values)
    digits, lengths = _varint_matrix(np.diff(offsets).astype(np.uint64))
    head = np.empty((len(lengths), 11), np.uint8)
    head[:, 0] = tag
    head[:, 1:] = digits
    return pc.binary_join_element_wise(_ragged(head, lengths + 1), values, b"")


def _varint_matrix(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Varint digits of uint64 values, as an (n, 10) byte matrix and the used length per row."""
    values = values.astype(np.uint64, copy=False)
    shifts = np.arange(10, dtype=np.uint64) * np.uint64(7)
    groups = ((values[:, None] >> shifts) & np.uint64(0x7F)).astype(np.uint8)
    lengths = np.ones(len(values), np.int64)
    for k in range(1, 10):
        lengths += values >= np.uint64(1 << (7 * k))
    more = np.arange(10)[None, :] < (lengths[:, None] - 1)
    groups |= (more * 0x80).astype(np.uint8)
    return groups, lengths


def _varint_bytes(value: int) -> bytes:
    digits, lengths = _varint_matrix(np.array([value], np.uint64))
    return digits[0, : lengths[0]].tobytes()


def _ragged(matrix: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """A binary array whose row i is the first lengths[i] bytes of matrix row i."""
    keep = np.arange(matrix.shape[1])[None, :] < lengths[:, None]
    data = np.ascontiguousarray(matrix[keep])
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(pa.binary(), len(lengths), [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _fixed(matrix: np.ndarray) -> pa.Array:
    return _ragged(matrix, np.full(matrix.shape[0], matrix.shape[1], np.int64))


def _buffers(values: pa.Array) -> tuple[np.ndarray, memoryview]:
    """Offsets (rebased to 0) and a zero-copy view of the data of a binary array without nulls."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_binary(values.type):
        values = values.cast(pa.binary())
    _, offsets_buf, data_buf = values.buffers()
    offsets = np.frombuffer(offsets_buf, np.int32, len(values) + 1, values.offset * 4).astype(np.int64)
    start = int(offsets[0])
    data = memoryview(data_buf)[start : int(offsets[-1])] if data_buf is not None else memoryview(b"")
    return offsets - start, data


def _rows(data: bytes, width: int, count: int) -> list[bytes]:
    return [data[i * width : (i + 1) * width] for i in range(count)]


def _masked(crcs: np.ndarray) -> np.ndarray:
    wide = crcs.astype(np.uint64)
    rotated = ((wide >> np.uint64(15)) | (wide << np.uint64(17))) & np.uint64(0xFFFFFFFF)
    return ((rotated + np.uint64(_MASK_DELTA)) & np.uint64(0xFFFFFFFF)).astype("<u4")
