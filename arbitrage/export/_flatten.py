"""Flattening of nested columns for formats without nested types (csv, hdf5, tfrecord).

The rule, documented in docs/exports.md:
- a list of strings (`route`, `dexes`) becomes one string, its items joined with `|`;
- any other list or struct (`legs`) becomes its JSON text, e.g.
  `[{"dex":"raydium_amm","pool":"…","amount_in":1000,…}]`;
- a null stays null.
Formats that keep nested types (parquet, arrow, json) get the columns as stored.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

LIST_SEPARATOR = "|"


def is_nested(dtype: pa.DataType) -> bool:
    """Whether a column needs flattening for a flat format."""
    nested: bool = pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_struct(dtype)
    return nested


def flattening_of(dtype: pa.DataType) -> str | None:
    """How a column is flattened: `pipe-joined`, `json` or None (kept as is)."""
    if not is_nested(dtype):
        return None
    if _is_string_list(dtype):
        return "pipe-joined"
    return "json"


def flatten_schema(schema: pa.Schema) -> pa.Schema:
    """The schema of `flatten_batch`'s output for batches of `schema`."""
    return pa.schema(
        [pa.field(f.name, pa.string(), f.nullable, f.metadata) if is_nested(f.type) else f for f in schema]
    )


def flatten_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Replace nested columns by strings (see the module docstring); others pass through."""
    nested = [i for i, f in enumerate(batch.schema) if is_nested(f.type)]
    if not nested:
        return batch
    arrays = list(batch.columns)
    json_columns = [batch.schema.field(i).name for i in nested if not _is_string_list(batch.schema.field(i).type)]
    if json_columns:
        frame = pl.from_arrow(pa.Table.from_batches([batch.select(json_columns)]))
        assert isinstance(frame, pl.DataFrame)
        # Views out of polars (no copy), then one copy into the flat schema's `string`.
        encoded = frame.select(_json_text(name) for name in json_columns).to_arrow(compat_level=pl.CompatLevel.newest())
    for i in nested:
        name = batch.schema.field(i).name
        if _is_string_list(batch.schema.field(i).type):
            arrays[i] = pc.binary_join(arrays[i].cast(pa.list_(pa.string())), LIST_SEPARATOR)
        else:
            arrays[i] = encoded.column(name).combine_chunks().cast(pa.string())
    return pa.RecordBatch.from_arrays(arrays, schema=flatten_schema(batch.schema))


def _json_text(name: str) -> pl.Expr:
    # json_encode works on structs only: wrap the column in a one-field struct and cut the
    # `{"name":` prefix and the closing brace off its JSON (strip_* cuts bytes; slicing by
    # characters had to count them first).
    wrapped = pl.struct(pl.col(name)).struct.json_encode()
    text = wrapped.str.strip_prefix(f'{{"{name}":').str.strip_suffix("}")
    return pl.when(pl.col(name).is_null()).then(None).otherwise(text).alias(name)


def _is_string_list(dtype: pa.DataType) -> bool:
    string_list: bool = (pa.types.is_list(dtype) or pa.types.is_large_list(dtype)) and (
        pa.types.is_string(dtype.value_type) or pa.types.is_large_string(dtype.value_type)
    )
    return string_list
