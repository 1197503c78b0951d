"""The JSON writer's NaN and ±inf: strings, and every other value as polars writes it."""

from __future__ import annotations

import io
import json
import math

import polars as pl
import pyarrow as pa

from arbitrage.export import WriterOptions
from arbitrage.export._writers import JsonWriter


def write(batch: pa.RecordBatch, *, array: bool = False) -> bytes:
    writer = JsonWriter()
    out = io.BytesIO()
    writer.open(out, batch.schema, WriterOptions(compression="none", json_array=array))
    writer.write(batch)
    writer.close()
    return out.getvalue()


BATCH = pa.record_batch(
    {
        "id": pa.array([1, 2**64 - 1, None, 4], pa.uint64()),
        "x": [1.5, math.nan, math.inf, None],
        'we"ird': ['a"\n', None, "b", "c"],
        "legs": pa.array([[{"price": 1.0}], [], None, [{"price": None}]]),
        "y": pa.array([-math.inf, 2.0, 3.0, None], pa.float32()),
        "ok": [0.1, 0.2, None, 0.4],
    }
)


def test_non_finite_floats_are_strings_and_the_rest_is_what_polars_writes():
    written = write(BATCH)
    expected = io.BytesIO()
    pl.from_arrow(BATCH).write_ndjson(expected)  # type: ignore[union-attr]
    rows = [json.loads(line) for line in written.splitlines()]
    plain = [json.loads(line) for line in expected.getvalue().splitlines()]
    assert [r["x"] for r in rows] == [1.5, "NaN", "Infinity", None]
    assert [r["y"] for r in rows] == ["-Infinity", 2.0, 3.0, None]
    for row, polars_row in zip(rows, plain, strict=True):
        assert list(row) == list(polars_row)
        assert {k: v for k, v in row.items() if k not in ("x", "y")} == {
            k: v for k, v in polars_row.items() if k not in ("x", "y")
        }
    assert written.endswith(b"\n") and written.count(b"\n") == BATCH.num_rows


def test_a_batch_without_non_finite_values_is_polars_text_unchanged():
    finite = BATCH.slice(3, 1)
    expected = io.BytesIO()
    pl.from_arrow(finite).write_ndjson(expected)  # type: ignore[union-attr]
    assert write(finite) == expected.getvalue()


def test_json_array_holds_the_same_objects():
    array = json.loads(write(BATCH, array=True))
    assert array == [json.loads(line) for line in write(BATCH).splitlines()]


def test_rows_with_non_finite_values_are_spliced_in_at_their_place():
    values = [float(i) for i in range(1000)]
    for row, value in ((0, math.nan), (500, math.inf), (999, -math.inf)):
        values[row] = value
    batch = pa.record_batch({"i": list(range(1000)), "x": values, "s": [f"line\n{i}" for i in range(1000)]})
    rows = [json.loads(line) for line in write(batch).splitlines()]
    assert [r["i"] for r in rows] == list(range(1000))
    assert [r["s"] for r in rows] == [f"line\n{i}" for i in range(1000)]
    assert (rows[0]["x"], rows[500]["x"], rows[999]["x"]) == ("NaN", "Infinity", "-Infinity")
    assert [r["x"] for r in rows if r["i"] not in (0, 500, 999)] == [
        float(i) for i in range(1000) if i not in (0, 500, 999)
    ]
