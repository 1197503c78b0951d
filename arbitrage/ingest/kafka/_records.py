"""What the consumer produces: derived records of stored rows and dead letters of bad messages."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
from confluent_kafka import Message

from arbitrage.stream import render_transactions

Headers = list[tuple[str, str | bytes | None]]

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
    """One record to produce: key, value, headers."""

    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=list)


def opportunities(stored: pl.DataFrame) -> list[OutRecord]:
    """Profitable stored transactions, rendered as the API renders them, keyed by signature."""
    profitable = stored.filter(pl.col("net_profit_sol") > 0)
    rendered = render_transactions(profitable)
    return [OutRecord(s.encode(), v) for s, v in zip(profitable["signature"], rendered, strict=True)]


def risk_metrics(stored: pl.DataFrame) -> list[OutRecord]:
    """Risk columns (or the derived economics until risk exists) of each stored transaction."""
    if stored.is_empty():
        return []
    risk = [c for c in stored.columns if c.startswith("risk_")]
    columns = ["signature", "block_time", *(risk or [c for c in _RISK_FALLBACK if c in stored.columns])]
    frame = stored.select(columns).with_columns(pl.col("block_time").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
    lines = frame.write_ndjson().encode().splitlines()
    return [OutRecord(s.encode(), line) for s, line in zip(frame["signature"], lines, strict=True)]


def dead_letter(message: Message, field_name: str, reason: str) -> OutRecord:
    """The original bytes and headers, plus why and where the message was rejected."""
    original = message.headers() or []
    headers: Headers = list(original.items()) if isinstance(original, dict) else list(original)
    headers += [
        ("dlq.reason", reason.encode()),
        ("dlq.field", field_name.encode()),
        ("dlq.topic", (message.topic() or "").encode()),
        ("dlq.partition", str(message.partition()).encode()),
        ("dlq.offset", str(message.offset()).encode()),
    ]
    return OutRecord(message.key(), message.value() or b"", headers)
