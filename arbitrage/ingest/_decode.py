"""Bytes in any accepted encoding → a columnar batch of contract records, plus rejects.

JSON takes the columnar path first: Arrow's JSON reader parses the records straight into
columns in C++ threads (off the GIL) against a strict schema, and every rule is then
checked on columns with polars. Anything that reader cannot take exactly (a type
mismatch, an RFC 3339 `block_time`, an explicit null where msgspec would refuse one)
sends the batch to the msgspec path, which decodes the whole batch with one typed call
and, only when that fails, record by record, to keep the good records and to name the
field that broke a rule in each bad one. Both paths end in the same column checks.
"""

from __future__ import annotations

import bisect
import gc
import itertools
import json
import operator
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import msgspec
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from arbitrage.errors import TooManyRecords, ValidationError
from arbitrage.model import (
    BASE58_PATTERN,
    COST_FIELDS,
    DEX_PATTERN,
    EARLIEST_BLOCK_TIME,
    KAFKA_ORIGIN,
    MAX_CLOCK_SKEW,
    MAX_LEGS,
    UINT64_LIMIT,
    TransactionIn,
)

JSON = "json"
NDJSON = "ndjson"
MSGPACK = "msgpack"
ARROW = "arrow"

_CONTENT_TYPES = {
    "application/json": JSON,
    "application/x-ndjson": NDJSON,
    "application/ndjson": NDJSON,
    "application/jsonl": NDJSON,
    "application/msgpack": MSGPACK,
    "application/x-msgpack": MSGPACK,
    "application/vnd.msgpack": MSGPACK,
    "application/vnd.apache.arrow.stream": ARROW,
}

RAW_LEG_SCHEMA = pa.struct(
    [
        ("dex", pa.string()),
        ("pool", pa.string()),
        ("token_in", pa.string()),
        ("token_out", pa.string()),
        ("amount_in", pa.uint64()),
        ("amount_out", pa.uint64()),
        ("decimals_in", pa.uint8()),
        ("decimals_out", pa.uint8()),
        ("reserve_in", pa.uint64()),
        ("reserve_out", pa.uint64()),
    ]
)
RAW_SCHEMA = pa.schema(
    [
        ("signature", pa.string()),
        ("slot", pa.uint64()),
        ("block_time", pa.int64()),
        ("signer", pa.string()),
        ("success", pa.bool_()),
        ("fee_lamports", pa.uint64()),
        ("priority_fee_lamports", pa.uint64()),
        ("jito_tip_lamports", pa.uint64()),
        ("other_cost_lamports", pa.uint64()),
        ("compute_units_consumed", pa.uint64()),
        ("compute_unit_limit", pa.uint64()),
        ("bundle_id", pa.string()),
        ("leader", pa.string()),
        ("legs", pa.list_(RAW_LEG_SCHEMA)),
    ]
)
"""Columns of a decoded batch; also the schema documented for Arrow IPC ingest (`block_time` in ms)."""

_DEFAULTS = {"success": True, "priority_fee_lamports": 0, "jito_tip_lamports": 0, "other_cost_lamports": 0}
"""What a record left without these fields gets (an Arrow null counts as left out)."""
_MIN_SLOT_MS = 250
"""Solana aims at 400 ms slots; a slot number that needs faster ones is corrupt, and would make
every later transaction look late to the feature engine."""
_JSON_BLOCK_BYTES = 4 << 20
_ARROW_JSON_OPTIONS = pa_json.ParseOptions(explicit_schema=RAW_SCHEMA, unexpected_field_behavior="ignore")
_SCALAR_FIELDS = [f.name for f in RAW_SCHEMA if f.name not in ("legs", "block_time")]
_LEG_FIELDS = [f.name for f in RAW_LEG_SCHEMA]
_BASE58 = BASE58_PATTERN
_PUBKEY = r"^[1-9A-HJ-NP-Za-km-z]{32,44}$"
_LEG_DTYPES = {f.name: pl.Series(pa.array([], f.type)).dtype for f in RAW_LEG_SCHEMA}


class Reject(msgspec.Struct):
    """A record that broke the contract: where it was in the body, which field, why."""

    index: int
    field: str
    reason: str
    raw: bytes


class DecodedBatch(msgspec.Struct):
    """Valid records as columns (`RAW_SCHEMA`, body order) and the rejects."""

    frame: pl.DataFrame
    rejects: list[Reject]
    indexes: list[int]
    """Position in the body of each row of `frame`."""


def reject_older(decoded: DecodedBatch, oldest: datetime, reason: str) -> DecodedBatch:
    """`decoded` with the rows whose block time is before `oldest` moved to its rejects (field `block_time`).

    Their dead letters hold the record as decoded, re-encoded as JSON (such rows are rare).
    """
    old = decoded.frame.get_column("block_time") < int(oldest.timestamp() * 1000)
    if not old.any():
        return decoded
    gone = old.arg_true().to_list()
    raws = [_ROW_JSON.encode(row) for row in decoded.frame.filter(old).to_dicts()]
    rejects = [Reject(decoded.indexes[row], "block_time", reason, raw) for row, raw in zip(gone, raws, strict=True)]
    return DecodedBatch(
        decoded.frame.filter(~old),
        sorted([*decoded.rejects, *rejects], key=operator.attrgetter("index")),
        [index for index, is_old in zip(decoded.indexes, old.to_list(), strict=True) if not is_old],
    )


def encoding_for(content_type: str | None, body: bytes) -> str:
    """Pick the decoder from the Content-Type, sniffing JSON vs NDJSON when unsure."""
    media = (content_type or "").split(";")[0].strip().lower()
    encoding = _CONTENT_TYPES.get(media)
    if encoding in (MSGPACK, ARROW, NDJSON):
        return encoding
    head = body.lstrip()[:1]
    return JSON if head == b"[" else NDJSON


def decode_body(
    body: bytes, encoding: str, *, now: datetime | None = None, max_records: int | None = None
) -> DecodedBatch:
    """Decode a request body. Raises ValidationError when the body as a whole is unreadable.

    Raises TooManyRecords, before any record is decoded or checked, when the body holds more
    than `max_records`.
    """
    with _gc_paused():
        if encoding == ARROW:
            return _decode_arrow(body, now, max_records)
        if encoding == MSGPACK:
            return _decode_items(body, msgspec.msgpack.Decoder(list[TransactionIn]), _MSGPACK_RAW, now, max_records)
        if encoding == JSON:
            return _decode_json_array(body, now, max_records)
        return _decode_ndjson(body, now, max_records)


def _check_count(count: int, limit: int | None) -> None:
    """Called as soon as a decoder knows how many records a body holds, before it checks any."""
    if limit is not None and count > limit:
        raise TooManyRecords(limit, count)


class KafkaOrigins(msgspec.Struct, frozen=True):
    """The partition and offset each record of a Kafka batch was read at, parallel to the records."""

    partitions: list[int]
    offsets: list[int]

    def part(self, start: int, stop: int) -> KafkaOrigins:
        return KafkaOrigins(self.partitions[start:stop], self.offsets[start:stop])


def decode_records(
    records: Sequence[bytes], *, origins: KafkaOrigins | None = None, now: datetime | None = None
) -> DecodedBatch:
    """Decode one JSON object per element (Kafka messages, NDJSON lines), each tagged with its origin if given."""
    with _gc_paused():
        decoded = _decode_elements(list(records), now)
    if origins is not None:
        rows = pl.Series(decoded.indexes, dtype=pl.UInt32)
        decoded.frame = decoded.frame.with_columns(
            pl.Series(KAFKA_ORIGIN[0], origins.partitions, pl.Int32).gather(rows),
            pl.Series(KAFKA_ORIGIN[1], origins.offsets, pl.Int64).gather(rows),
        )
    return decoded


_UNREADABLE = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
"""What decoding bytes raises besides a contract violation: bad syntax, bad UTF-8, nesting too deep."""

_JSON_LIST = msgspec.json.Decoder(list[TransactionIn])
_JSON_ONE = msgspec.json.Decoder(TransactionIn)
_JSON_RAW = msgspec.json.Decoder(list[msgspec.Raw])
_MSGPACK_RAW = msgspec.msgpack.Decoder(list[msgspec.Raw])
_MSGPACK_ONE = msgspec.msgpack.Decoder(TransactionIn)
_ROW_JSON = msgspec.json.Encoder()


def _decode_json_array(body: bytes, now: datetime | None, max_records: int | None) -> DecodedBatch:
    try:
        elements = _JSON_RAW.decode(body)
    except (*_UNREADABLE, msgspec.ValidationError) as exc:
        split = _split_by_python(body)
        if split is None:
            raise ValidationError("$", f"body is not a JSON array of records: {_unreadable(exc)}") from exc
        _check_count(len(split), max_records)
        return _decode_elements(split, now)
    _check_count(len(elements), max_records)
    frame = _arrow_columns(elements)
    if frame is None:
        return _decode_items(body, _JSON_LIST, _JSON_RAW, now, max_records)
    return _check_rules(frame, list(range(len(frame))), [], now, lambda i: bytes(elements[i]))


def _split_by_python(body: bytes) -> list[bytes] | None:
    """The records of an array msgspec refuses whole, re-encoded one by one; None if it is no array.

    RFC 8259 lets a string hold an escaped lone surrogate (text cut in the middle of an
    emoji); msgspec refuses the document for it, Python's parser does not. So only the
    record holding it is rejected, as on the NDJSON path.
    """
    try:
        items = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(items, list):
        return None
    return [json.dumps(item).encode() for item in items]


def _arrow_columns(elements: Sequence[bytes | msgspec.Raw]) -> pl.DataFrame | None:
    """JSON records → `RAW_SCHEMA` columns with Arrow's reader, or None when it cannot be exact.

    The reader sees one record per line, so a record holding a newline, or a line that
    parses as more or fewer records than it should, goes to the msgspec path. The reader
    reads a missing field (its default) and an explicit null (a reject) alike: a column with
    nulls takes its default only when its key occurs exactly once per value, so that no null
    was written; otherwise the batch goes to the msgspec path too.
    """
    if not elements:
        return None
    lines = b"\n".join(elements)
    if lines.count(b"\n") != len(elements) - 1 or not _is_utf8(lines):
        return None
    try:
        table = pa_json.read_json(
            pa.BufferReader(lines),  # zero-copy, where a Python file would copy the body again
            # On this thread, in blocks of a few MiB: Arrow's pool took twice the CPU for the same
            # table, and one block for a whole 50k-record batch 40% more than blocks of 4 MiB.
            read_options=pa_json.ReadOptions(
                use_threads=False, block_size=max(_JSON_BLOCK_BYTES, max(map(len, elements)) + 1)
            ),
            parse_options=_ARROW_JSON_OPTIONS,
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, UnicodeDecodeError):
        return None
    if table.num_rows != len(elements):
        return None
    for name in _DEFAULTS:
        column = table.column(name)
        if column.null_count:
            if lines.count(b'"' + name.encode() + b'"') != len(column) - column.null_count:
                return None
            index = table.schema.get_field_index(name)
            table = table.set_column(index, name, _defaulted(name, column))
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _defaulted(name: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The column with its nulls (values left out) replaced by the field's default."""
    return pc.fill_null(column, pa.scalar(_DEFAULTS[name], column.type))


def _is_utf8(data: bytes) -> bool:
    """Arrow's JSON reader takes invalid UTF-8 into its strings; msgspec names the record instead.

    Checked by casting the bytes, as one binary value, to a string: Arrow validates in place,
    where `bytes.decode` would build a str of the whole body (7x the CPU).
    """
    offsets = pa.array([0, len(data)], pa.int64()).buffers()[1]
    value = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(data)])
    try:
        value.cast(pa.large_string())
    except pa.ArrowInvalid:
        return False
    return True


def _decode_items(
    body: bytes,
    fast: msgspec.json.Decoder[list[TransactionIn]] | msgspec.msgpack.Decoder[list[TransactionIn]],
    raw: msgspec.json.Decoder[list[msgspec.Raw]] | msgspec.msgpack.Decoder[list[msgspec.Raw]],
    now: datetime | None,
    max_records: int | None,
) -> DecodedBatch:
    name = "JSON" if raw is _JSON_RAW else "msgpack"
    try:
        records = fast.decode(body)
    except (msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        pass  # one record's fault: decode them one by one below
    except msgspec.DecodeError as exc:
        raise ValidationError("$", f"body is not a valid {name} array: {exc}") from exc
    else:
        _check_count(len(records), max_records)
        return _finish(records, list(range(len(records))), [], now, _element_of(body, raw))
    try:
        elements = [bytes(e) for e in raw.decode(body)]
    except (*_UNREADABLE, msgspec.ValidationError) as exc:
        raise ValidationError("$", f"body is not a {name} array of records: {_unreadable(exc)}") from exc
    _check_count(len(elements), max_records)
    one = _MSGPACK_ONE if raw is _MSGPACK_RAW else _JSON_ONE
    return _decode_each(elements, one, now)


def _element_of(
    body: bytes, raw: msgspec.json.Decoder[list[msgspec.Raw]] | msgspec.msgpack.Decoder[list[msgspec.Raw]]
) -> Callable[[int], bytes]:
    """A record's original bytes, for its dead letter: the body is split only if one is rejected."""
    elements: list[msgspec.Raw] = []

    def element(index: int) -> bytes:
        if not elements:
            elements.extend(raw.decode(body))
        return bytes(elements[index])

    return element


def _decode_ndjson(body: bytes, now: datetime | None, max_records: int | None) -> DecodedBatch:
    lines = [line for line in body.split(b"\n") if line.strip()]
    if not lines:
        raise ValidationError("$", "body holds no records")
    _check_count(len(lines), max_records)
    return _decode_elements(lines, now, whole_body=body)


def _decode_elements(elements: list[bytes], now: datetime | None, whole_body: bytes | None = None) -> DecodedBatch:
    frame = _arrow_columns(elements)
    if frame is not None:
        return _check_rules(frame, list(range(len(frame))), [], now, elements.__getitem__)
    joined = b"[" + b",".join(elements) + b"]"
    try:
        records = _JSON_LIST.decode(joined)
    except (msgspec.ValidationError, *_UNREADABLE):
        batch = _decode_each(elements, _JSON_ONE, now)
        nothing_parsed = not len(batch.frame) and all(r.field == "$" for r in batch.rejects)
        if whole_body is not None and nothing_parsed and not any(_looks_like_json(e) for e in elements):
            raise ValidationError("$", "body is not JSON or NDJSON") from None
        return batch
    return _finish(records, list(range(len(records))), [], now, elements.__getitem__)


def _unreadable(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, UnicodeDecodeError):
        return f"not valid UTF-8 ({exc.reason})"
    return str(exc)


def _looks_like_json(element: bytes) -> bool:
    try:
        msgspec.json.decode(element)
    except _UNREADABLE:
        return False
    return True


def _decode_each(
    elements: list[bytes],
    one: msgspec.json.Decoder[TransactionIn] | msgspec.msgpack.Decoder[TransactionIn],
    now: datetime | None,
) -> DecodedBatch:
    records: list[TransactionIn] = []
    indexes: list[int] = []
    rejects: list[Reject] = []
    for index, element in enumerate(elements):
        try:
            records.append(one.decode(element))
            indexes.append(index)
        except msgspec.ValidationError as exc:
            field, reason = field_and_reason(str(exc))
            rejects.append(Reject(index, field, reason, element))
        except _UNREADABLE as exc:
            rejects.append(Reject(index, "$", f"malformed record: {_unreadable(exc)}", element))
    return _finish(records, indexes, rejects, now, elements.__getitem__)


def _finish(
    records: list[TransactionIn],
    indexes: list[int],
    rejects: list[Reject],
    now: datetime | None,
    raw_of: Callable[[int], bytes],
) -> DecodedBatch:
    """`raw_of(body_index)` returns a record's original bytes, for its dead letter."""
    try:
        frame = _columns(records)
    except (OverflowError, TypeError, pa.ArrowInvalid):
        keep: list[int] = []
        for position, record in enumerate(records):
            oversized = _first_oversized(record)
            if oversized is None:
                keep.append(position)
            else:
                rejects.append(Reject(indexes[position], *oversized, raw_of(indexes[position])))
        records = [records[p] for p in keep]
        indexes = [indexes[p] for p in keep]
        frame = _columns(records)
    return _check_rules(frame, indexes, rejects, now, raw_of)


def _first_oversized(record: TransactionIn) -> tuple[str, str] | None:
    """The rare slow path: which 64-bit field of a record overflows, and why."""
    if isinstance(record.block_time, int) and not -(2**63) <= record.block_time < 2**63:
        return "block_time", "is before 2020-03-16" if record.block_time < 0 else "is more than 1 h in the future"
    for name in (*COST_FIELDS, "compute_units_consumed", "compute_unit_limit"):
        value = getattr(record, name)
        if value is not None and value >= UINT64_LIMIT:
            return name, "must be < 2^64"
    for position, leg in enumerate(record.legs):
        for name in ("amount_in", "amount_out", "reserve_in", "reserve_out"):
            value = getattr(leg, name)
            if value is not None and value >= UINT64_LIMIT:
                return f"legs[{position}].{name}", "must be < 2^64"
    return None


_SCALARS_OF = operator.attrgetter(*_SCALAR_FIELDS)
_LEG_VALUES_OF = operator.attrgetter(*_LEG_FIELDS)


def _columns(records: list[TransactionIn]) -> pl.DataFrame:
    """Structs → Arrow columns; legs become one flat struct array with list offsets.

    Values are read with one attrgetter call per struct and transposed with zip, both in C.
    """
    if not records:
        return pl.from_arrow(RAW_SCHEMA.empty_table())  # type: ignore[return-value]
    arrays: dict[str, pa.Array] = {}
    for name, values in zip(_SCALAR_FIELDS, zip(*map(_SCALARS_OF, records), strict=True), strict=True):
        arrays[name] = pa.array(values, RAW_SCHEMA.field(name).type)
    times = [r.block_time for r in records]
    if not all(type(t) is int for t in times):
        times = [_epoch_ms(t) for t in times]
    arrays["block_time"] = pa.array(times, pa.int64())
    lengths = [len(r.legs) for r in records]
    legs = list(itertools.chain.from_iterable(r.legs for r in records))
    leg_columns = zip(*map(_LEG_VALUES_OF, legs), strict=True)
    leg_frame = pl.DataFrame(
        {f: pl.Series(f, values, dtype=_LEG_DTYPES[f]) for f, values in zip(_LEG_FIELDS, leg_columns, strict=True)}
    )
    offsets = pa.array(itertools.accumulate(lengths, initial=0), pa.int32())
    arrays["legs"] = pa.ListArray.from_arrays(offsets, leg_frame.to_struct("legs").to_arrow())
    table = pa.Table.from_arrays([arrays[f.name] for f in RAW_SCHEMA], schema=RAW_SCHEMA)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _epoch_ms(value: int | datetime) -> int:
    if isinstance(value, int):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def _decode_arrow(body: bytes, now: datetime | None, max_records: int | None) -> DecodedBatch:
    try:
        table = pa.ipc.open_stream(body).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValidationError("$", f"body is not an Arrow IPC stream: {exc}") from exc
    return decode_table(table, now=now, max_records=max_records)


def decode_table(table: pa.Table, *, now: datetime | None = None, max_records: int | None = None) -> DecodedBatch:
    """Records given as columns (Arrow IPC bodies, Parquet files), cast to `RAW_SCHEMA`.

    A value its column cannot hold (a negative fee in an int64 column, a slot written as
    text, as JSON would refuse it) sends only its record through the record-by-record path,
    which rejects it naming the field; the other records stay columns.
    """
    _check_count(table.num_rows, max_records)
    for required in ("signature", "slot", "block_time", "signer", "legs", "fee_lamports"):
        if required not in table.column_names:
            raise ValidationError(required, "missing column")
    if pa.types.is_timestamp(table.schema.field("block_time").type):
        try:
            milliseconds = _epoch_ms_column(table.column("block_time"))
        except pa.ArrowInvalid as exc:
            raise ValidationError("block_time", f"column cannot be read as milliseconds: {exc}") from exc
        table = table.set_column(table.schema.get_field_index("block_time"), "block_time", milliseconds)
    whole = None if _texts_for_numbers(table) else _cast(table)
    if whole is not None:
        return _decode_columns(whole, list(range(table.num_rows)), now)
    unfit = _rows_a_column_cannot_hold(table)
    fit = sorted(set(range(table.num_rows)) - set(unfit))
    cast = _cast(table.take(pa.array(fit, pa.int64())))
    assert cast is not None, "every value that does not cast was taken out"
    as_columns = _decode_columns(cast, fit, now)
    rows = table.take(pa.array(unfit, pa.int64())).to_pylist()
    one_by_one = decode_records([_ROW_JSON.encode(_left_out_nulls(row)) for row in rows], now=now)
    return _in_body_order(as_columns, _positioned(one_by_one, unfit))


_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


def _cast(table: pa.Table) -> pa.Table | None:
    """`table` as `RAW_SCHEMA` (left-out columns and nulls with defaults filled), or None when a value does not cast."""
    columns = []
    for field in RAW_SCHEMA:
        if field.name not in table.column_names:
            columns.append(pa.array([_DEFAULTS.get(field.name)] * table.num_rows, field.type))
            continue
        try:
            column = table.column(field.name).cast(field.type)
        except _CAST_ERRORS:
            return None
        if field.name in _DEFAULTS and column.null_count:  # a null is a value left out
            column = _defaulted(field.name, column)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=RAW_SCHEMA)


def _decode_columns(table: pa.Table, indexes: list[int], now: datetime | None) -> DecodedBatch:
    """The contract's rules on records already cast; `indexes` (ascending) are their places in the body."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return _check_rules(
        frame, indexes, [], now, lambda i: msgspec.json.encode(frame.row(bisect.bisect_left(indexes, i), named=True))
    )


def _texts_for_numbers(table: pa.Table) -> bool:
    return any(
        _text_where_not_text(table.schema.field(field.name).type, field.type)
        for field in RAW_SCHEMA
        if field.name in table.column_names
    )


def _rows_a_column_cannot_hold(table: pa.Table) -> list[int]:
    """Positions of the records with a value that does not cast to its `RAW_SCHEMA` column.

    Text never becomes a number or a flag (JSON refuses `"slot": "123"` too). Otherwise a
    failed cast is narrowed down by halves, so a batch with a few bad values costs a few
    dozen casts, not one per record.
    """
    unfit: set[int] = set()
    for field in RAW_SCHEMA:
        if field.name not in table.column_names:
            continue
        column = table.column(field.name).combine_chunks()
        if _text_where_not_text(column.type, field.type):
            unfit.update(pc.indices_nonzero(pc.is_valid(column)).to_pylist())
        else:
            unfit.update(_failing_casts(column, field.type, 0))
    return sorted(unfit)


def _text_where_not_text(given: pa.DataType, wanted: pa.DataType) -> bool:
    if _is_text(given):
        return not _is_text(wanted)
    if pa.types.is_list(given) or pa.types.is_large_list(given) or pa.types.is_list_view(given):
        return pa.types.is_list(wanted) and _text_where_not_text(given.value_type, wanted.value_type)
    if pa.types.is_struct(given) and pa.types.is_struct(wanted):
        names = {wanted.field(i).name: wanted.field(i).type for i in range(wanted.num_fields)}
        return any(
            _text_where_not_text(given.field(i).type, names[given.field(i).name])
            for i in range(given.num_fields)
            if given.field(i).name in names
        )
    return False


def _is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind))


def _failing_casts(values: pa.Array, wanted: pa.DataType, offset: int) -> list[int]:
    try:
        values.cast(wanted)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        if len(values) == 1:
            return [offset]
        half = len(values) // 2
        return _failing_casts(values[:half], wanted, offset) + _failing_casts(values[half:], wanted, offset + half)
    return []


def _left_out_nulls(row: dict[str, object]) -> dict[str, object]:
    """A record as JSON would give it: an Arrow null where the field has a default means left out."""
    return {name: value for name, value in row.items() if value is not None or name not in _DEFAULTS}


def _positioned(decoded: DecodedBatch, positions: list[int]) -> DecodedBatch:
    """`decoded`, of the records at `positions` of a body, with its indexes into that body."""
    return DecodedBatch(
        decoded.frame,
        [Reject(positions[r.index], r.field, r.reason, r.raw) for r in decoded.rejects],
        [positions[i] for i in decoded.indexes],
    )


def _in_body_order(first: DecodedBatch, second: DecodedBatch) -> DecodedBatch:
    indexes = first.indexes + second.indexes
    order = sorted(range(len(indexes)), key=indexes.__getitem__)
    return DecodedBatch(
        pl.concat([first.frame, second.frame])[order],
        sorted([*first.rejects, *second.rejects], key=operator.attrgetter("index")),
        [indexes[i] for i in order],
    )


def _epoch_ms_column(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Timestamps of any unit as epoch milliseconds: finer units truncated, overflow an error."""
    unit = column.type.unit
    raw = column.cast(pa.timestamp(unit)).cast(pa.int64())  # drops the zone: epoch values are UTC
    if unit == "s":
        return pc.multiply_checked(raw, 1000)
    divisor = {"ms": 1, "us": 1_000, "ns": 1_000_000}[unit]
    return raw if divisor == 1 else pc.divide(raw, divisor)  # integer division


def _check_rules(
    frame: pl.DataFrame,
    indexes: list[int],
    rejects: list[Reject],
    now: datetime | None,
    raw_of: Callable[[int], bytes],
) -> DecodedBatch:
    """Vectorised contract checks; each failing row becomes a Reject naming its first bad field."""
    if frame.is_empty():
        return DecodedBatch(frame, sorted(rejects, key=lambda r: r.index), indexes)
    now = now or datetime.now(UTC)
    latest_ms = int((now + MAX_CLOCK_SKEW).timestamp() * 1000)
    earliest_ms = int(EARLIEST_BLOCK_TIME.timestamp() * 1000)
    checks = _rule_checks(frame, earliest_ms, latest_ms)
    # Each leg's place in its list comes with the explode: `int_range().over("_row")` after it
    # took a third of the checks' time (5 ms of a 10k-record batch).
    legs = (
        frame.select(
            pl.int_range(pl.len()).alias("_row"),
            pl.col("legs"),
            pl.int_ranges(0, pl.col("legs").list.len()).alias("_leg"),
        )
        .explode("legs", "_leg")
        .unnest("legs")
    )
    leg_errors = legs.select(
        "_row",
        pl.coalesce(
            *[
                pl.when(cond).then(pl.format("legs[{}].{}", pl.col("_leg"), pl.lit(name)) + pl.lit("\x00" + reason))
                for name, cond, reason in _leg_checks(legs)
            ]
        ).alias("_error"),
    ).drop_nulls("_error")
    leg_first = leg_errors.group_by("_row", maintain_order=True).first()
    row_errors = frame.select(
        pl.int_range(pl.len()).alias("_row"),
        pl.coalesce(*[pl.when(cond).then(pl.lit(f"{name}\x00{reason}")) for name, cond, reason in checks]).alias(
            "_row_error"
        ),
    ).join(leg_first, on="_row", how="left")
    errors = row_errors.select("_row", pl.coalesce("_row_error", "_error").alias("error")).drop_nulls("error")
    if errors.is_empty():
        return DecodedBatch(frame, sorted(rejects, key=lambda r: r.index), indexes)
    bad_rows = errors["_row"].to_list()
    for row, message in zip(bad_rows, errors["error"].to_list(), strict=True):
        field, _, reason = message.partition("\x00")
        rejects.append(Reject(indexes[row], field, reason, raw_of(indexes[row])))
    keep = pl.Series(range(len(frame))).is_in(bad_rows).not_()
    kept_indexes = [i for i, k in zip(indexes, keep.to_list(), strict=True) if k]
    return DecodedBatch(frame.filter(keep), sorted(rejects, key=lambda r: r.index), kept_indexes)


def _rule_checks(frame: pl.DataFrame, earliest_ms: int, latest_ms: int) -> list[tuple[str, pl.Expr, str]]:
    """(field, failing condition, reason) in field order; the first failing one is reported."""
    sig_len = pl.col("signature").str.len_chars()
    n_legs = pl.col("legs").list.len()
    return [
        ("signature", pl.col("signature").is_null(), "required"),
        (
            "signature",
            (sig_len < 64) | (sig_len > 88) | ~pl.col("signature").str.contains(_BASE58),
            "must be base58, 64-88 characters",
        ),
        (
            "slot",
            pl.col("slot").is_null() | (pl.col("slot") == 0) | (pl.col("slot") >= 2**63),
            "must be > 0 and < 2^63",
        ),
        ("block_time", pl.col("block_time").is_null(), "required"),
        ("block_time", pl.col("block_time") < earliest_ms, "is before 2020-03-16"),
        ("block_time", pl.col("block_time") > latest_ms, "is more than 1 h in the future"),
        (
            "slot",
            pl.col("slot").cast(pl.Float64) > (pl.col("block_time") - earliest_ms).cast(pl.Float64) / _MIN_SLOT_MS,
            f"is ahead of its block time (more than {1000 // _MIN_SLOT_MS} slots per second since 2020-03-16)",
        ),
        ("signer", pl.col("signer").is_null(), "required"),
        ("signer", _pubkey_bad(frame, "signer"), "must be a base58 public key, 32-44 characters"),
        ("legs", pl.col("legs").is_null(), "required"),
        ("legs", (n_legs < 1) | (n_legs > MAX_LEGS), f"must hold 1-{MAX_LEGS} legs"),
        ("fee_lamports", pl.col("fee_lamports").is_null(), "required"),
        ("fee_lamports", _cost_overflows(), "fee + priority fee + tip + other costs must be < 2^64 lamports"),
        ("bundle_id", pl.col("bundle_id").str.len_chars() > 128, "must be at most 128 characters"),
        ("leader", pl.col("leader").is_not_null() & _pubkey_bad(frame, "leader"), "must be a base58 public key"),
    ]


def _cost_overflows() -> pl.Expr:
    """Exact in unsigned 64 bits: total + b overflows when b > MAX - total (later tests count only while earlier ones hold)."""
    most = pl.lit(UINT64_LIMIT - 1, dtype=pl.UInt64)
    first, *rest = (pl.col(c) for c in COST_FIELDS)
    total, overflows = first, pl.lit(False)
    for cost in rest:
        overflows = overflows | (cost > most - total)
        total = total + cost
    return overflows


def _pubkey_bad(frame: pl.DataFrame, name: str) -> pl.Expr:
    """Null, or not a base58 key of 32-44 characters."""
    return pl.col(name).is_null() | _off_pattern(frame.get_column(name), _PUBKEY)


def _off_pattern(column: pl.Series, pattern: str) -> pl.Expr:
    """True where a value of `column` does not match `pattern` (callers check nulls themselves).

    The pattern is tried once per distinct value: mints, pools, DEXes and signers repeat through
    a batch, and a regex per row cost five times as much (0.7 µs per record for the legs alone).
    """
    distinct = column.unique()
    bad = distinct.filter(~distinct.str.contains(pattern))
    return pl.col(column.name).is_in(bad.implode()) if len(bad) else pl.lit(False)


def _leg_checks(legs: pl.DataFrame) -> list[tuple[str, pl.Expr, str]]:
    """The checks of each leg, `legs` holding one row per leg."""
    return [
        ("dex", pl.col("dex").is_null() | (pl.col("dex").str.len_chars() == 0), "required"),
        ("dex", pl.col("dex").str.len_chars() > 64, "must be at most 64 characters"),
        ("dex", _off_pattern(legs.get_column("dex"), DEX_PATTERN), "must be letters, digits, '_', '.' or '-'"),
        ("pool", _pubkey_bad(legs, "pool"), "must be a base58 public key, 32-44 characters"),
        ("token_in", _pubkey_bad(legs, "token_in"), "must be a base58 mint, 32-44 characters"),
        ("token_out", _pubkey_bad(legs, "token_out"), "must be a base58 mint, 32-44 characters"),
        ("amount_in", pl.col("amount_in").is_null(), "required"),
        ("amount_out", pl.col("amount_out").is_null(), "required"),
        ("decimals_in", pl.col("decimals_in") > 18, "must be 0-18"),
        ("decimals_out", pl.col("decimals_out") > 18, "must be 0-18"),
    ]


_PATH = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"missing required field `([^`]+)`")


def field_and_reason(message: str) -> tuple[str, str]:
    """msgspec's `Expected ... - at `$.legs[0].amount_in`` → ("legs[0].amount_in", "Expected ...")."""
    match = _PATH.match(message)
    reason = match.group("reason") if match else message
    path = (match.group("path") if match else "") or ""
    path = path.lstrip(".")
    missing = _MISSING.search(reason)
    if missing:
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
        reason = "required"
    return path or "$", reason


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Decoding allocates many short-lived objects; the cyclic GC only slows it down."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
