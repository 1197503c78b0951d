"""Response caches: Redis for the hot read endpoints (`/stats`, `/stats/daily`, the first page of
`/transactions`); process memory for the aggregates (`ShortCache`) and rendered `/historical`
pages (`HistoricalPages` over a `RangeCache`)."""

from arbitrage.cache._historical import HistoricalPages
from arbitrage.cache._memo import ShortCache
from arbitrage.cache._ranges import RangeCache
from arbitrage.cache._response import (
    CACHED_PATHS,
    ResponseCache,
    response_cache,
    serve_cached,
    shared_generation,
    warehouse_identity,
)

__all__ = [
    "CACHED_PATHS",
    "HistoricalPages",
    "RangeCache",
    "ResponseCache",
    "ShortCache",
    "response_cache",
    "serve_cached",
    "shared_generation",
    "warehouse_identity",
]
