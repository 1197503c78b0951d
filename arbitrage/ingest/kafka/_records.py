"""What the consumer produces: derived records of stored rows and dead letters of bad messages."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import polars as pl

from arbitrage.ingest.kafka._fetched import Fetched, Headers
from arbitrage.model import TIME_TEXT_FORMAT
from arbitrage.stream import json_rows, render_transactions, top_level_key

_RISK_FALLBACK = (
    "hops",
    "circular",
    "success",
    "gross_revenue_sol",
    "total_cost_sol",
    "net_profit_sol",
    "jito_tip_lamports",
    "priority_fee_lamports",
    "compute_units_consumed",
)
"""Published on `risk-metrics` until the risk module adds `risk_*` columns."""


@dataclass(frozen=True)
class OutRecord:
    """One record to produce with headers (dead letters): key, value, headers, and the partition it came from."""

    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=list)
    partition: int = -1


@dataclass(frozen=True)
class Keyed:
    """Records of one derived topic as parallel lists: no object per record to build and free.

    `partitions` holds the partition each record's transaction was consumed from.
    """

    keys: list[bytes] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)

    def without(self, partitions: set[int]) -> Keyed:
        """The records of the other partitions (a rebalance took `partitions` away; rare, so a plain loop)."""
        kept = [i for i, partition in enumerate(self.partitions) if partition not in partitions]
        return Keyed([self.keys[i] for i in kept], [self.values[i] for i in kept], [self.partitions[i] for i in kept])


def opportunities(stored: pl.DataFrame, omit: Collection[str] = ()) -> Keyed:
    """Profitable stored transactions, rendered as the API renders them without the keys `omit`, keyed by signature."""
    profitable = stored.filter(pl.col("net_profit_sol") > 0)
    kept = profitable.select(c for c in profitable.columns if top_level_key(c) not in omit)
    return Keyed(_keys(profitable), render_transactions(kept), _partitions(profitable))


def risk_metrics(stored: pl.DataFrame) -> Keyed:
    """Risk columns (or the derived economics until risk exists) of each stored transaction."""
    if stored.is_empty():
        return Keyed()
    risk = [c for c in stored.columns if c.startswith("risk_")]
    columns = ["signature", "block_time", *(risk or [c for c in _RISK_FALLBACK if c in stored.columns])]
    frame = stored.select(columns).with_columns(pl.col("block_time").dt.strftime(TIME_TEXT_FORMAT))
    return Keyed(_keys(frame), json_rows(frame), _partitions(stored))


def _keys(frame: pl.DataFrame) -> list[bytes]:
    keys: list[bytes] = frame["signature"].cast(pl.Binary).to_list()
    return keys


def _partitions(frame: pl.DataFrame) -> list[int]:
    """-1 for rows of other sources (no such column when a batch has none from Kafka)."""
    if "kafka_partition" not in frame.columns:
        return [-1] * len(frame)
    partitions: list[int] = frame["kafka_partition"].fill_null(-1).to_list()
    return partitions


DLQ_VALUE_BYTES = 900_000
"""The most of a rejected message's bytes (value and original headers together) its DLQ record
carries: the producer refuses records over `message.max.bytes` (1 MB by default), and one refused
record fails the whole transaction of its batch. The `dead_letters` table keeps every value byte."""

DLQ_HEADER_BYTES = 131_072
"""The most of that the original headers may take; those past it are dropped (counted in
`dlq.headers_dropped`), so the value, which says what was wrong, keeps the most room."""


def dead_letter(fetched: Fetched, index: int, field_name: str, reason: str) -> OutRecord:
    """The original bytes and headers of message `index`, plus why and where it was rejected."""
    original = fetched.headers[index] or []
    headers: Headers = []
    header_bytes = dropped = 0
    for key, value in original:
        size = len(key.encode()) + len(value or b"")
        if dropped or header_bytes + size > DLQ_HEADER_BYTES:
            dropped += 1
            continue
        headers.append((key, value))
        header_bytes += size
    partition = fetched.partitions[index]
    headers += [
        ("dlq.reason", reason[:1000].encode()),
        ("dlq.field", field_name.encode()),
        ("dlq.topic", fetched.topic.encode()),
        ("dlq.partition", str(partition).encode()),
        ("dlq.offset", str(fetched.offsets[index]).encode()),
    ]
    if dropped:
        headers.append(("dlq.headers_dropped", str(dropped).encode()))
    value = fetched.values[index]
    room = DLQ_VALUE_BYTES - header_bytes
    if len(value) > room:
        headers.append(("dlq.truncated_from", str(len(value)).encode()))
        value = value[:room]
    return OutRecord(fetched.keys[index], value, headers, partition)
