"""The HDF5 writer: rows split across batches and chunks come back in order; memory stays flat."""

from __future__ import annotations

import ctypes
import io

import h5py
import numpy as np
import pyarrow as pa
import pytest

from arbitrage.export import WriterOptions
from arbitrage.export._writers import HDF5_CHUNK_ROWS, Hdf5Writer


def rows(start: int, count: int) -> pa.RecordBatch:
    index = np.arange(start, start + count)
    return pa.RecordBatch.from_pydict(
        {
            "slot": pa.array(index, pa.uint64()),
            "price": pa.array(np.where(index % 7 == 0, np.nan, index / 3.0), pa.float64(), from_pandas=True),
            "signature": pa.array([None if i % 11 == 0 else f"sig{i}" for i in index.tolist()], pa.string()),
        }
    )


def write(batches: list[pa.RecordBatch], compression: str = "gzip") -> bytes:
    writer = Hdf5Writer()
    sink = io.BytesIO()
    writer.open(sink, batches[0].schema, WriterOptions(compression=compression))
    for batch in batches:
        writer.write(batch)
    writer.close()
    return sink.getvalue()


@pytest.mark.parametrize("compression", ["gzip", "lzf", "none"])
def test_rows_of_uneven_batches_across_chunk_boundaries_are_written_in_order(compression):
    sizes = [1, HDF5_CHUNK_ROWS - 1, 0, 2 * HDF5_CHUNK_ROWS + 5, 3, HDF5_CHUNK_ROWS]
    batches, start = [], 0
    for size in sizes:
        batches.append(rows(start, size))
        start += size
    with h5py.File(io.BytesIO(write(batches, compression)), "r") as h5:
        data = h5["data"]
        assert h5.attrs["rows"] == start
        assert data["slot"][:].tolist() == list(range(start))
        want_price = rows(0, start).column("price").to_numpy(zero_copy_only=False)
        np.testing.assert_array_equal(data["price"][:], want_price)
        assert [s.decode() for s in data["signature"][:]] == ["" if i % 11 == 0 else f"sig{i}" for i in range(start)]
        assert data["slot"].chunks == (HDF5_CHUNK_ROWS,)


def test_an_empty_file_has_empty_datasets():
    with h5py.File(io.BytesIO(write([rows(0, 0)])), "r") as h5:
        assert h5.attrs["rows"] == 0
        assert h5["data"]["slot"].shape == (0,)


def _malloc_in_use() -> int:
    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in [
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            ]
        ]

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        pytest.skip("needs glibc's mallinfo2")
    mallinfo2.restype = MallInfo2
    in_use: int = mallinfo2().uordblks
    return in_use


def test_memory_does_not_grow_with_the_rows_written():
    # HDF5's chunk cache (as shipped with h5py, HDF5 2.0) kept every written chunk until
    # close: 20 float columns x 1 M rows held 160 MB. Written in whole chunks without the
    # cache, what the library holds stays the same however many rows go in.
    batch = pa.RecordBatch.from_pydict({f"c{i}": np.random.default_rng(i).random(65_536) for i in range(20)})
    writer = Hdf5Writer()
    writer.open(io.BytesIO(), batch.schema, WriterOptions(compression="none"))
    try:
        for _ in range(2):
            writer.write(batch)
        settled = _malloc_in_use()
        for _ in range(14):
            writer.write(batch)
        grown = _malloc_in_use() - settled
    finally:
        writer.close()
    written = 14 * batch.nbytes
    assert grown < written / 10, f"{grown / 2**20:.0f} MiB more held after writing {written / 2**20:.0f} MiB"
