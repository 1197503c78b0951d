"""Live transactions: `GET /sse/stream` (Server-Sent Events) and `WS /ws/transactions`.

Both serve the same feed with the same filters. A client that reconnects with the last
position it saw (SSE `Last-Event-ID`, WebSocket `last_event_id`) first receives what it
missed, then live events, with no gap and no duplicate. A client whose queue overflows is
dropped (the SSE stream ends, the WebSocket closes with 1013) and may resume."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, WebSocket, get, websocket
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect
from litestar.params import Parameter
from litestar.response import Stream

from arbitrage.errors import ValidationError
from arbitrage.security import requires
from arbitrage.services import Services
from arbitrage.stream import Fields, LiveBatch, LiveFeed, Resume, StreamFilter, project

Token = Annotated[str | None, Parameter(min_length=32, max_length=44, description="Mint anywhere in the route.")]
Dex = Annotated[str | None, Parameter(min_length=1, max_length=64, description="DEX of any leg.")]
Signer = Annotated[str | None, Parameter(min_length=32, max_length=44, description="Signer public key.")]
MinProfit = Annotated[float | None, Parameter(description="Minimum net profit, SOL.")]
FieldList = Annotated[
    str | None,
    Parameter(
        max_length=2000, description="Comma-separated top-level fields to send (default: the whole transaction)."
    ),
]

SLOW_CONSUMER_CLOSE = 1013
"""WebSocket close code for a client dropped because it fell behind ("try again later")."""


def _feed(services: Services) -> LiveFeed:
    assert services.feed is not None, "the live feed is not running"
    return services.feed


def parse_fields(fields: str | list[str] | None) -> Fields:
    """`fields` as a tuple of names, or None for everything."""
    if fields is None:
        return None
    names = fields.split(",") if isinstance(fields, str) else fields
    cleaned = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not cleaned or not all(name.isidentifier() for name in cleaned):
        raise ValidationError("fields", "a comma-separated list of field names")
    return cleaned


def _last_id(value: str | None, field: str) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise ValidationError(field, "a stream position (the `id` of an event)")
    return int(value)


class StreamController(Controller):
    tags = ["stream"]
    guards = [requires("read")]

    @get(
        "/sse/stream",
        description="Server-Sent Events (`event: transaction`, `id`: stream position) of newly stored "
        "transactions. Reconnect with `Last-Event-ID` (or `last_event_id=`) to receive what you missed. "
        "Comment lines: `: keep-alive` when idle, `: published <unix seconds>` before each batch.",
        media_type="text/event-stream",
    )
    async def sse(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        token: Token = None,
        dex: Dex = None,
        signer: Signer = None,
        min_profit_sol: MinProfit = None,
        fields: FieldList = None,
        last_event_id: Annotated[str | None, Parameter(max_length=20, description="Resume after this id.")] = None,
    ) -> Stream:
        feed = _feed(services)
        filters = StreamFilter(token=token, dex=dex, signer=signer, min_profit_sol=min_profit_sol)
        selected = parse_fields(fields)
        resume_after = _last_id(request.headers.get("last-event-id"), "Last-Event-ID")
        if resume_after is None:
            resume_after = _last_id(last_event_id, "last_event_id")
        settings = services.settings.stream
        body = _sse_body(
            feed, filters, selected, resume_after, settings.client_queue_events, settings.keepalive_seconds
        )
        return Stream(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @websocket("/ws/transactions")
    async def transactions_socket(self, socket: WebSocket[Any, Any, Any], services: NamedDependency[Services]) -> None:
        """Send `{"op": "subscribe", "filters": {...}, "fields": [...], "last_event_id": n}` to start."""
        await socket.accept()
        session = _SocketSession(socket, _feed(services), services.settings.stream.client_queue_events)
        try:
            await session.serve()
        finally:
            await session.stop()


async def _sse_body(
    feed: LiveFeed, filters: StreamFilter, fields: Fields, after: int | None, max_events: int, keepalive: float
) -> AsyncIterator[bytes]:
    # The subscription is taken here, when the body starts streaming, and released when it ends.
    resume = feed.resume(filters, max_events, after, sse_fields=fields)
    try:
        yield b": connected position=%d\nretry: 1000\n\n" % resume.position
        async for chunk in _backlog(feed, filters, resume, lambda b, s: b.sse_chunk(fields, s)):
            yield chunk
        while True:
            try:
                async with asyncio.timeout(keepalive):
                    items = await resume.subscription.next()
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if items is None:
                yield b": dropped: this client fell behind; reconnect with Last-Event-ID to resume\n\n"
                return
            yield b"".join([batch.sse_chunk(fields, selected) for batch, selected in items])
    finally:
        feed.hub.unsubscribe(resume.subscription)


async def _backlog(feed: LiveFeed, filters: StreamFilter, resume: Resume, encode: Any) -> AsyncIterator[Any]:
    """What the client missed: stored rows older than the buffer, then the buffer, encoded."""
    if resume.stored_after is not None:
        async for batch in feed.stored_batches(filters, resume.stored_after, resume.stored_before):
            yield encode(batch, None)
    for batch in resume.buffered:
        await batch.ready()
        selected = batch.select(filters)
        if selected is None or selected:
            yield encode(batch, selected)


class _Subscribe(msgspec.Struct, forbid_unknown_fields=True):
    op: Literal["subscribe", "unsubscribe", "ping"]
    filters: StreamFilter = msgspec.field(default_factory=StreamFilter)
    fields: list[str] | None = None
    last_event_id: int | None = None


def _ws_message(batch: LiveBatch, fields: Fields, selected: list[int] | None) -> bytes:
    events = batch.events if selected is None else [batch.events[i] for i in selected]
    items = b",".join([b'{"id":%d,"transaction":%s}' % (e.position, project(e.payload, fields)) for e in events])
    return b'{"type":"transactions","published_at":%.6f,"items":[%s]}' % (batch.published_at, items)


class _SocketSession:
    """One WebSocket: reads control messages, and pumps the current subscription out."""

    def __init__(self, socket: WebSocket[Any, Any, Any], feed: LiveFeed, max_events: int) -> None:
        self.socket = socket
        self.feed = feed
        self.max_events = max_events
        self._pump: asyncio.Task[None] | None = None
        self._dropped = asyncio.Event()

    async def serve(self) -> None:
        """Read control messages until the client leaves or the feed drops it.

        Granian holds a close frame back while a receive is pending, so the reader is
        cancelled before a dropped client is closed.
        """
        reader = asyncio.create_task(self._read())
        dropped = asyncio.create_task(self._dropped.wait())
        try:
            await asyncio.wait([reader, dropped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, dropped):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                    await task
        if self._dropped.is_set():
            await self.socket.close(SLOW_CONSUMER_CLOSE, "slow consumer: too many undelivered events")

    async def _read(self) -> None:
        while True:
            try:
                text = await self.socket.receive_data("text")
            except WebSocketDisconnect:
                return
            try:
                message = msgspec.json.decode(text, type=_Subscribe)
                fields = parse_fields(message.fields)
            except (msgspec.ValidationError, msgspec.DecodeError, ValidationError) as exc:
                await self._send({"type": "error", "detail": str(exc)})
                continue
            if message.op == "ping":
                await self._send({"type": "pong", "position": self.feed.hub.position})
            elif message.op == "unsubscribe":
                await self.stop()
                await self._send({"type": "unsubscribed"})
            else:
                await self.stop()
                resume = self.feed.resume(message.filters, self.max_events, message.last_event_id)
                await self._send({"type": "subscribed", "position": resume.position, "filters": message.filters})
                self._pump = asyncio.create_task(self._send_feed(resume, message.filters, fields))

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                await self._pump
            self._pump = None

    async def _send(self, message: object) -> None:
        await self.socket.send_data(msgspec.json.encode(message).decode())

    async def _send_feed(self, resume: Resume, filters: StreamFilter, fields: Fields) -> None:
        try:
            async for message in _backlog(self.feed, filters, resume, lambda b, s: _ws_message(b, fields, s)):
                await self.socket.send_data(message.decode())
            while True:
                items = await resume.subscription.next()
                if items is None:
                    self._dropped.set()
                    return
                for batch, selected in items:
                    await self.socket.send_data(_ws_message(batch, fields, selected).decode())
        finally:
            self.feed.hub.unsubscribe(resume.subscription)
