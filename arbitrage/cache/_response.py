"""Cache whole GET responses of hot read endpoints in Redis, shared by every process.

An entry is served only to a request the route's guards admitted (credential, role, rate
limit): the middleware names the entry, the guards run, then `serve_cached` (the app's
`before_request` hook) looks it up. The key covers the warehouse the answer came from
(processes on one ClickHouse server share entries, embedded warehouses never do), the path,
the query and the caller's credentials (hashed), so an answer is only ever served to a
request that would get the same answer.

Entries live `redis.cache_ttl_seconds` and are all dropped whenever ingest stores a batch,
which also bumps a generation counter in Redis; a miss notes the generation before the
handler reads and its answer is kept only if the generation is unchanged, so a read that
overlapped an ingest (in any process) leaves no older data behind. Without Redis, or while
it is unreachable, requests pass straight through: the cache can make reads faster, never
make them fail.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import msgspec
import polars as pl
from litestar import Request, Response
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send
from redis.exceptions import RedisError

from arbitrage.config import StorageSettings
from arbitrage.stream import RedisLink

log = logging.getLogger(__name__)

CACHED_PATHS = frozenset({"/stats", "/stats/daily", "/transactions"})
"""`/transactions` only without `cursor` (its first pages)."""

_MAX_BODY = 4 * 1024 * 1024
_CREDENTIAL_HEADERS = (b"authorization", b"x-api-key", b"cookie")
_STATE_KEY = "response_cache"
"""Where the middleware leaves a request's `_Lookup` in the ASGI scope's state."""

_INVALIDATE = """
redis.call('INCR', KEYS[2])
local keys = redis.call('SMEMBERS', KEYS[1])
for i = 1, #keys, 1000 do
  redis.call('DEL', unpack(keys, i, math.min(i + 999, #keys)))
end
redis.call('DEL', KEYS[1])
return #keys
"""

_PUT = """
if (redis.call('GET', KEYS[3]) or '0') ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""


class _Entry(msgspec.Struct, array_like=True):
    status: int
    headers: dict[str, str]
    body: bytes


def _entry_of(raw: object) -> _Entry | None:
    """A stored entry, or None (a miss) for bytes of another shape: another version of this app
    sharing the Redis during a rolling upgrade, or a foreign key under our prefix."""
    if not isinstance(raw, bytes):
        return None
    try:
        return msgspec.msgpack.decode(raw, type=_Entry)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class ResponseCache:
    """Reads and writes entries through the process's Redis link.

    Args:
        link: the process's Redis connection.
        ttl_seconds: lifetime of an entry.
        warehouse: `warehouse_identity` of the warehouse this process answers from.
    """

    EXTRAS_KEY: ClassVar[str] = "redis_response_cache"
    """Where the app keeps it in `Services.extras` (found there by the middleware and the admin flush)."""

    def __init__(self, link: RedisLink, ttl_seconds: float, *, warehouse: str) -> None:
        self.link = link
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        self.index_key = f"{link.key_prefix}:cache:keys"
        self.generation_key = f"{link.key_prefix}:cache:generation"
        self._warehouse = warehouse.encode()
        self._invalidate = link.client.register_script(_INVALIDATE)
        self._put = link.client.register_script(_PUT)
        # Batches stored while Redis was away dropped no entry: every entry may be stale by then.
        link.on_subscribe(self._drop_all)

    def key(self, scope: HTTPScope) -> str | None:
        if scope["method"] != "GET" or scope["path"] not in CACHED_PATHS:
            return None
        query: bytes = scope.get("query_string", b"")
        if scope["path"] == "/transactions" and b"cursor=" in query:
            return None
        digest = hashlib.sha256(self._warehouse + b"\0" + scope["path"].encode() + b"?" + query)
        for name, value in scope["headers"]:
            if name in _CREDENTIAL_HEADERS:
                digest.update(b"\0" + name + b"=" + value)
        return f"{self.link.key_prefix}:cache:{digest.hexdigest()}"

    async def get(self, key: str) -> tuple[_Entry | None, int | None]:
        """The entry (or None) and the generation it was read in (None while Redis cannot answer)."""
        if not self.link.available:
            return None, None
        try:
            raw, generation = await self.link.client.mget([key, self.generation_key])
        except (RedisError, OSError):
            return None, None
        return _entry_of(raw), int(generation or 0)

    async def generation(self) -> int | None:
        """The shared generation now (None while Redis cannot answer), for answers kept in process memory."""
        if not self.link.available:
            return None
        try:
            return int(await self.link.client.get(self.generation_key) or 0)
        except (RedisError, OSError):
            return None

    async def put(self, key: str, entry: _Entry, generation: int) -> None:
        """Keep `entry` unless entries were dropped since `generation` was read (it may predate a store)."""
        if not self.link.available:
            return
        try:
            await self._put(
                keys=[key, self.index_key, self.generation_key],
                args=[msgspec.msgpack.encode(entry), str(generation), self.ttl_ms, self.ttl_ms * 2],
            )
        except (RedisError, OSError) as exc:
            log.debug("response cache write failed: %s", exc)

    async def flush_cache(self) -> None:
        """Drop every entry (`POST /admin/cache/flush`)."""
        await self.invalidate()

    async def invalidate(self, _stored: pl.DataFrame | None = None) -> None:
        """Drop every entry, and keep none read before (ingest calls this after each stored batch).

        One that fails takes the link down, so that the subscription, made again, drops them
        (`_drop_all`) before any entry is read: a stall that let this call time out would
        otherwise leave the entries read before the batch to be served once Redis answers.
        """
        if not self.link.available:
            return
        try:
            await self._drop_all()
        except (RedisError, OSError) as exc:
            self.link.lost(exc)

    async def _drop_all(self) -> None:
        await self._invalidate(keys=[self.index_key, self.generation_key])


def warehouse_identity(storage: StorageSettings) -> str:
    """Which warehouse answers come from, without secrets: a ClickHouse server's address and
    database (every process on it shares entries), or an embedded data dir on this host."""
    if storage.backend == "clickhouse":
        url = urlsplit(storage.url)
        return f"clickhouse://{url.hostname}:{url.port}{url.path}#{storage.database}"
    return f"embedded://{socket.gethostname()}{Path(storage.data_dir).resolve()}"


class _Lookup:
    """A cacheable request's entry: named by the middleware, looked up by `serve_cached`."""

    __slots__ = ("cache", "found", "generation", "key")

    def __init__(self, cache: ResponseCache, key: str) -> None:
        self.cache = cache
        self.key = key
        self.found: bool | None = None
        """None until looked up (the guards refused the request, or the route has its own hook)."""
        self.generation: int | None = None


def response_cache(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: name the entry of a hot read and keep the answer a miss produced."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        cache = _cache_of(scope)
        key = cache.key(scope) if cache is not None and scope["type"] == ScopeType.HTTP else None  # type: ignore[arg-type]
        if cache is None or key is None:
            await app(scope, receive, send)
            return
        lookup = _Lookup(cache, key)
        scope.setdefault("state", {})[_STATE_KEY] = lookup  # type: ignore[typeddict-item]
        started: dict[str, Any] = {}
        body: list[bytes] = []

        async def capture(message: Message) -> None:
            if lookup.found is False:
                if message["type"] == "http.response.start":
                    started.update(message)
                    message = {**message, "headers": [*message.get("headers", []), (b"x-cache", b"miss")]}
                elif message["type"] == "http.response.body" and started.get("status") == 200:
                    body.append(message.get("body", b""))
            await send(message)

        await app(scope, receive, capture)
        payload = b"".join(body)
        if lookup.generation is not None and started.get("status") == 200 and len(payload) <= _MAX_BODY:
            headers = {bytes(k).decode("latin-1"): bytes(v).decode("latin-1") for k, v in started.get("headers", [])}
            await cache.put(key, _Entry(200, headers, payload), lookup.generation)

    return middleware


async def serve_cached(request: Request[Any, Any, Any]) -> Response[bytes] | None:
    """`before_request` hook, so after the route's guards: the cached answer of an admitted request."""
    lookup = _lookup_of(request)
    if lookup is None:
        return None
    entry, lookup.generation = await lookup.cache.get(lookup.key)
    lookup.found = entry is not None
    if entry is None:
        return None
    return Response(entry.body, status_code=entry.status, headers={**entry.headers, "x-cache": "hit"})


def shared_generation(request: Request[Any, Any, Any]) -> int | None:
    """The Redis generation a miss was read in: in-process answers computed in another are stale
    (another process stored a batch), so they are kept under it. None without the Redis cache."""
    lookup = _lookup_of(request)
    return lookup.generation if lookup is not None else None


def _lookup_of(request: Request[Any, Any, Any]) -> _Lookup | None:
    lookup = request.scope.get("state", {}).get(_STATE_KEY)
    return lookup if isinstance(lookup, _Lookup) else None


def _cache_of(scope: Scope) -> ResponseCache | None:
    services = scope["app"].state.get("services")
    cache = getattr(services, "extras", {}).get(ResponseCache.EXTRAS_KEY) if services is not None else None
    return cache if isinstance(cache, ResponseCache) else None
