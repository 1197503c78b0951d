"""Stored rows → the API's transaction JSON, on whole batches.

Base columns stay top-level; `risk_score`, `risk_level` and `risk_*` components go
under `risk`; every other extra column (the feature registry's) goes under `features`.
Times are RFC 3339 UTC strings with milliseconds.

Every function here writes through polars' JSON serializer, so a row's bytes are the same
whichever of them produced it: a JSON array body is `json_array(render_transactions(f))`
byte for byte, and an NDJSON body is those rows each followed by a newline.
"""

from __future__ import annotations

import io

import polars as pl

from arbitrage.model import STORED_SCHEMA, TIME_TEXT_FORMAT

_TOP_LEVEL_EXTRAS = ("late", "stream_position")
_TOP_LEVEL = frozenset({*STORED_SCHEMA, *_TOP_LEVEL_EXTRAS})
FIELD_NAMES = frozenset({*_TOP_LEVEL, "risk", "features"})
"""The top-level keys of a rendered transaction: what a subscriber's `fields` may name."""


def top_level_key(column: str) -> str:
    """The top-level key of a rendered transaction that a stored column goes under."""
    if column.startswith("risk_"):
        return "risk"
    return column if column in _TOP_LEVEL else "features"


def render_transactions(frame: pl.DataFrame) -> list[bytes]:
    """One JSON object (bytes, no newline) per row, in the frame's order.

    Each row is encoded on its own by one expression: a third less CPU than writing NDJSON
    (polars' streaming sink) and splitting it, the same bytes.
    """
    if frame.is_empty():
        return []
    return json_rows(_shaped(frame))


def json_rows(frame: pl.DataFrame) -> list[bytes]:
    """Each row of `frame` as a JSON object of its columns, as they are (no API shaping)."""
    encoded = frame.select(pl.struct(pl.all()).struct.json_encode()).to_series()
    rows: list[bytes] = encoded.cast(pl.Binary).to_list()
    return rows


def render_ndjson(frame: pl.DataFrame) -> bytes:
    """The rows as NDJSON: each object followed by a newline (empty for no rows)."""
    if frame.is_empty():
        return b""
    out = io.BytesIO()
    _shaped(frame).write_ndjson(out)
    return out.getvalue()


def render_json_array(frame: pl.DataFrame) -> bytes:
    """The rows as one JSON array (`[]` for no rows)."""
    if frame.is_empty():
        return b"[]"
    out = io.BytesIO()
    _shaped(frame).write_json(out)
    return out.getvalue()


def json_array(items: list[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def _shaped(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame with the API's columns: times as text, features and risk as nested objects."""
    base = [c for c in (*STORED_SCHEMA, *_TOP_LEVEL_EXTRAS) if c in frame.columns]
    risk = [c for c in frame.columns if top_level_key(c) == "risk"]
    features = [c for c in frame.columns if top_level_key(c) == "features"]
    exprs: list[pl.Expr] = []
    for name in base:
        if isinstance(frame.schema[name], pl.Datetime):
            exprs.append(pl.col(name).dt.strftime(TIME_TEXT_FORMAT))
        else:
            exprs.append(pl.col(name))
    if features:
        exprs.append(pl.struct(features).alias("features"))
    if risk:
        renamed = [pl.col(c).alias(c.removeprefix("risk_")) for c in risk]
        exprs.append(pl.struct(renamed).alias("risk"))
    return frame.select(exprs)
