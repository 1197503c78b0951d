"""The CSV writer writes the same bytes however rows arrive in batches, compressed or not."""

from __future__ import annotations

import gzip
import io
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from arbitrage.export import WriterOptions
from arbitrage.export._flatten import flatten_batch
from arbitrage.export._writers import CsvWriter

LEG = pa.struct(
    [("dex", pa.string()), ("amount_in", pa.uint64()), ("reserve_in", pa.uint64()), ("price", pa.float64())]
)

# What the writer wrote for `edge_cases()` before it was made fast (per-slice polars frames
# into BytesIO buffers): quoting, nulls vs empty lists, times, floats, JSON legs, pipes.
EDGE_CASES_CSV = (
    "signature,slot,block_time,success,hops,net_profit_sol,gross,legs,route\n"
    "plain,1,2024-01-01T00:00:00.000Z,true,1,1.0,inf,"
    '"[{""dex"":""raydium_amm"",""amount_in"":9223372036854775809,""reserve_in"":null,""price"":0.5}]",A|B|A\n'
    '"say ""hi"", then\nleave",18446744073709551615,2024-02-29T23:59:59.999Z,false,255,-1e-7,123456789.12345679,[],""\n'
    ",0,1970-01-01T00:00:00.000Z,,,,0.30000000000000004,,\n"
    "ünïcødé ✓,42,2024-03-01T12:00:00.005Z,true,3,NaN,-0.0,"
    '"[{""dex"":""q\\""uote"",""amount_in"":1,""reserve_in"":7,""price"":1e+300},'
    '{""dex"":""b"",""amount_in"":2,""reserve_in"":null,""price"":null}]","x,y|z"\n'
)


def edge_cases() -> pa.RecordBatch:
    legs = [
        [{"dex": "raydium_amm", "amount_in": 2**63 + 1, "reserve_in": None, "price": 0.5}],
        [],
        None,
        [
            {"dex": 'q"uote', "amount_in": 1, "reserve_in": 7, "price": 1e300},
            {"dex": "b", "amount_in": 2, "reserve_in": None, "price": None},
        ],
    ]
    times = [
        datetime(2024, 1, 1, tzinfo=UTC),
        datetime(2024, 2, 29, 23, 59, 59, 999000, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2024, 3, 1, 12, 0, 0, 5000, tzinfo=UTC),
    ]
    return pa.RecordBatch.from_pydict(
        {
            "signature": pa.array(["plain", 'say "hi", then\nleave', None, "ünïcødé ✓"]),
            "slot": pa.array([1, 2**64 - 1, 0, 42], pa.uint64()),
            "block_time": pa.array(times, pa.timestamp("ms", "UTC")),
            "success": pa.array([True, False, None, True]),
            "hops": pa.array([1, 255, None, 3], pa.uint8()),
            "net_profit_sol": pa.array([1.0, -1e-7, None, float("nan")]),
            "gross": pa.array([float("inf"), 123456789.123456789, 0.1 + 0.2, -0.0]),
            "legs": pa.array(legs, pa.list_(LEG)),
            "route": pa.array([["A", "B", "A"], [], None, ["x,y", "z"]], pa.list_(pa.string())),
        }
    )


def many_rows(n: int) -> pa.RecordBatch:
    """Enough rows that polars hands the output over in several pieces."""
    rng = np.random.default_rng(7)
    return flatten_batch(
        pa.RecordBatch.from_pydict(
            {
                "signature": pa.array([f"sig,{i}" if i % 5 else None for i in range(n)]),
                "value": pa.array(rng.normal(size=n)),
                "block_time": pa.array(np.arange(n) * 400 + 1_700_000_000_000, pa.timestamp("ms", "UTC")),
                "route": pa.array([["A", "B"][: i % 3] for i in range(n)], pa.list_(pa.string())),
            }
        )
    )


class CountingSink(io.BytesIO):
    writes = 0

    def write(self, data: object) -> int:  # type: ignore[override]
        self.writes += 1
        return super().write(data)  # type: ignore[arg-type]


def write_csv(batches: list[pa.RecordBatch], compression: str = "none", sink: io.BytesIO | None = None) -> bytes:
    writer = CsvWriter()
    sink = sink if sink is not None else io.BytesIO()
    writer.open(sink, batches[0].schema, WriterOptions(compression=compression))
    for batch in batches:
        writer.write(batch)
    writer.close()
    assert not sink.closed
    return sink.getvalue()


def decompress(data: bytes, compression: str) -> bytes:
    if compression == "none":
        return data
    if compression == "gzip":
        return gzip.decompress(data)
    with pa.CompressedInputStream(pa.BufferReader(data), compression) as stream:
        decompressed: bytes = stream.read()
    return decompressed


def test_values_are_formatted_exactly_as_before():
    assert write_csv([flatten_batch(edge_cases())]).decode() == EDGE_CASES_CSV


def test_rows_split_into_batches_give_the_same_file_with_one_header():
    flat = flatten_batch(edge_cases())
    pieces = [flat.slice(0, 1), flat.slice(1, 0), flat.slice(1, 2), flat.slice(3)]
    assert write_csv(pieces).decode() == EDGE_CASES_CSV


def test_an_export_without_rows_is_the_header_line():
    flat = flatten_batch(edge_cases())
    assert write_csv([flat.slice(0, 0)]).decode() == EDGE_CASES_CSV.split("\n", 1)[0] + "\n"


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd", "lz4"])
def test_every_codec_decompresses_to_the_same_text(compression):
    batch = many_rows(200_000)
    counting = CountingSink()
    whole = write_csv([batch], sink=counting)
    assert counting.writes > 1
    batches = [batch.slice(0, 50_000), batch.slice(50_000, 1), batch.slice(50_001)]
    assert decompress(write_csv(batches, compression), compression) == whole
    assert whole.count(b"\n") == 200_001


class BrokenSink(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        raise OSError("disk full")


def test_a_failing_sink_fails_the_writer():
    batch = many_rows(50_000)

    def write_to_a_full_disk() -> None:
        writer = CsvWriter()
        writer.open(BrokenSink(), batch.schema, WriterOptions(compression="none"))  # type: ignore[arg-type]
        writer.write(batch)
        writer.write(batch)
        writer.close()

    with pytest.raises(Exception, match="disk full"):
        write_to_a_full_disk()
