"""Response caches: Redis for the hot read endpoints (`/stats`, `/stats/daily`, the first page of
`/transactions`); process memory for rendered `/historical` pages (`HistoricalPages` over a
`RangeCache`)."""

from arbitrage.cache._historical import HistoricalPages
from arbitrage.cache._ranges import RangeCache
from arbitrage.cache._response import CACHED_PATHS, ResponseCache, response_cache

__all__ = ["CACHED_PATHS", "HistoricalPages", "RangeCache", "ResponseCache", "response_cache"]
