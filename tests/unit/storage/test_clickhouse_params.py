"""The server backend's pure parts: parameter binding, URLs, Arrow payloads, streamed results.

Parameter translation is checked against the engine itself: the same query with the same
values must give the same rows whether chdb binds the parameters or runs our inlined text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from chdb import session as chdb_session

from arbitrage.config import StorageSettings
from arbitrage.errors import ConfigError, ValidationError
from arbitrage.storage._arrow_ipc import arrow_stream_bytes, read_arrow_stream
from arbitrage.storage._clickhouse import (
    ClickHouseWarehouse,
    _ResponseFile,
    http_endpoint,
    http_params,
    inline_params,
    native_dsn,
    tsv_column,
)


@pytest.fixture(scope="module")
def engine() -> Iterator[chdb_session.Session]:
    db = chdb_session.Session()
    try:
        yield db
    finally:
        db.close()


CASES: list[tuple[str, dict[str, Any]]] = [
    ("SELECT {s:String} AS v", {"s": "it's a \\ back\tslash\nand 'quotes'"}),
    ("SELECT {s:String} AS v", {"s": "{not:Placeholder} %(x)s %s"}),
    ("SELECT {t:DateTime64(3, 'UTC')} AS v", {"t": "2025-01-02 03:04:05.678"}),
    ("SELECT {n:UInt32} + 1 AS v", {"n": 41}),
    ("SELECT {x:Float64} AS v", {"x": 0.1}),
    ("SELECT {x:Float64} AS v", {"x": -1e300}),
    ("SELECT {b:Bool} AS v", {"b": True}),
    ("SELECT {x:Nullable(String)} AS v", {"x": None}),
    ("SELECT number AS v FROM numbers(10) LIMIT {limit:UInt32} OFFSET {offset:UInt64}", {"limit": 3, "offset": 4}),
    ("SELECT toString(number) AS v FROM numbers(20) WHERE v IN {a:Array(String)}", {"a": ["3", "1", "x'y"]}),
    ("SELECT '{keep:String}' AS v, {n:Int64} AS w", {"n": -5}),
]


@pytest.mark.parametrize(("sql", "params"), CASES)
def test_inlined_parameters_give_the_same_rows_as_engine_bound_ones(
    engine: chdb_session.Session, sql: str, params: dict[str, Any]
) -> None:
    # the engine binds parameters from their escaped text form, as the HTTP interface sends them
    bound = engine.query(sql, "JSONCompact", params={k[len("param_") :]: v for k, v in http_params(params).items()})
    inlined = engine.query(inline_params(sql, params), "JSONCompact").bytes()
    assert _rows(inlined) == _rows(bound.bytes())


def _rows(body: bytes) -> Any:
    return json.loads(body)["data"]


def test_inlined_datetime_keeps_milliseconds(engine: chdb_session.Session) -> None:
    moment = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    sql = inline_params("SELECT toUnixTimestamp64Milli({t:DateTime64(3, 'UTC')})", {"t": moment})
    assert engine.query(sql, "CSV").bytes() == f"{int(moment.timestamp() * 1000)}\n".encode()


def test_string_parameters_inline_as_plain_literals_usable_in_settings(engine: chdb_session.Session) -> None:
    sql = inline_params("SELECT 1 SETTINGS log_comment = {c:String}", {"c": "claim@2025"})
    assert sql == "SELECT 1 SETTINGS log_comment = 'claim@2025'"
    assert engine.query(sql, "CSV").bytes() == b"1\n"


def test_identifier_parameters_are_back_quoted(engine: chdb_session.Session) -> None:
    sql = inline_params("SELECT number AS {col:Identifier} FROM numbers(1)", {"col": "we`ird"})
    assert "`we\\`ird`" in sql
    assert engine.query(sql, "CSV").bytes() == b"0\n"


def test_a_placeholder_without_a_value_is_an_error_naming_it() -> None:
    with pytest.raises(ValidationError, match=r"params\.missing"):
        inline_params("SELECT {missing:UInt8}", {})


def test_http_parameters_escape_strings_in_the_servers_text_form(engine: chdb_session.Session) -> None:
    params = http_params({"s": "a\tb\\c\nd", "n": 7, "when": datetime(2025, 1, 1, tzinfo=UTC), "tags": ["x", "y"]})
    assert params == {
        "param_s": "a\\tb\\\\c\\nd",
        "param_n": "7",
        "param_when": "2025-01-01 00:00:00.000000",
        "param_tags": "['x', 'y']",
    }


def test_the_native_dsn_connects_to_the_default_database_and_keeps_options() -> None:
    dsn = native_dsn("clickhouse://u:p%40ss@db.example:9000/arbitrage?compression=lz4")
    assert dsn == "clickhouse://u:p%40ss@db.example:9000/default?compression=lz4"
    with pytest.raises(ConfigError, match=r"storage\.url"):
        native_dsn("http://db.example:8123")


def test_the_http_endpoint_is_derived_from_the_url_with_credentials_in_headers() -> None:
    url, headers = http_endpoint("clickhouse://u:p%40ss@db.example:9000/arbitrage")
    assert url == "http://db.example:8123/"
    assert headers == {"X-ClickHouse-User": "u", "X-ClickHouse-Key": "p@ss"}
    secure, _ = http_endpoint("clickhouses://db.example:9440/arbitrage")
    assert secure == "https://db.example:8443/"
    explicit, headers = http_endpoint("clickhouse://u:pw@db:9000/a", "https://proxy.example:443/ch/")
    assert explicit == "https://proxy.example:443/ch/"
    assert headers["X-ClickHouse-Key"] == "pw"


def test_the_backend_refuses_to_start_without_a_url() -> None:
    with pytest.raises(ConfigError, match=r"storage\.url"):
        ClickHouseWarehouse(StorageSettings(backend="clickhouse"))


def test_arrow_payloads_widen_polars_view_types_and_round_trip() -> None:
    frame = pl.DataFrame(
        {
            "signature": ["a", "b"],
            "route": [["x", "y"], ["z"]],
            "legs": [[{"dex": "orca", "amount_in": 1}], [{"dex": "raydium", "amount_in": 2}]],
            "n": [1, 2],
        }
    )
    table = frame.to_arrow(compat_level=pl.CompatLevel.newest())  # as ingest hands rows to insert_arrow
    assert "view" in str(table.schema.field("signature").type) and "view" in str(table.schema.field("legs").type)
    payload = arrow_stream_bytes(table)
    back = read_arrow_stream(payload)
    assert back.to_pylist() == table.to_pylist()
    assert not any("view" in str(field.type) for field in back.schema)


def test_external_table_rows_are_escaped_tab_separated() -> None:
    assert tsv_column(pa.array(["abc", "t\tb", "back\\"])) == b"abc\nt\\tb\nback\\\\\n"


def test_a_streamed_arrow_response_is_read_batch_by_batch_from_small_chunks() -> None:
    table = pa.table({"n": list(range(1000))})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=100):
            writer.write_batch(batch)
    body = sink.getvalue().to_pybytes()
    chunks = iter([body[i : i + 7] for i in range(0, len(body), 7)])
    reader = pa.ipc.open_stream(_ResponseFile(chunks))
    batches = list(reader)
    assert len(batches) == 10
    assert pa.Table.from_batches(batches).equals(table)


def test_mutations_on_a_cluster_change_the_shards_local_tables() -> None:
    """ClickHouse refuses `ALTER TABLE … UPDATE` on a Distributed table (dead-letter replay marks rows so)."""
    url = "clickhouse://db.example:9000/arbitrage"
    clustered = ClickHouseWarehouse(StorageSettings(backend="clickhouse", url=url, database="arb", cluster="main"))
    assert clustered.mutation_target("dead_letters") == "arb.dead_letters_local ON CLUSTER main"
    single = ClickHouseWarehouse(StorageSettings(backend="clickhouse", url=url, database="arb"))
    assert single.mutation_target("dead_letters") == "arb.dead_letters"
