"""Redis for the live feed: one shared position sequence and one pub/sub channel.

One client per process for commands and one subscription per process: a published batch
comes back to every process's hub (this one included) and is fanned out in memory, so
there is no Redis traffic per client. Batches travel as stored rows (`_wire`); each process
renders what its own subscribers read, and its own batches come back as the rows it holds.
While Redis is unreachable (a command failed or timed out, or the subscription broke) the link
reports itself down, the feed falls back to in-process positions and delivery, and a background
loop subscribes again, and takes the positions handed out meanwhile into account, when Redis returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from arbitrage.stream._events import LiveBatch
from arbitrage.stream._hub import StreamHub
from arbitrage.stream._wire import (
    WIRE_IN_FLIGHT_BYTES,
    WireBatch,
    WireError,
    decode_wire,
    encode_skipped,
    encode_wire,
)

log = logging.getLogger(__name__)

_COMMAND_TIMEOUT_S = 1.0
_RETRY_S = 0.25
_LISTEN_POLL_S = 1.0
"""How soon the subscription notices that a command found Redis gone, when no message comes."""
_READ_BACK_TIMEOUT_S = 30.0
"""How long a publisher waits for its own subscription to read its earlier messages."""

# Positions only grow: a process passes the highest position it knows, so a Redis that
# restarted empty continues above everything already handed out instead of from zero.
_RESERVE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[2])
if current < floor then current = floor end
current = current + tonumber(ARGV[1])
redis.call('SET', KEYS[1], current)
return current
"""


class RedisLink:
    """This process's connection to Redis, shared by the live feed and the response cache."""

    def __init__(self, url: str, hub: StreamHub, *, key_prefix: str = "arbitrage") -> None:
        self.url = url
        self.hub = hub
        self.key_prefix = key_prefix
        self.channel = f"{key_prefix}:stream"
        self.sequence_key = f"{key_prefix}:stream:position"
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=_COMMAND_TIMEOUT_S, socket_connect_timeout=_COMMAND_TIMEOUT_S
        )
        # RESP2 for the subscription: redis-py 8.1's RESP3 parser renders every pub/sub message
        # with `str()` for a debug line whatever the log level (redis/redis-py#4230), ≈ 5 ms per
        # 1 MiB piece, more than everything else the live feed costs ingest.
        self._listener_client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            protocol=2,
            socket_connect_timeout=_COMMAND_TIMEOUT_S,
            socket_keepalive=True,
            health_check_interval=5,
        )
        self._reserve = self.client.register_script(_RESERVE)
        self.floor: Callable[[], int] = lambda: hub.position
        """The highest position this process knows; pushed into the sequence on every (re)connect."""
        self._subscribed = asyncio.Event()
        self._on_subscribe: list[Callable[[], Awaitable[object]]] = []
        self._last_error = ""
        """Why Redis was last found gone (for /health and the log), empty while it answers."""
        self._task: asyncio.Task[None] | None = None
        self._unread: deque[tuple[LiveBatch, int]] = deque()
        """The rows and size of each message this process published that its own subscription has
        not read back yet, oldest first."""
        self._unread_bytes = 0
        self._read_back = asyncio.Event()

    @property
    def available(self) -> bool:
        """Subscribed right now; while False, nothing is sent to Redis."""
        return self._subscribed.is_set()

    def on_subscribe(self, step: Callable[[], Awaitable[object]]) -> None:
        """Run `step` on each (re)subscription before the link counts as available again; a
        Redis error in it counts as Redis gone. What this process did while Redis was away
        (stored batches whose cache invalidation it skipped) is put right there."""
        self._on_subscribe.append(step)

    def lost(self, exc: BaseException) -> None:
        """A command found Redis gone: nothing more is sent until the subscription is made again."""
        reason = str(exc) or type(exc).__name__
        if self._subscribed.is_set() or reason != self._last_error:
            log.warning("redis not available (%s); live feed continues in-process", reason)
        self._last_error = reason
        self._subscribed.clear()
        self._forget_unread()

    async def start(self, wait: float = 2.0) -> None:
        """Start the subscription loop; wait a little for it so the first batches go through Redis."""
        self._task = asyncio.create_task(self._listen(), name="redis-stream-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), wait)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.aclose()
        await self._listener_client.aclose()

    async def publish(self, batch: LiveBatch) -> bool:
        """Send a batch to every process's hub, in bounded pieces; False when Redis did not take it.

        Each piece waits until this process's own subscription has read all but
        `WIRE_IN_FLIGHT_BYTES` of the earlier ones: Redis cuts a subscriber whose unread output
        passes its buffer limit, and one 10k-row batch renders to several times that limit.
        Pieces Redis took before it failed reach the hubs anyway; the caller then delivers the
        whole batch in-process, and the hub skips the positions it already has.
        """
        if not self.available:
            return False
        try:
            for message in await asyncio.to_thread(encode_wire, batch):
                if not await self._room_for(len(message.data)):
                    return False
                self._unread.append((message.piece, len(message.data)))
                self._unread_bytes += len(message.data)
                if not await self.client.publish(self.channel, message.data):
                    # Not even this process's subscription got it: Redis dropped it (a full output
                    # buffer) and the listener has not noticed yet. Delivered in-process instead.
                    log.warning("redis live feed: a batch reached no subscriber; delivering it in-process")
                    self._forget_unread()
                    return False
        except (RedisError, OSError) as exc:
            self.lost(exc)
            return False
        return True

    async def publish_skipped(self, first: int, last: int) -> bool:
        """Tell every process's hub that positions `first`..`last` will never come, so none waits for them."""
        if not self.available:
            return False
        try:
            return bool(await self.client.publish(self.channel, encode_skipped(first, last)))
        except (RedisError, OSError) as exc:
            self.lost(exc)
            return False

    async def _room_for(self, size: int) -> bool:
        """Wait until `size` more bytes fit ahead of the subscription; False when it went away or stalled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _READ_BACK_TIMEOUT_S
        while self._unread and self._unread_bytes + size > WIRE_IN_FLIGHT_BYTES:
            if not self.available:
                return False
            read_back = self._read_back
            try:
                await asyncio.wait_for(read_back.wait(), max(deadline - loop.time(), 0))
            except TimeoutError:
                log.warning(
                    "redis live feed: this process's subscription read nothing back for %g s; "
                    "delivering the rest of the batch in-process",
                    _READ_BACK_TIMEOUT_S,
                )
                return False
        return self.available

    def _own(self, wire: WireBatch) -> LiveBatch | None:
        """This process's rows if the message is its oldest unread one, else None.

        Redis delivers one publisher's messages to a subscriber in the order sent, and positions
        are unique across processes, so another process's message never matches.
        """
        if self._unread and self._unread[0][0].first == wire.first:
            return self._unread[0][0]
        return None

    def _heard(self, piece: LiveBatch) -> None:
        """The subscription read back this process's message of `piece` (unless forgotten meanwhile)."""
        if self._unread and self._unread[0][0] is piece:
            self._unread_bytes -= self._unread.popleft()[1]
            self._wake_publishers()

    def _forget_unread(self) -> None:
        """Nothing published so far will be read back (the subscription was cut or missed it)."""
        self._unread.clear()
        self._unread_bytes = 0
        self._wake_publishers()

    def _wake_publishers(self) -> None:
        self._read_back.set()
        self._read_back = asyncio.Event()

    async def reserve(self, count: int, floor: int) -> int | None:
        """The last of `count` new positions above `floor` and every position handed out; None when down."""
        if not self.available:
            return None
        try:
            return int(await self._reserve(keys=[self.sequence_key], args=[count, floor]))
        except (RedisError, OSError) as exc:
            self.lost(exc)
            return None

    async def handed_out(self) -> int | None:
        """The highest position any process reserved so far; None when Redis does not answer."""
        if not self.available:
            return None
        try:
            value = await self.client.get(self.sequence_key)
        except (RedisError, OSError) as exc:
            self.lost(exc)
            return None
        return int(value or 0)

    async def health(self) -> dict[str, Any]:
        """For /health: healthy with the ping latency, or raise (the service then reports degraded)."""
        if not self.available:
            raise ConnectionError(
                f"redis is not available ({self._last_error or 'not connected yet'}); serving from memory"
            )
        started = time.perf_counter()
        await self.client.ping()
        return {
            "status": "healthy",
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            "stream_subscribers": self.hub.subscribers,
        }

    async def _listen(self) -> None:
        while True:
            pubsub = self._listener_client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                # Positions handed out in-process while Redis was away must not be handed out again.
                await self._reserve(keys=[self.sequence_key], args=[0, self.floor()])
                self.hub.resync()
                for step in self._on_subscribe:
                    await step()
                if not self._subscribed.is_set():
                    log.info("redis live feed subscribed on %s", self.channel)
                self._last_error = ""
                self._subscribed.set()
                # Until a command of this process finds Redis gone (`lost`), which a stall can do
                # without breaking this connection: then subscribe again, as after an outage.
                while self._subscribed.is_set():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=_LISTEN_POLL_S)
                    if message is None or message["type"] != "message":
                        continue
                    try:
                        await self._receive(decode_wire(message["data"]))
                    except WireError as exc:
                        log.warning("redis live feed: skipped a message on %s: %s", self.channel, exc)
            except (RedisError, OSError) as exc:
                self.lost(exc)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(_RETRY_S)

    async def _receive(self, wire: WireBatch) -> None:
        if wire.skipped is not None:
            self.hub.skip(*wire.skipped)
            return
        own = self._own(wire)
        if own is None:
            await self.hub.accept_rendered(await asyncio.to_thread(wire.batch))
        else:
            await self.hub.accept_rendered(own)
            self._heard(own)
