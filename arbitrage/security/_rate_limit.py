"""Token buckets per client (API key, token subject or IP): in memory, or in Redis.

A bucket holds up to `burst` requests and refills at `per_minute / 60` per second. The
Redis variant runs the same arithmetic in one Lua script (atomic, one round trip), so
several processes share a client's budget. When Redis cannot be reached (or does not answer
within a second) each process keeps its own buckets for a few seconds before asking Redis
again, and logs the failure at most once a minute: a rate limiter should turn a Redis outage
neither into an API outage nor into a second of latency on every request.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Protocol

log = logging.getLogger(__name__)

_MAX_BUCKETS = 100_000


class RateLimiter(Protocol):
    async def take(self, client: str) -> float:
        """Spend one request of `client`'s budget: 0 when allowed, else seconds to wait."""

    async def close(self) -> None:
        """Release connections."""


class MemoryRateLimiter:
    """Buckets in this process only."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(max(burst, 1))
        self._buckets: dict[str, tuple[float, float]] = {}

    async def take(self, client: str) -> float:
        now = time.monotonic()
        tokens, last = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            if len(self._buckets) >= _MAX_BUCKETS and client not in self._buckets:
                self._evict_full(now)
            self._buckets[client] = (tokens - 1.0, now)
            return 0.0
        self._buckets[client] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _evict_full(self, now: float) -> None:
        """Forget buckets that have refilled (they hold no state worth keeping), then, if still
        full, the least recently used half: never all of them, or a flood of new clients
        would hand every throttled client (the flooder's own key included) a full budget."""
        refill = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill}
        if len(self._buckets) >= _MAX_BUCKETS:
            newest = sorted(self._buckets.items(), key=lambda item: item[1][1])[_MAX_BUCKETS // 2 :]
            self._buckets = dict(newest)

    async def close(self) -> None:
        self._buckets.clear()


_TAKE_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local last = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisRateLimiter:
    """Buckets shared by every process that uses the same Redis."""

    def __init__(
        self, url: str, per_minute: int, burst: int, *, prefix: str = "arbitrage:ratelimit:", retry_s: float = 5.0
    ) -> None:
        import redis.asyncio as redis

        self.rate = per_minute / 60.0
        self.burst = max(burst, 1)
        self._client: Any = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._script = self._client.register_script(_TAKE_SCRIPT)
        self._prefix = prefix
        self._own = MemoryRateLimiter(per_minute, burst)
        """This process's buckets while Redis is away."""
        self._retry_s = retry_s
        self._redis_again_at = -math.inf
        self._last_warning = -math.inf

    async def take(self, client: str) -> float:
        if time.monotonic() < self._redis_again_at:
            return await self._own.take(client)
        try:
            wait = await self._script(keys=[self._prefix + client], args=[self.rate, self.burst])
        except Exception as exc:
            now = time.monotonic()
            self._redis_again_at = now + self._retry_s
            if now - self._last_warning > 60:
                self._last_warning = now
                log.warning(
                    "Redis is unreachable (%s): rate limits are this process's own until it answers",
                    type(exc).__name__,
                )
            return await self._own.take(client)
        return float(wait)

    async def close(self) -> None:
        await self._own.close()
        await self._client.aclose()
