"""What the handlers' signatures cannot tell the OpenAPI schema: transactions, raw bodies, files.

Transactions are served as JSON rendered once per stored batch (`arbitrage.stream`), so no
type describes them; `Transaction` is built here from what the rendering follows (the
stored columns, the feature registry, the risk columns) and serves the schema only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import polars as pl
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIHeader, OpenAPIMediaType, OpenAPIResponse, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import KwargDefinition
from polars._typing import PolarsDataType

from arbitrage.api._errors import GuardedOperation
from arbitrage.features import FEATURES, LATE_COLUMN
from arbitrage.model import STORED_COLUMNS
from arbitrage.risk import RISK_COLUMNS
from arbitrage.stream import POSITION_COLUMN

_Field = tuple[str, PolarsDataType, str, str]
"""A rendered field: its name, polars dtype, ClickHouse type (which tells whether it holds NULLs) and meaning."""


def _struct(name: str, fields: Iterable[_Field], *more: tuple[str, Any]) -> type[msgspec.Struct]:
    """An object type `name` whose fields are always present, each described by its meaning."""
    members: list[tuple[str, Any]] = []
    for field, dtype, clickhouse_type, meaning in fields:
        kind = _json_type(dtype, clickhouse_type, name + field.title().removesuffix("s"))
        if clickhouse_type.startswith("Nullable("):
            kind = kind | None
        members.append((field, Annotated[kind, msgspec.Meta(description=meaning)] if meaning else kind))
    return msgspec.defstruct(name, [*members, *more])


def _json_type(dtype: PolarsDataType, clickhouse_type: str, name: str) -> Any:
    """The type a stored value renders to in JSON (times as RFC 3339 text, i.e. `datetime`); structs
    become object types called `name`."""
    if isinstance(dtype, pl.List):
        return list[_json_type(dtype.inner, clickhouse_type, name)]  # type: ignore[misc]
    if isinstance(dtype, pl.Struct):
        return _struct(name, [(f.name, f.dtype, _element_type(clickhouse_type, f.name), "") for f in dtype.fields])
    return dtype.to_python()


def _element_type(tuple_type: str, name: str) -> str:
    """The ClickHouse type of element `name` in a `Tuple(name Type, ...)` type, e.g. `Nullable(UInt64)`."""
    match = re.search(rf"\b{name} (\w+(?:\([^()]*\))?)", tuple_type)
    assert match is not None, f"{name} is not an element of {tuple_type}"
    return match.group(1)


Transaction = _struct(
    "Transaction",
    [
        *((c.name, c.dtype, c.clickhouse_type, c.definition) for c in STORED_COLUMNS),
        (LATE_COLUMN.name, LATE_COLUMN.polars_dtype, LATE_COLUMN.clickhouse_type, LATE_COLUMN.definition),
        (POSITION_COLUMN, pl.UInt64(), "UInt64", "Position in the live stream (the SSE and WebSocket event id)."),
    ],
    (
        "features",
        Annotated[
            _struct(
                "TransactionFeatures", [(f.name, f.polars_dtype, f.clickhouse_type, f.definition) for f in FEATURES]
            ),
            msgspec.Meta(description="Point-in-time features, as listed by `GET /features`."),
        ],
    ),
    (
        "risk",
        Annotated[
            _struct(
                "TransactionRisk",
                [(c.name.removeprefix("risk_"), c.polars_dtype, c.clickhouse_type, c.definition) for c in RISK_COLUMNS],
            ),
            msgspec.Meta(description="Risk score, level and components (`GET /risk/{signature}`)."),
        ],
    ),
)
"""A transaction as `/transactions`, `/historical` and the live streams send it."""


def _binary(description: str) -> Schema:
    return Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY, description=description)


NDJSON = "application/x-ndjson"
_NDJSON = Schema(type=OpenAPIType.STRING, description="One JSON object per line.")
INGEST_BODY = RequestBody(
    required=True,
    description="Transactions as the contract in the README describes them; the `Content-Type` tells the encoding.",
    content={
        "application/json": OpenAPIMediaType(
            schema=Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.OBJECT, description="A transaction."))
        ),
        NDJSON: OpenAPIMediaType(schema=_NDJSON),
        "application/msgpack": OpenAPIMediaType(schema=_binary("A msgpack array of transaction maps.")),
        "application/vnd.apache.arrow.stream": OpenAPIMediaType(
            schema=_binary("An Arrow IPC stream with the contract's fields as columns (`arbitrage.ingest.RAW_SCHEMA`).")
        ),
    },
)
SOLANA_BODY = RequestBody(
    required=True,
    description="What a Solana RPC node returns for `getTransaction` or `getBlock`, with or without the envelope.",
    content={
        "application/json": OpenAPIMediaType(
            schema=Schema(
                one_of=[
                    Schema(type=OpenAPIType.OBJECT, description="One result."),
                    Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.OBJECT), description="Results."),
                ]
            )
        ),
        NDJSON: OpenAPIMediaType(schema=_NDJSON),
    },
)
_RETRY_AFTER = OpenAPIHeader(schema=Schema(type=OpenAPIType.INTEGER), description="Seconds to wait before retrying.")


def _declare_retry_after(operation: Operation) -> None:
    unavailable = (operation.responses or {}).get("503")
    if isinstance(unavailable, OpenAPIResponse):
        unavailable.headers = {"Retry-After": _RETRY_AFTER}


def raw_body(body: RequestBody) -> type[Operation]:
    """The operation class of a route that reads its body itself: Litestar has no `data` to describe.

    It also declares the `Retry-After` of the route's 503, which a `ResponseSpec` cannot.
    """

    @dataclass
    class RawBodyOperation(GuardedOperation):
        def __post_init__(self) -> None:
            self.request_body = body
            _declare_retry_after(self)
            super().__post_init__()

    return RawBodyOperation


@dataclass
class WarehouseRead(GuardedOperation):
    """The operation of a route that answers from the warehouse: its 503 carries `Retry-After`."""

    def __post_init__(self) -> None:
        _declare_retry_after(self)
        super().__post_init__()


@dataclass
class NdjsonRead(WarehouseRead):
    """A `WarehouseRead` whose 200 is NDJSON as well, when `Accept` prefers it (one response cannot hold two media types)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        fulfilled = (self.responses or {}).get("200")
        if isinstance(fulfilled, OpenAPIResponse) and fulfilled.content is not None:
            fulfilled.content[NDJSON] = OpenAPIMediaType(schema=_NDJSON)


FILE = ResponseSpec(
    Annotated[bytes, KwargDefinition(format=OpenAPIFormat.BINARY)],  # type: ignore[arg-type]
    media_type="*/*",
    description="The file in its own media type (`text/csv`, `application/vnd.apache.parquet`, `application/x-hdf5`, "
    "`application/zip` for several files, ...), named by `Content-Disposition`.",
    generate_examples=False,
)
"""The answer of a download: a file whose media type depends on the export."""
