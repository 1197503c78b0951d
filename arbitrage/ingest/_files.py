"""The records of a file `arbitrage ingest` reads, a chunk at a time, whatever its format.

NDJSON and JSON arrays (either gzipped as `.gz`) come as lists of JSON records, Parquet as
Arrow tables: the ingest service decodes both with the same rules as `POST /ingest`.
"""

from __future__ import annotations

import gzip
import io
import mmap
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TypeAlias

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from arbitrage.errors import ArbitrageError

Chunk: TypeAlias = "list[bytes] | pa.Table"
"""JSON records (NDJSON, JSON arrays) or columns (Parquet)."""


def file_chunks(path: Path, size: int) -> Iterator[Chunk]:
    """Records of a file, `size` at a time: JSON bytes (NDJSON, JSON array, either gzipped as
    `.gz`) or columns (Parquet).

    A file that does not decode as a whole (a truncated Parquet or gzip file, a broken JSON
    array) stops the command with one line naming it; bad records are reported one by one by
    ingest.
    """
    try:
        yield from _records(path, size)
    except (pa.ArrowException, msgspec.DecodeError, gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ArbitrageError(f"{path}: {exc}") from exc


def _records(path: Path, size: int) -> Iterator[Chunk]:
    if path.suffix == ".parquet":
        for batch in pq.ParquetFile(path).iter_batches(batch_size=size):
            yield pa.Table.from_batches([batch])
        return
    with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as handle:
        head = handle.read(1)
        while head.isspace():
            head = handle.read(1)
        handle.seek(0)
        if head == b"[":
            yield from _array_records(handle, size)
            return
        chunk: list[bytes] = []
        for line in handle:
            if line.strip():
                chunk.append(line.rstrip(b"\r\n"))
                if len(chunk) >= size:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk


def _array_records(handle: io.BufferedIOBase, size: int) -> Iterator[list[bytes]]:
    """A JSON array's records, mapped rather than read: its pages belong to the file and the
    OS can drop them, so a file larger than memory costs only a small handle per record.
    A gzipped array is inflated into a temporary file first, to be mapped the same way."""
    if isinstance(handle, gzip.GzipFile):
        with tempfile.TemporaryFile() as inflated:
            shutil.copyfileobj(handle, inflated, 1 << 20)
            yield from _array_records(inflated, size)
        return
    with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        items = msgspec.json.decode(mapped, type=list[msgspec.Raw])
        try:
            for start in range(0, len(items), size):
                yield [bytes(item) for item in items[start : start + size]]
        finally:
            del items
