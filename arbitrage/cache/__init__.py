"""A Redis response cache for the hot read endpoints (`/stats`, `/stats/daily`, the first page of `/transactions`)."""

from arbitrage.cache._response import CACHED_PATHS, ResponseCache, response_cache

__all__ = ["CACHED_PATHS", "ResponseCache", "response_cache"]
