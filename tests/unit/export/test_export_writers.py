"""Writers, flattening, request checks and the format registry, without a warehouse."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from arbitrage.errors import ValidationError
from arbitrage.export import ExportRequest, Split, UnknownFormat, WriterOptions, formats, plan_export, register_exporter
from arbitrage.export._flatten import flatten_batch, flattening_of
from arbitrage.export._request import check_split, time_range
from arbitrage.export._sink import Destination, redact_url
from arbitrage.export._writers import exporter_factory
from arbitrage.model import LEG_DTYPE, STORED_COLUMNS, STORED_SCHEMA

TABLE = {c.name: c.clickhouse_type for c in STORED_COLUMNS}


def stored_batch() -> pa.RecordBatch:
    """Two rows in the stored shape, built from the contract's column list."""
    leg = {
        "dex": "raydium_amm",
        "pool": "P",
        "token_in": "A",
        "token_out": "B",
        "amount_in": 2**63 + 1,
        "amount_out": 5,
        "decimals_in": 9,
        "decimals_out": 6,
        "reserve_in": None,
        "reserve_out": 7,
        "price": 0.5,
    }
    row = dict.fromkeys(STORED_SCHEMA)
    row |= {
        "signature": "S",
        "slot": 1,
        "block_time": datetime(2024, 1, 1, tzinfo=UTC),
        "signer": "X",
        "success": True,
        "legs": [leg, leg],
        "route": ["A", "B", "A"],
        "dexes": ["raydium_amm", "phoenix"],
        "hops": 2,
        "net_profit_sol": 0.25,
        "ingested_at": datetime(2024, 1, 2, tzinfo=UTC),
    }
    empty = dict(row, signature="T", legs=[], route=[], dexes=[], net_profit_sol=None)
    frame = pl.DataFrame([row, empty], schema=STORED_SCHEMA)
    assert frame.schema["legs"] == pl.List(LEG_DTYPE)
    return frame.to_arrow().to_batches()[0]


def test_flattening_turns_legs_into_json_and_string_lists_into_pipes():
    batch = stored_batch()
    flat = flatten_batch(batch)
    assert json.loads(flat.column("legs")[0].as_py()) == batch.column("legs")[0].as_py()
    assert flat.column("legs")[1].as_py() == "[]"
    assert flat.column("route").to_pylist() == ["A|B|A", ""]
    assert flattening_of(batch.schema.field("legs").type) == "json"
    assert flattening_of(batch.schema.field("dexes").type) == "pipe-joined"
    assert flattening_of(batch.schema.field("slot").type) is None


@pytest.mark.parametrize("name", ["csv", "parquet", "json", "hdf5", "arrow", "tfrecord"])
def test_every_builtin_writer_writes_a_stored_batch_without_closing_the_sink(name):
    factory = exporter_factory(name)
    writer = factory()
    batch = stored_batch()
    if not writer.nested_types:
        batch = flatten_batch(batch)
    sink = io.BytesIO()
    writer.open(sink, batch.schema, WriterOptions(compression=writer.default_compression))
    writer.write(batch)
    writer.close()
    assert not sink.closed and len(sink.getvalue()) > 0


def test_parquet_keeps_nested_legs_exactly():
    batch = stored_batch()
    sink = io.BytesIO()
    writer = exporter_factory("parquet")()
    writer.open(sink, batch.schema, WriterOptions(compression="zstd"))
    writer.write(batch)
    writer.close()
    assert pq.read_table(io.BytesIO(sink.getvalue())).column("legs").to_pylist() == batch.column("legs").to_pylist()


def test_json_array_mode_writes_one_valid_array_across_batches():
    batch = stored_batch().select(["signature", "slot"])
    sink = io.BytesIO()
    writer = exporter_factory("json")()
    writer.open(sink, batch.schema, WriterOptions(compression="none", json_array=True))
    writer.write(batch)
    writer.write(batch)
    writer.close()
    assert [r["signature"] for r in json.loads(sink.getvalue())] == ["S", "T", "S", "T"]


def test_dates_and_datetimes_resolve_to_a_half_open_utc_range():
    days = time_range(ExportRequest(start_date="2024-01-01", end_date="2024-01-31"))
    assert days.start == datetime(2024, 1, 1, tzinfo=UTC) and days.end == datetime(2024, 2, 1, tzinfo=UTC)
    instants = time_range(ExportRequest(start_date="2024-01-01T09:00:00Z", end_date="2024-01-01T12:00:00+02:00"))
    assert instants.start == datetime(2024, 1, 1, 9, tzinfo=UTC) and instants.end == datetime(
        2024, 1, 1, 10, tzinfo=UTC
    )
    with pytest.raises(ValidationError) as caught:
        time_range(ExportRequest(start_date="2024-02-01", end_date="2024-01-01"))
    assert caught.value.field == "end_date"
    with pytest.raises(ValidationError):
        time_range(ExportRequest(start_date="yesterday"))


def test_bounds_past_the_years_datetime_holds_clamp_to_its_edges():
    earliest, latest = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
    last_day = time_range(ExportRequest(start_date="0001-01-01", end_date="9999-12-31"))
    assert (last_day.start, last_day.end) == (earliest, latest)
    offsets = time_range(ExportRequest(start_date="0001-01-01T00:00:00+01:00", end_date="9999-12-31T23:59:59-01:00"))
    assert (offsets.start, offsets.end) == (earliest, latest)
    with pytest.raises(ValidationError) as caught:
        time_range(ExportRequest(start_date="9999-12-31T23:59:59-01:00", end_date="9999-12-31"))
    assert caught.value.field == "end_date"


def test_split_fractions_must_sum_to_one():
    check_split(Split(train=0.8, val=0.1, test=0.1))
    with pytest.raises(ValidationError, match="must be 1"):
        check_split(Split(train=0.8, val=0.3, test=0.1))


def test_the_registry_lists_builtins_rejects_bad_names_and_names_known_formats_on_a_miss():
    assert {"csv", "parquet", "json", "hdf5", "arrow", "tfrecord"} <= set(formats())
    with pytest.raises(ValueError, match="Bad Name"):
        register_exporter("Bad Name", object)  # type: ignore[arg-type]
    with pytest.raises(UnknownFormat) as caught:
        exporter_factory("xlsx")
    assert "parquet" in caught.value.known and "xlsx" in str(caught.value)


def test_credentials_are_removed_from_urls_shown_to_users():
    assert redact_url("s3://key:secret@bucket/prefix?token=abc") == "s3://bucket/prefix"
    assert redact_url("/local/dir") == "/local/dir"


def test_a_staged_local_file_is_only_published_on_commit(tmp_path):
    destination = Destination(str(tmp_path / "out"), "job1")
    with destination.open_staged("a/part-00000.csv") as staged:
        staged.write(b"x,y\n")
    assert not (tmp_path / "out" / "a" / "part-00000.csv").exists()
    assert staged.sha256 and staged.bytes_written == 4
    destination.commit(["a/part-00000.csv"], b"{}")
    assert (tmp_path / "out" / "a" / "part-00000.csv").read_bytes() == b"x,y\n"
    assert (tmp_path / "out" / "manifest.json").read_bytes() == b"{}"
    assert not (tmp_path / "out" / ".staging-job1").exists()


def test_an_unknown_column_is_rejected_by_name():
    with pytest.raises(ValidationError) as caught:
        plan_export("csv", ExportRequest(columns=["signature", "no_such_column"]), TABLE)
    assert caught.value.field == "columns" and "no_such_column" in caught.value.reason


@pytest.mark.parametrize(
    ("fmt", "codec"), [("csv", "snappy"), ("hdf5", "zstd"), ("tfrecord", "lz4"), ("arrow", "gzip")]
)
def test_a_codec_the_format_cannot_write_is_rejected(fmt, codec):
    with pytest.raises(ValidationError) as caught:
        plan_export(fmt, ExportRequest(compression=codec), TABLE)
    assert caught.value.field == "compression" and fmt in caught.value.reason


def test_normalization_defaults_to_numeric_measures_and_leaves_identifiers_alone():
    plan = plan_export(
        "parquet", ExportRequest(normalize=True, columns=["slot", "signature", "net_profit_sol", "hops"]), TABLE
    )
    assert plan.scaled_columns == ["net_profit_sol", "hops"]
    with pytest.raises(ValidationError):
        plan_export("parquet", ExportRequest(normalize=True, normalize_columns=["signature"]), TABLE)
