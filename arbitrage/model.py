"""The transaction contract: input types, constants and the stored column list.

This module is the single source of truth for what a transaction is. The ingest
decoder validates against `TransactionIn`, the migrations' `transactions` table is
checked against `STORED_COLUMNS` by the tests, and the API and exports derive their
schemas from it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import msgspec
import polars as pl
from polars._typing import PolarsDataType

WSOL_MINT = "So11111111111111111111111111111111111111112"
LAMPORTS_PER_SOL = 1_000_000_000
EARLIEST_BLOCK_TIME = datetime(2020, 3, 16, tzinfo=UTC)
MAX_CLOCK_SKEW = timedelta(hours=1)
MAX_LEGS = 64

# Decimals of well-known mints, used when a leg does not carry them (else 6).
KNOWN_DECIMALS: dict[str, int] = {
    WSOL_MINT: 9,
    "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v": 6,  # USDC
    "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB": 6,  # USDT
    "mSoLzYCxHdYgdzU16g5QSh3i5K3z3KZK7ytfqcJm7So": 9,  # mSOL
    "J1toso1uCk3RLmjorhTtrVwY9HJ7X8V9yYac6Y7kGCPn": 9,  # JitoSOL
    "7dHbWXmci3dT8UFYWYZweBLXgycu7Y3iL6trKn1Y7ARj": 9,  # stSOL
    "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263": 5,  # BONK
    "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN": 6,  # JUP
    "4k3Dyjzvzp8eMZWUXbBCjEvwSkkk59S5iCNLY3QrkX6R": 6,  # RAY
}

# Lengths are checked while decoding; the base58 alphabet is checked on whole columns
# afterwards (arbitrage.ingest), which is several times faster than a regex per value.
BASE58_PATTERN = "^[1-9A-HJ-NP-Za-km-z]+$"
SIGNATURE_MAX_CHARS = 88
"""The longest signature: base58 of 64 bytes."""
Signature = Annotated[str, msgspec.Meta(min_length=64, max_length=SIGNATURE_MAX_CHARS)]
Pubkey = Annotated[str, msgspec.Meta(min_length=32, max_length=44)]
Slot = Annotated[int, msgspec.Meta(gt=0, le=2**63 - 1)]
# msgspec bounds stop at int64; the < 2^64 ceiling of these is checked when columns are built.
RawAmount = Annotated[int, msgspec.Meta(ge=0)]
Lamports = Annotated[int, msgspec.Meta(ge=0)]
UINT64_LIMIT = 2**64
Decimals = Annotated[int, msgspec.Meta(ge=0, le=18)]
DEX_PATTERN = r"^[A-Za-z0-9_.\-]+$"
"""DEX names as the `dex` filter can ask for them: program names, or program ids for unknown ones."""
DexName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=DEX_PATTERN)]
BlockTime = int | Annotated[datetime, msgspec.Meta(tz=True)]


class Leg(msgspec.Struct, gc=False, omit_defaults=True):
    """One swap of a route, in execution order; amounts are raw integer units."""

    dex: DexName
    pool: Pubkey
    token_in: Pubkey
    token_out: Pubkey
    amount_in: RawAmount
    amount_out: RawAmount
    decimals_in: Decimals | None = None
    decimals_out: Decimals | None = None
    reserve_in: RawAmount | None = None
    reserve_out: RawAmount | None = None


class TransactionIn(msgspec.Struct, gc=False, omit_defaults=True):
    """One arbitrage transaction as a source sends it. Unknown fields are ignored.

    `block_time` is milliseconds since the epoch or an RFC 3339 string (with its offset); its range
    (not before 2020-03-16, at most an hour ahead of the clock) is checked after
    decoding because it depends on the current time.
    """

    signature: Signature
    slot: Slot
    block_time: BlockTime
    signer: Pubkey
    legs: Annotated[list[Leg], msgspec.Meta(min_length=1, max_length=MAX_LEGS)]
    fee_lamports: Lamports
    success: bool = True
    priority_fee_lamports: Lamports = 0
    jito_tip_lamports: Lamports = 0
    other_cost_lamports: Lamports = 0
    compute_units_consumed: Lamports | None = None
    compute_unit_limit: Lamports | None = None
    bundle_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    leader: Pubkey | None = None


class Column(msgspec.Struct, frozen=True):
    """A stored column: its ClickHouse type, its polars dtype and what it means."""

    name: str
    clickhouse_type: str
    dtype: PolarsDataType
    definition: str


LEG_DTYPE = pl.Struct(
    {
        "dex": pl.String,
        "pool": pl.String,
        "token_in": pl.String,
        "token_out": pl.String,
        "amount_in": pl.UInt64,
        "amount_out": pl.UInt64,
        "decimals_in": pl.UInt8,
        "decimals_out": pl.UInt8,
        "reserve_in": pl.UInt64,
        "reserve_out": pl.UInt64,
        "price": pl.Float64,
    }
)
LEG_CLICKHOUSE_TYPE = (
    "Array(Tuple(dex LowCardinality(String), pool String, token_in String, token_out String, "
    "amount_in UInt64, amount_out UInt64, decimals_in UInt8, decimals_out UInt8, "
    "reserve_in Nullable(UInt64), reserve_out Nullable(UInt64), price Nullable(Float64)))"
)

# The `transactions` table before features and risk: raw fields, then derived ones.
STORED_COLUMNS: tuple[Column, ...] = (
    Column("signature", "String", pl.String, "Transaction signature (base58); the record's identity."),
    Column("slot", "UInt64", pl.UInt64, "Slot the transaction landed in."),
    Column("block_time", "DateTime64(3, 'UTC')", pl.Datetime("ms", "UTC"), "Block time (UTC, ms)."),
    Column("signer", "String", pl.String, "Fee payer / searcher public key."),
    Column("success", "Bool", pl.Boolean, "Whether the transaction executed without error."),
    Column("fee_lamports", "UInt64", pl.UInt64, "Base fee paid, lamports."),
    Column("priority_fee_lamports", "UInt64", pl.UInt64, "Priority fee paid, lamports."),
    Column("jito_tip_lamports", "UInt64", pl.UInt64, "Jito tip paid, lamports."),
    Column("other_cost_lamports", "UInt64", pl.UInt64, "Other costs the signer paid (third-party fees), lamports."),
    Column("compute_units_consumed", "Nullable(UInt64)", pl.UInt64, "Compute units used."),
    Column("compute_unit_limit", "Nullable(UInt64)", pl.UInt64, "Compute unit limit requested."),
    Column("bundle_id", "Nullable(String)", pl.String, "Jito bundle id, when known."),
    Column("leader", "Nullable(String)", pl.String, "Slot leader identity, when known."),
    Column("legs", LEG_CLICKHOUSE_TYPE, pl.List(LEG_DTYPE), "Swaps in execution order, with implied price."),
    Column("route", "Array(String)", pl.List(pl.String), "Mints in route order: first input, then each output."),
    Column("dexes", "Array(LowCardinality(String))", pl.List(pl.String), "DEX of each leg."),
    Column("hops", "UInt8", pl.UInt8, "Number of legs."),
    Column("circular", "Bool", pl.Boolean, "Route starts and ends in the same mint."),
    Column("start_token", "String", pl.String, "Mint the route starts in."),
    Column(
        "gross_revenue", "Nullable(Float64)", pl.Float64, "Output minus input in the start token (circular routes)."
    ),
    Column("gross_revenue_sol", "Nullable(Float64)", pl.Float64, "Gross revenue valued in SOL along the route."),
    Column("total_cost_lamports", "UInt64", pl.UInt64, "Fee + priority fee + tip + other costs, lamports."),
    Column("total_cost_sol", "Float64", pl.Float64, "Fee + priority fee + tip + other costs, SOL."),
    Column("net_profit_sol", "Nullable(Float64)", pl.Float64, "Gross revenue in SOL minus total cost."),
    Column("source", "LowCardinality(String)", pl.String, "Where the record came from (http, kafka, file, ...)."),
    Column(
        "kafka_partition",
        "Nullable(Int32)",
        pl.Int32,
        "Kafka partition the record was read from; null for other sources.",
    ),
    Column(
        "kafka_offset",
        "Nullable(Int64)",
        pl.Int64,
        "Offset of its Kafka message in that partition; null for other sources.",
    ),
    Column(
        "ingested_at", "DateTime64(3, 'UTC')", pl.Datetime("ms", "UTC"), "When its insert into the warehouse started."
    ),
)

STORED_SCHEMA: dict[str, PolarsDataType] = {c.name: c.dtype for c in STORED_COLUMNS}

KAFKA_ORIGIN = ("kafka_partition", "kafka_offset")
"""Where Kafka ingest read a record; the decoded batch carries them, other sources leave them null."""

TIME_TEXT_FORMAT = "%Y-%m-%dT%H:%M:%S%.3fZ"
"""How every text output (API, streams, Kafka, CSV and JSON exports) writes a stored time: RFC 3339, UTC, ms."""

IDENTIFIER_COLUMNS = frozenset({"slot", "stream_position", *KAFKA_ORIGIN})
"""Numeric columns that identify a row rather than measure it: never scaled by default."""

COST_FIELDS = ("fee_lamports", "priority_fee_lamports", "jito_tip_lamports", "other_cost_lamports")
"""What `total_cost_lamports` adds up."""


def decimals_for(mint: str) -> int:
    """Decimals assumed for a mint when a leg does not carry them."""
    return KNOWN_DECIMALS.get(mint, 6)
