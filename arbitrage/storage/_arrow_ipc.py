"""Arrow IPC stream bytes, the form in which both backends hand tables to ClickHouse and get them back."""

from __future__ import annotations

import pyarrow as pa

from arbitrage.errors import WarehouseUnavailable


def arrow_stream_bytes(data: pa.Table) -> bytes:
    """An Arrow table as IPC stream bytes ClickHouse reads (view types widened to large ones)."""
    table = data.cast(_portable_schema(data.schema)) if _has_views(data.schema) else data
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    payload: bytes = sink.getvalue().to_pybytes()
    return payload


def _portable_schema(schema: pa.Schema) -> pa.Schema:
    """The schema with string/binary views (polars' default) as large string/binary."""
    return pa.schema([field.with_type(_portable_type(field.type)) for field in schema], metadata=schema.metadata)


def _portable_type(dtype: pa.DataType) -> pa.DataType:
    if pa.types.is_string_view(dtype):
        return pa.large_string()
    if pa.types.is_binary_view(dtype):
        return pa.large_binary()
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_list_view(dtype):
        inner = dtype.value_field.with_type(_portable_type(dtype.value_type))
        return pa.large_list(inner) if pa.types.is_large_list(dtype) else pa.list_(inner)
    if pa.types.is_struct(dtype):
        return pa.struct(
            [dtype.field(i).with_type(_portable_type(dtype.field(i).type)) for i in range(dtype.num_fields)]
        )
    return dtype


def _has_views(schema: pa.Schema) -> bool:
    return any(_portable_type(field.type) != field.type for field in schema)


def read_arrow_stream(body: bytes) -> pa.Table:
    """An ArrowStream response body as a table (an empty body is an empty table)."""
    if not body:
        return pa.table({})
    try:
        return pa.ipc.open_stream(body).read_all()
    except pa.ArrowInvalid as exc:
        raise WarehouseUnavailable(f"ClickHouse answered something that is not ArrowStream: {exc}") from exc
