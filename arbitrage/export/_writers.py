"""Format writers behind one small protocol, and the registry that names them.

A writer writes one file: `open(sink, schema, options)`, then `write(batch)` for each
Arrow record batch, then `close()`. The sink is a binary file object owned by the caller
(it counts bytes and computes the checksum); a writer must not close it. Writers whose
format has no nested types set `nested_types = False` and receive flattened batches (see
`_flatten`). Formats are looked up by name in a registry filled with the built-in writers,
`register_exporter` calls, and the `arbitrage.exporters` entry-point group.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, BinaryIO, ClassVar, Protocol, cast, runtime_checkable

import msgspec
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from arbitrage.model import TIME_TEXT_FORMAT

ENTRY_POINT_GROUP = "arbitrage.exporters"


class WriterOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What a writer may be told beside the schema."""

    compression: str
    """A codec from the writer's `compressions` (already checked)."""
    json_array: bool = False
    """json: one JSON array instead of NDJSON."""
    arrow_stream: bool = False
    """arrow: IPC stream format instead of the IPC file format."""


@runtime_checkable
class Exporter(Protocol):
    """A format writer; one instance writes one file, from one thread."""

    compressions: ClassVar[tuple[str, ...]]
    """Codecs this format supports; `none` when it can be written uncompressed."""
    default_compression: ClassVar[str]
    """Codec used when the request names none."""
    nested_types: ClassVar[bool]
    """False when lists and structs must be flattened to strings before `write`."""
    # Optional: `batch_rows: ClassVar[int]`, rows per batch read for this format (`ExportPlan.batch_rows`),
    # and `column_type(field, options) -> ColumnType`, how the file holds a column, for the manifest
    # (without it the manifest gives the Arrow type the writer receives).

    def extension(self, options: WriterOptions) -> str:
        """File name extension, without the dot (e.g. `csv.gz`)."""
        ...

    def open(self, sink: BinaryIO, schema: pa.Schema, options: WriterOptions) -> None:
        """Start a file on `sink` for batches of `schema`."""
        ...

    def write(self, batch: pa.RecordBatch) -> None:
        """Append the rows of `batch`."""
        ...

    def close(self) -> None:
        """Finish the file (footer, flush); leave `sink` open."""
        ...


ExporterFactory = Callable[[], Exporter]

ColumnType = dict[str, str]
"""How a file holds a column, for the manifest: `type` in the format's own terms, and
`format` where the type alone does not say how to read the value (times)."""


def epoch_format(t: pa.DataType) -> ColumnType:
    """`format` of a time written as an integer count since the Unix epoch (hdf5, tfrecord)."""
    if pa.types.is_timestamp(t):
        return {"format": f"epoch_{t.unit}"}
    if pa.types.is_date32(t):
        return {"format": "epoch_days"}
    return {}


def text_column_type(field: pa.Field, options: WriterOptions) -> ColumnType:
    """csv and json: the Arrow type a reader gets by parsing the text, times as RFC 3339 text."""
    t = field.type
    if pa.types.is_timestamp(t):
        return {"type": "string", "format": "rfc3339"}
    if pa.types.is_large_string(t):
        return {"type": "string"}
    return {"type": str(t)}


class _Unclosable(io.RawIOBase):
    """Pass writes through to a sink but keep it open when a library closes its stream."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        count = self._sink.write(data)
        size = len(memoryview(data).cast("B")) if count is None else count
        self._position += size
        return size

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        self._sink.flush()


def open_compressed(sink: BinaryIO, compression: str) -> BinaryIO | pa.NativeFile:
    """A stream that compresses into `sink` (or `sink` itself for `none`); close it when done."""
    guarded = _Unclosable(sink)
    if compression == "none":
        return guarded  # type: ignore[return-value]
    return pa.CompressedOutputStream(guarded, compression)


WHOLE_BATCH_ROWS = 65_536
"""Rows read per batch for formats that keep batches whole (a Parquet row group, an Arrow batch)."""
CONVERTED_BATCH_ROWS = 16_384
"""Rows read per batch for formats that convert every value (text, HDF5, TFRecord): smaller
batches halve peak memory and the page faults of fresh buffers (JSON 1 M rows: 9.5 s vs 13.3 s)."""


class ParquetWriter:
    """Apache Parquet; nested columns kept as lists of structs."""

    compressions: ClassVar[tuple[str, ...]] = ("snappy", "zstd", "gzip", "lz4", "brotli", "none")
    default_compression: ClassVar[str] = "snappy"
    nested_types: ClassVar[bool] = True
    batch_rows: ClassVar[int] = WHOLE_BATCH_ROWS

    def column_type(self, field: pa.Field, options: WriterOptions) -> ColumnType:
        """The Arrow type pyarrow reads back: Parquet names a list's item `element`."""
        return {"type": str(_parquet_list_items(field.type))}

    def extension(self, options: WriterOptions) -> str:
        return "parquet"

    def open(self, sink: BinaryIO, schema: pa.Schema, options: WriterOptions) -> None:
        self._writer = pq.ParquetWriter(_Unclosable(sink), schema, compression=options.compression)

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def close(self) -> None:
        self._writer.close()


def _parquet_list_items(t: pa.DataType) -> pa.DataType:
    if pa.types.is_list(t):
        return pa.list_(pa.field("element", _parquet_list_items(t.value_type), t.value_field.nullable))
    if pa.types.is_struct(t):
        return pa.struct([t.field(i).with_type(_parquet_list_items(t.field(i).type)) for i in range(t.num_fields)])
    return t


class ArrowWriter:
    """Arrow IPC file (random access, `.arrow`) or stream (`.arrows`)."""

    compressions: ClassVar[tuple[str, ...]] = ("none", "lz4", "zstd")
    default_compression: ClassVar[str] = "none"
    nested_types: ClassVar[bool] = True
    batch_rows: ClassVar[int] = WHOLE_BATCH_ROWS

    def extension(self, options: WriterOptions) -> str:
        return "arrows" if options.arrow_stream else "arrow"

    def open(self, sink: BinaryIO, schema: pa.Schema, options: WriterOptions) -> None:
        codec = None if options.compression == "none" else options.compression
        ipc_options = ipc.IpcWriteOptions(compression=codec)
        make = ipc.new_stream if options.arrow_stream else ipc.new_file
        self._writer = make(_Unclosable(sink), schema, options=ipc_options)

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def close(self) -> None:
        self._writer.close()


class CsvWriter:
    """CSV with a header row (polars' writer); times RFC 3339 UTC; nested columns flattened (see `_flatten`)."""

    compressions: ClassVar[tuple[str, ...]] = ("none", "gzip", "zstd", "lz4")
    default_compression: ClassVar[str] = "none"
    nested_types: ClassVar[bool] = False
    batch_rows: ClassVar[int] = CONVERTED_BATCH_ROWS

    column_type = staticmethod(text_column_type)

    def extension(self, options: WriterOptions) -> str:
        return {"none": "csv", "gzip": "csv.gz", "zstd": "csv.zst", "lz4": "csv.lz4"}[options.compression]

    def open(self, sink: BinaryIO, schema: pa.Schema, options: WriterOptions) -> None:
        self._out = open_compressed(sink, options.compression)
        self._header = True
        self._schema = schema

    def write(self, batch: pa.RecordBatch) -> None:
        # Straight into the (compressing) sink: polars hands its output to `write` in pieces
        # of a few MB from its own I/O thread while its other threads format the next ones.
        # (Formatting into a BytesIO per slice first cost a copy and the overlap.)
        target = cast(BinaryIO, self._out)
        _frame(batch).write_csv(target, include_header=self._header, datetime_format=TIME_TEXT_FORMAT)
        self._header = False

    def close(self) -> None:
        if self._header:
            self.write(pa.RecordBatch.from_pylist([], schema=self._schema))
        self._out.close()


class JsonWriter:
    """NDJSON (one object per line), or one JSON array with `json_array`; times RFC 3339."""

    compressions: ClassVar[tuple[str, ...]] = ("none", "gzip", "zstd", "lz4")
    default_compression: ClassVar[str] = "none"
    nested_types: ClassVar[bool] = True
    batch_rows: ClassVar[int] = CONVERTED_BATCH_ROWS

    column_type = staticmethod(text_column_type)

    def extension(self, options: WriterOptions) -> str:
        base = "json" if options.json_array else "ndjson"
        return {"none": base, "gzip": f"{base}.gz", "zstd": f"{base}.zst", "lz4": f"{base}.lz4"}[options.compression]

    def open(self, sink: BinaryIO, schema: pa.Schema, options: WriterOptions) -> None:
        self._out = open_compressed(sink, options.compression)
        self._array = options.json_array
        self._first = True
        if self._array:
            self._out.write(b"[")

    def write(self, batch: pa.RecordBatch) -> None:
        for piece in _slices(batch):
            self._write_piece(piece)

    def _write_piece(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        pieces = _ndjson(_frame(batch).with_columns(pl.col(pl.Datetime).dt.strftime(TIME_TEXT_FORMAT)))
        if self._array:
            # JSON strings escape newlines, so every b"\n" ends an object.
            body = b"".join(pieces)[:-1].replace(b"\n", b",\n")
            pieces = [(b"\n" if self._first else b",\n") + body]
        for piece in pieces:
            self._out.write(piece)
        self._first = False

    def close(self) -> None:
        if self._array:
            self._out.write(b"\n]\n" if not self._first else b"]\n")
        self._out.close()


def _ndjson(frame: pl.DataFrame) -> list[bytes | memoryview]:
    """NDJSON of `frame` in pieces, with NaN and ±inf as the strings "NaN", "Infinity", "-Infinity".

    JSON numbers cannot hold them and polars writes null, which reads as a missing value;
    pandas.read_json parses the strings back to floats. Polars writes every line; the lines
    of the rows that hold one (rare) are encoded again and go out in their place.
    """
    buffer = io.BytesIO()
    frame.write_ndjson(buffer)
    lines = buffer.getbuffer()
    floats = [name for name, dtype in frame.schema.items() if dtype.is_float()]
    finite = frame.select(pl.col(floats).is_finite().all()).row(0) if floats else ()
    non_finite = [name for name, ok in zip(floats, finite, strict=True) if ok is False]
    if not non_finite:
        return [lines]
    flagged = frame.select(pl.any_horizontal(~pl.col(non_finite).is_finite()).fill_null(False)).to_series()
    rows = np.flatnonzero(flagged.to_numpy())
    ends = _line_ends(np.frombuffer(lines, np.uint8))
    pieces: list[bytes | memoryview] = []
    at = 0
    fixed = _lines_keeping_non_finite(frame.select(pl.all().gather(rows)), set(non_finite))
    for row, line in zip(rows.tolist(), fixed, strict=True):
        pieces += [lines[at : 0 if row == 0 else int(ends[row - 1]) + 1], line.encode()]
        at = int(ends[row])
    pieces.append(lines[at:])
    return pieces


def _line_ends(text: np.ndarray, step: int = 1 << 20) -> np.ndarray:
    """Offsets of the newlines, found a MiB at a time (a mask of the whole text costs its size again)."""
    return np.concatenate([np.flatnonzero(text[o : o + step] == ord("\n")) + o for o in range(0, len(text), step)])


def _lines_keeping_non_finite(frame: pl.DataFrame, non_finite: set[str]) -> list[str]:
    """The JSON object of each row, NaN and ±inf as strings in the `non_finite` columns.

    Runs of other columns are encoded as one JSON object each with its braces cut off, the
    `non_finite` columns member by member, and the members joined: the same text as
    `write_ndjson` but for those values.
    """
    members: list[pl.Expr] = []
    run: list[str] = []
    for name in frame.columns:
        if name not in non_finite:
            run.append(name)
            continue
        if run:
            members.append(_members_text(pl.struct(run)))
            run = []
        value, key = pl.col(name), msgspec.json.encode(name).decode()
        members.append(
            pl.when(value.is_nan())
            .then(pl.lit(f'{key}:"NaN"'))
            .when(value == float("inf"))
            .then(pl.lit(f'{key}:"Infinity"'))
            .when(value == float("-inf"))
            .then(pl.lit(f'{key}:"-Infinity"'))
            .otherwise(_members_text(pl.struct(name)))
        )
    if run:
        members.append(_members_text(pl.struct(run)))
    objects = frame.select(pl.concat_str([pl.lit("{"), pl.concat_str(members, separator=","), pl.lit("}")]))
    return objects.to_series().to_list()


def _members_text(struct: pl.Expr) -> pl.Expr:
    """The `"name":value` members of a struct's JSON object, without the braces."""
    return struct.struct.json_encode().str.strip_prefix("{").str.strip_suffix("}")


TEXT_SLICE_ROWS = 16_384
"""Text writers convert this many rows at a time: their copies are larger than Arrow's."""
HDF5_CHUNK_ROWS = 16_384
"""Rows per HDF5 chunk; the HDF5 writer also converts and writes this many rows at a time."""


def _slices(batch: pa.RecordBatch) -> list[pa.RecordBatch]:
    """The batch in slices of at most TEXT_SLICE_ROWS rows (one empty slice for an empty batch)."""
    return [batch.slice(o, TEXT_SLICE_ROWS) for o in range(0, batch.num_rows, TEXT_SLICE_ROWS)] or [batch]


def _frame(batch: pa.RecordBatch) -> pl.DataFrame:
    frame = pl.from_arrow(pa.Table.from_batches([batch]))
    assert isinstance(frame, pl.DataFrame)
    return frame


class Hdf5Writer:
    """HDF5 with one resizable dataset per column under `/data` (h5py/PyTables readable).

    Strings are variable-length UTF-8 (null → ""); timestamps are int64 in the column's
    unit (attributes `unit`, `timezone`); booleans are HDF5 booleans; nullable integer
    columns are float64 with NaN for null (exact up to 2^53, rounded beyond), as are floats.
    Datasets keep the column order (the group tracks creation order). HDF5 needs a seekable
    file, so the file is built in a local temporary file and copied to the sink on close.

    Memory stays flat: rows are written in whole chunks (`HDF5_CHUNK_ROWS`, the tail at
    close) with HDF5's chunk cache turned off. With the cache on, the HDF5 library h5py
    ships (2.0) keeps every written chunk in memory until the file is closed, so memory
    grew with the row count; a whole-chunk write needs no cache (nothing is read back).
    """

    compressions: ClassVar[tuple[str, ...]] = ("gzip", "lzf", "none")
    default_compression: ClassVar[str] = "gzip"
    nested_types: ClassVar[bool] = False
    batch_rows: ClassVar[int] = CONVERTED_BATCH_ROWS

    def extension(self, options: WriterOptions) -> str:
        return "h5"

    def column_type(self, field: pa.Field, options: WriterOptions) -> ColumnType:
        """The dataset's numpy dtype as h5py reads it (`string`: variable-length UTF-8)."""
        import h5py

        dtype, _ = _hdf5_dtype(field)
        if h5py.check_string_dtype(np.dtype(dtype)) is not None:
            return {"type": "string"}
        return {"type": np.dtype(dtype).name, **epoch_format(field.type)}

    def open(self, sink: BinaryIO, schema: pa.Schema, options: WriterOptions) -> None:
        import h5py

        self._sink = sink
        handle, self._path = tempfile.mkstemp(suffix=".h5")
        os.close(handle)
        self._file = h5py.File(self._path, "w", rdcc_nbytes=0)
        # Creation order, so readers list the datasets in the requested column order (not by name).
        group = self._file.create_group("data", track_order=True)
        compression: dict[str, Any] = {}
        if options.compression == "gzip":
            compression = {"compression": "gzip", "compression_opts": 1}
        elif options.compression == "lzf":
            compression = {"compression": "lzf"}
        self._datasets = {}
        self._fields = list(schema)
        for field in schema:
            dtype, attrs = _hdf5_dtype(field)
            dataset = group.create_dataset(
                field.name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(HDF5_CHUNK_ROWS,), **compression
            )
            dataset.attrs.update(attrs)
            self._datasets[field.name] = dataset
        self._rows = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= HDF5_CHUNK_ROWS:
            self._write_pending(whole_chunks_only=True)

    def close(self) -> None:
        try:
            self._write_pending(whole_chunks_only=False)
            self._file.attrs["rows"] = self._rows
            self._file.close()
            with open(self._path, "rb") as local:
                shutil.copyfileobj(local, self._sink, 4 * 1024 * 1024)
        finally:
            os.unlink(self._path)

    def _write_pending(self, *, whole_chunks_only: bool) -> None:
        """Write the buffered rows, keeping back a partial chunk unless `whole_chunks_only` is false."""
        if not self._pending_rows:
            return
        rows = pa.Table.from_batches(self._pending)
        count = self._pending_rows
        if whole_chunks_only:
            count -= count % HDF5_CHUNK_ROWS
        end = self._rows + count
        for dataset in self._datasets.values():
            dataset.resize((end,))
        for offset in range(0, count, HDF5_CHUNK_ROWS):
            piece = rows.slice(offset, min(HDF5_CHUNK_ROWS, count - offset))
            start = self._rows + offset
            for field, column in zip(self._fields, piece.columns, strict=True):
                self._datasets[field.name][start : start + piece.num_rows] = _hdf5_values(
                    field, column.combine_chunks()
                )
        self._rows = end
        self._pending = rows.slice(count).to_batches()
        self._pending_rows -= count


def _hdf5_dtype(field: pa.Field) -> tuple[Any, dict[str, Any]]:
    import h5py

    t = field.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return h5py.string_dtype("utf-8"), {}
    if pa.types.is_timestamp(t):
        return np.int64, {"unit": t.unit, "timezone": t.tz or ""}
    if pa.types.is_date32(t):
        return np.int32, {"unit": "days since 1970-01-01"}
    if pa.types.is_boolean(t):
        return np.bool_, {}
    if pa.types.is_integer(t) and field.nullable:
        return np.float64, {"nullable_integer": True}
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return t.to_pandas_dtype(), {}
    raise TypeError(f"column {field.name!r} of type {t} cannot be written to HDF5; flatten it first")


def _hdf5_values(field: pa.Field, column: pa.Array) -> np.ndarray:
    t = field.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return cast(np.ndarray, column.fill_null("").to_numpy(zero_copy_only=False))
    if pa.types.is_timestamp(t):
        return cast(np.ndarray, column.cast(pa.int64()).fill_null(0).to_numpy())
    if pa.types.is_date32(t):
        return cast(np.ndarray, column.cast(pa.int32()).fill_null(0).to_numpy())
    if pa.types.is_boolean(t):
        return cast(np.ndarray, column.fill_null(False).to_numpy(zero_copy_only=False))
    if (pa.types.is_integer(t) and field.nullable) or pa.types.is_floating(t):
        # Unsafe: an integer beyond 2^53 rounds to the nearest float64 (as documented) instead of failing the export.
        as_float = column.cast(pa.float64(), safe=False)
        return cast(np.ndarray, as_float.fill_null(float("nan")).to_numpy(zero_copy_only=False))
    return cast(np.ndarray, column.fill_null(0).to_numpy(zero_copy_only=False))


_REGISTRY: dict[str, ExporterFactory] = {}
_REGISTRY_LOCK = threading.Lock()
_ENTRY_POINTS_LOADED = False


class UnknownFormat(LookupError):
    """No writer is registered under this name."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown export format {name!r}; known formats: {', '.join(known)}")
        self.name = name
        self.known = known


def register_exporter(name: str, writer: ExporterFactory) -> None:
    """Make `POST /export/{name}` and `arbitrage export name` use `writer`.

    Args:
        name: format name, lower case letters, digits, `_` or `-`.
        writer: a class (or any factory) whose instances follow the `Exporter` protocol.
    """
    if not name or not all(c.isalnum() or c in "_-" for c in name) or name != name.lower():
        raise ValueError(f"format name must be lower-case letters, digits, '_' or '-': {name!r}")
    with _REGISTRY_LOCK:
        _REGISTRY[name] = writer


def exporter_factory(name: str) -> ExporterFactory:
    """The writer registered under `name`. Raises `UnknownFormat` listing the known names."""
    _load_entry_points()
    with _REGISTRY_LOCK:
        factory = _REGISTRY.get(name)
    if factory is None:
        raise UnknownFormat(name, formats())
    return factory


def formats() -> list[str]:
    """Names of every registered format, sorted."""
    _load_entry_points()
    with _REGISTRY_LOCK:
        return sorted(_REGISTRY)


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        register_exporter(point.name, point.load())


def _register_builtins() -> None:
    from arbitrage.export._tfrecord import TFRecordWriter

    builtin_writers: dict[str, ExporterFactory] = {
        "csv": CsvWriter,
        "parquet": ParquetWriter,
        "json": JsonWriter,
        "hdf5": Hdf5Writer,
        "arrow": ArrowWriter,
        "tfrecord": TFRecordWriter,
    }
    for name, writer in builtin_writers.items():
        register_exporter(name, writer)


_register_builtins()
