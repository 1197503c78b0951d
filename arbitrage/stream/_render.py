"""Stored rows → the API's transaction JSON, on whole batches.

Base columns stay top-level; `risk_score`, `risk_level` and `risk_*` components go
under `risk`; every other extra column (the feature registry's) goes under `features`.
Times are RFC 3339 UTC strings with milliseconds.
"""

from __future__ import annotations

import polars as pl

from arbitrage.model import STORED_SCHEMA

_TOP_LEVEL_EXTRAS = ("late", "stream_position")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.3fZ"


def render_transactions(frame: pl.DataFrame) -> list[bytes]:
    """One JSON object (bytes, no newline) per row, in the frame's order."""
    if frame.is_empty():
        return []
    base = [c for c in (*STORED_SCHEMA, *_TOP_LEVEL_EXTRAS) if c in frame.columns]
    risk = [c for c in frame.columns if c.startswith("risk_")]
    features = [c for c in frame.columns if c not in base and c not in risk]
    exprs: list[pl.Expr] = []
    for name in base:
        if isinstance(frame.schema[name], pl.Datetime):
            exprs.append(pl.col(name).dt.strftime(_TIME_FORMAT))
        else:
            exprs.append(pl.col(name))
    if features:
        exprs.append(pl.struct(features).alias("features"))
    if risk:
        renamed = [pl.col(c).alias(c.removeprefix("risk_")) for c in risk]
        exprs.append(pl.struct(renamed).alias("risk"))
    text = frame.select(exprs).write_ndjson()
    return [line.encode() for line in text.splitlines()]


def json_array(items: list[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"
