"""Live fan-out of stored transactions and their JSON rendering.

Public face:
- `LiveFeed`: positions at store time (`reserve`), fan-out (`publish`), resume (`resume`,
  `stored_batches`); built by `open_live_feed(settings, warehouse)`.
- `StreamHub`/`Subscription`: the in-process fan-out with bounded per-client queues;
  `Missing`: a range a resuming client reads from the warehouse.
- `RedisLink`: the process's Redis connection (shared sequence, pub/sub), when configured.
- `RecentTransactions`: the in-memory ring of the newest stored rows.
- `render_transactions` (one JSON object per row), `render_json_array`, `render_ndjson` (whole bodies);
  `json_rows` (any frame's rows as JSON objects, unshaped).
"""

from arbitrage.stream._events import POSITION_COLUMN, Fields, LiveBatch, LiveEvent, StreamFilter, project
from arbitrage.stream._feed import LiveFeed, Resume
from arbitrage.stream._hub import Idle, Missing, StreamHub, Subscription
from arbitrage.stream._recent import RecentTransactions
from arbitrage.stream._redis import RedisLink
from arbitrage.stream._render import (
    FIELD_NAMES,
    json_array,
    json_rows,
    render_json_array,
    render_ndjson,
    render_transactions,
    top_level_key,
)

__all__ = [
    "FIELD_NAMES",
    "POSITION_COLUMN",
    "Fields",
    "Idle",
    "LiveBatch",
    "LiveEvent",
    "LiveFeed",
    "Missing",
    "RecentTransactions",
    "RedisLink",
    "Resume",
    "StreamFilter",
    "StreamHub",
    "Subscription",
    "json_array",
    "json_rows",
    "project",
    "render_json_array",
    "render_ndjson",
    "render_transactions",
    "top_level_key",
]
