"""Cache whole GET responses of hot read endpoints in Redis, shared by every process.

Entries live `redis.cache_ttl_seconds` and are all dropped whenever ingest stores a batch,
so a reader never sees data older than the last store. The key covers the path, the query
and the caller's credentials (hashed), so a cached answer is only ever served to a request
that would get the same answer. Without Redis, or while it is unreachable, requests pass
straight through: the cache can make reads faster, never make them fail.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, ClassVar

import msgspec
import polars as pl
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send
from redis.exceptions import RedisError

from arbitrage.stream import RedisLink

log = logging.getLogger(__name__)

CACHED_PATHS = frozenset({"/stats", "/stats/daily", "/transactions"})
"""`/transactions` only without `cursor` (its first pages)."""

_MAX_BODY = 4 * 1024 * 1024
_CREDENTIAL_HEADERS = (b"authorization", b"x-api-key", b"cookie")

_INVALIDATE = """
local keys = redis.call('SMEMBERS', KEYS[1])
for i = 1, #keys, 1000 do
  redis.call('DEL', unpack(keys, i, math.min(i + 999, #keys)))
end
redis.call('DEL', KEYS[1])
return #keys
"""


class _Entry(msgspec.Struct, array_like=True):
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class ResponseCache:
    """Reads and writes entries through the process's Redis link."""

    EXTRAS_KEY: ClassVar[str] = "redis_response_cache"
    """Where the app keeps it in `Services.extras` (found there by the middleware and the admin flush)."""

    def __init__(self, link: RedisLink, ttl_seconds: float) -> None:
        self.link = link
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        self.index_key = f"{link.key_prefix}:cache:keys"
        self._invalidate = link.client.register_script(_INVALIDATE)

    def key(self, scope: HTTPScope) -> str | None:
        if scope["method"] != "GET" or scope["path"] not in CACHED_PATHS:
            return None
        query: bytes = scope.get("query_string", b"")
        if scope["path"] == "/transactions" and b"cursor=" in query:
            return None
        digest = hashlib.sha256(scope["path"].encode() + b"?" + query)
        for name, value in scope["headers"]:
            if name in _CREDENTIAL_HEADERS:
                digest.update(b"\0" + name + b"=" + value)
        return f"{self.link.key_prefix}:cache:{digest.hexdigest()}"

    async def get(self, key: str) -> _Entry | None:
        if not self.link.available:
            return None
        try:
            raw = await self.link.client.get(key)
        except (RedisError, OSError):
            return None
        return msgspec.msgpack.decode(raw, type=_Entry) if isinstance(raw, bytes) else None

    async def put(self, key: str, entry: _Entry) -> None:
        if not self.link.available:
            return
        try:
            async with self.link.client.pipeline(transaction=False) as pipe:
                pipe.set(key, msgspec.msgpack.encode(entry), px=self.ttl_ms)
                pipe.sadd(self.index_key, key)
                pipe.pexpire(self.index_key, self.ttl_ms * 2)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.debug("response cache write failed: %s", exc)

    async def flush_cache(self) -> None:
        """Drop every entry (`POST /admin/cache/flush`)."""
        await self.invalidate()

    async def invalidate(self, _stored: pl.DataFrame | None = None) -> None:
        """Drop every entry (ingest calls this after each stored batch)."""
        if not self.link.available:
            return
        try:
            await self._invalidate(keys=[self.index_key])
        except (RedisError, OSError) as exc:
            log.debug("response cache invalidation failed: %s", exc)


def response_cache(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: serve cached answers of the hot read endpoints when Redis holds them."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        cache = _cache_of(scope)
        key = cache.key(scope) if cache is not None and scope["type"] == ScopeType.HTTP else None  # type: ignore[arg-type]
        if cache is None or key is None:
            await app(scope, receive, send)
            return
        entry = await cache.get(key)
        if entry is not None:
            await send(
                {
                    "type": "http.response.start",
                    "status": entry.status,
                    "headers": [*entry.headers, (b"x-cache", b"hit")],
                }
            )
            await send({"type": "http.response.body", "body": entry.body, "more_body": False})
            return
        started: dict[str, Any] = {}
        body: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.update(message)
                message = {**message, "headers": [*message.get("headers", []), (b"x-cache", b"miss")]}
            elif message["type"] == "http.response.body" and started.get("status") == 200:
                body.append(message.get("body", b""))
            await send(message)

        await app(scope, receive, capture)
        payload = b"".join(body)
        if started.get("status") == 200 and len(payload) <= _MAX_BODY:
            headers = [(bytes(k), bytes(v)) for k, v in started.get("headers", [])]
            await cache.put(key, _Entry(200, headers, payload))

    return middleware


def _cache_of(scope: Scope) -> ResponseCache | None:
    services = scope["app"].state.get("services")
    cache = getattr(services, "extras", {}).get(ResponseCache.EXTRAS_KEY) if services is not None else None
    return cache if isinstance(cache, ResponseCache) else None
