"""Live transactions: `GET /sse/stream` (Server-Sent Events) and `WS /ws/transactions`.

Both serve the same feed with the same filters. A client that reconnects with the last
position it saw (SSE `Last-Event-ID`, WebSocket `last_event_id`) first receives what it
missed, then live events, with no gap and no duplicate. A client whose queue overflows is
dropped (the SSE stream ends, the WebSocket closes with 1013) and may resume.

Filters take exactly the values `/transactions` takes (its parameter types, and their bounds
for the JSON of a WebSocket subscription)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, WebSocket, get, websocket
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect
from litestar.params import Parameter
from litestar.response import Stream

from arbitrage.api._errors import error_responses
from arbitrage.api.transactions import FILTER_TYPES, Dex, MinProfit, Signer, Token
from arbitrage.errors import ValidationError, WarehouseUnavailable
from arbitrage.security import CredentialWatch, requires
from arbitrage.services import Services
from arbitrage.stream import (
    FIELD_NAMES,
    Fields,
    Idle,
    LiveBatch,
    LiveFeed,
    Missing,
    Resume,
    StreamFilter,
    Subscription,
    project,
)

log = logging.getLogger(__name__)

FieldList = Annotated[
    str | None,
    Parameter(
        max_length=2000, description="Comma-separated top-level fields to send (default: the whole transaction)."
    ),
]
LastEventId = Annotated[
    str | None, Parameter(max_length=20, description="Resume after this stream position (decimal, at most 2^64-1).")
]

SLOW_CONSUMER_CLOSE = 1013
"""WebSocket close code for a client dropped because it fell behind ("try again later")."""
FEED_FAILED_CLOSE = 1011
"""WebSocket close code for a client whose feed failed (an internal error); it may subscribe again to resume."""
REVOKED_CLOSE = 1008
"""WebSocket close code (policy violation) when the credential the socket was opened with was revoked or expired."""
_REVOKED = "the credential was revoked or has expired"
MAX_POSITION = 2**64 - 1
"""Stream positions are UInt64."""
MAX_CONTROL_MESSAGE = 16 * 1024
"""Characters of a WebSocket control message at most; the largest valid one (every field, every filter) is under 1,000.
Checked before decoding: a 64 MiB message of field names would otherwise cost gigabytes and come back as the error."""


def _feed(services: Services) -> LiveFeed:
    assert services.feed is not None, "the live feed is not running"
    return services.feed


def parse_fields(fields: str | list[str] | None) -> Fields:
    """`fields` as a tuple of names, or None for everything."""
    if fields is None:
        return None
    names = fields.split(",") if isinstance(fields, str) else fields
    cleaned = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not cleaned:
        raise ValidationError("fields", "a comma-separated list of field names")
    unknown = [name for name in cleaned if name not in FIELD_NAMES]
    if unknown:
        raise ValidationError("fields", f"not top-level keys of a transaction: {', '.join(unknown)}")
    return cleaned


def _position(value: str | int | None, field: str) -> int | None:
    """A resume position (the `id` of an event) as an int, or its ASCII decimal digits; None for none.

    `str.isdigit` also takes digits `int` refuses ("²"); 20 digits hold any UInt64 and keep
    `int` below its 4300-digit limit.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit() and len(value) <= 20):
            raise ValidationError(field, "a stream position (the `id` of an event): decimal digits")
        value = int(value)
    if not 0 <= value <= MAX_POSITION:
        raise ValidationError(field, "a stream position (the `id` of an event): 0 to 2^64-1")
    return value


_Filters = msgspec.defstruct(
    "Filters",
    [(name, kind, None) for name, kind in FILTER_TYPES.items()],
    kw_only=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
)
"""A subscribe message's `filters`, held to the bounds of the `/transactions` query."""


class StreamController(Controller):
    tags = ["stream"]
    guards = [requires("read")]

    @get(
        "/sse/stream",
        description="Server-Sent Events (`event: transaction`, `id`: stream position) of newly stored "
        "transactions. Reconnect with `Last-Event-ID` (or `last_event_id=`) to receive what you missed. "
        "Comment lines: `: keep-alive` when idle, `: published <unix seconds>` before each batch.",
        media_type="text/event-stream",
        responses=error_responses(400),
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
        last_event_id: LastEventId = None,
    ) -> Stream:
        feed = _feed(services)
        filters = StreamFilter(token=token, dex=dex, signer=signer, min_profit_sol=min_profit_sol)
        selected = parse_fields(fields)
        resume_after = _position(request.headers.get("last-event-id"), "Last-Event-ID")
        if resume_after is None:
            resume_after = _position(last_event_id, "last_event_id")
        settings = services.settings.stream
        body = _sse_body(
            feed,
            filters,
            selected,
            resume_after,
            settings.client_queue_events,
            settings.keepalive_seconds,
            CredentialWatch(request, "read"),
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
        session = _SocketSession(
            socket, _feed(services), services.settings.stream.client_queue_events, CredentialWatch(socket, "read")
        )
        try:
            await session.serve()
        finally:
            await session.stop()


async def _sse_body(
    feed: LiveFeed,
    filters: StreamFilter,
    fields: Fields,
    after: int | None,
    max_events: int,
    keepalive: float,
    watch: CredentialWatch,
) -> AsyncIterator[bytes]:
    # The subscription is taken here, when the body starts streaming, and released when it ends.
    resume = await feed.resume(filters, max_events, after, sse_fields=fields)
    try:
        yield b": connected position=%d\nretry: 1000\n\n" % resume.position
        try:
            async for chunk in _backlog(feed, filters, resume, lambda b, s: b.sse_chunk(fields, s)):
                yield chunk
        except WarehouseUnavailable as exc:
            # The client reconnects with its Last-Event-ID (retry: 1 s) and gets the rest then.
            log.warning("an SSE client's missed events could not be read (%s); it was told to reconnect", exc)
            yield b": error: the missed events cannot be read now; reconnect with Last-Event-ID to resume\n\n"
            return
        while True:
            items = await resume.subscription.next_or_idle(keepalive)
            if not watch.holds():
                yield b": closed: %s\n\n" % _REVOKED.encode()
                return
            if isinstance(items, Idle):
                yield b": keep-alive\n\n"
                continue
            if items is None:
                yield b": dropped: this client fell behind; reconnect with Last-Event-ID to resume\n\n"
                return
            for batch, selected in items:
                # One send per batch: a batch's chunk is shared by every client that reads all of
                # it, and joining a lagging client's batches copied them all once more.
                yield batch.sse_chunk(fields, selected)
    finally:
        feed.hub.unsubscribe(resume.subscription)


async def _backlog(feed: LiveFeed, filters: StreamFilter, resume: Resume, encode: Any) -> AsyncIterator[Any]:
    """What the client missed, encoded in position order: buffered batches, and stored rows the buffer lacks."""
    for piece in resume.backlog:
        if isinstance(piece, Missing):
            async for batch in feed.stored_batches(filters, piece.after, piece.before):
                yield encode(batch, None)
            continue
        await piece.ready()
        selected = piece.select(filters)
        if selected is None or selected:
            yield encode(piece, selected)


class _Subscribe(msgspec.Struct, forbid_unknown_fields=True):
    op: Literal["subscribe", "unsubscribe", "ping"]
    filters: _Filters = msgspec.field(default_factory=_Filters)  # type: ignore[valid-type]
    fields: list[str] | None = None
    last_event_id: int | None = None


_SUBSCRIBE = msgspec.json.Decoder(_Subscribe)


def _ws_message(batch: LiveBatch, fields: Fields, selected: list[int] | None) -> bytes:
    events = batch.events if selected is None else [batch.events[i] for i in selected]
    items = b",".join([b'{"id":%d,"transaction":%s}' % (e.position, project(e.payload, fields)) for e in events])
    return b'{"type":"transactions","published_at":%.6f,"items":[%s]}' % (batch.published_at, items)


class _SocketSession:
    """One WebSocket: reads control messages, and pumps the current subscription out."""

    def __init__(
        self, socket: WebSocket[Any, Any, Any], feed: LiveFeed, max_events: int, watch: CredentialWatch
    ) -> None:
        self.socket = socket
        self.feed = feed
        self.max_events = max_events
        self.watch = watch
        self._pump: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None
        """The current subscription, released by `stop` even when its pump was cancelled before it ran."""
        self._ended = asyncio.Event()
        self._close_frame: tuple[int, str] | None = None
        """Code and reason to close the client with, set when its feed ends the session (`_ended`)."""

    async def serve(self) -> None:
        """Read control messages until the client leaves or its feed ends (dropped, or failed).

        Granian holds a close frame back while a receive is pending, so the reader is
        cancelled before the client is closed.
        """
        reader = asyncio.create_task(self._read())
        ended = asyncio.create_task(self._ended.wait())
        try:
            await asyncio.wait([reader, ended], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, ended):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                    await task
        if self._close_frame is not None:
            await self.socket.close(*self._close_frame)

    def _end(self, code: int, reason: str) -> None:
        self._close_frame = (code, reason)
        self._ended.set()

    async def _read(self) -> None:
        while True:
            try:
                event = await self.socket.receive()
            except WebSocketDisconnect:
                return
            if event["type"] == "websocket.disconnect":
                return
            text = event.get("text")
            try:
                if not isinstance(text, str):
                    # A binary frame: read as text it is "", and the answer was "Input data was truncated".
                    raise ValidationError("message", "control messages are JSON in text frames, not binary ones")
                if len(text) > MAX_CONTROL_MESSAGE:
                    raise ValidationError("message", f"a control message is at most {MAX_CONTROL_MESSAGE} characters")
                message = _SUBSCRIBE.decode(text)
                filters = StreamFilter(**msgspec.structs.asdict(message.filters))
                fields = parse_fields(message.fields)
                after = _position(message.last_event_id, "last_event_id")
            except (msgspec.ValidationError, msgspec.DecodeError, ValidationError) as exc:
                await self._send({"type": "error", "detail": str(exc)})
                continue
            if not self.watch.holds():
                self._end(REVOKED_CLOSE, _REVOKED)
                return
            if message.op == "ping":
                await self._send({"type": "pong", "position": self.feed.hub.position})
            elif message.op == "unsubscribe":
                await self.stop()
                await self._send({"type": "unsubscribed"})
            else:
                await self.stop()
                resume = await self.feed.resume(filters, self.max_events, after)
                self._subscription = resume.subscription
                await self._send({"type": "subscribed", "position": resume.position, "filters": filters})
                self._pump = asyncio.create_task(self._send_feed(resume, filters, fields))

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                await self._pump
            self._pump = None
        if self._subscription is not None:
            self.feed.hub.unsubscribe(self._subscription)
            self._subscription = None

    async def _send(self, message: object) -> None:
        await self.socket.send_data(msgspec.json.encode(message).decode())

    async def _send_feed(self, resume: Resume, filters: StreamFilter, fields: Fields) -> None:
        """Backlog, then live events. A failure ends the session with 1011 and is logged: raised, it would reach nobody."""
        try:
            async for message in _backlog(self.feed, filters, resume, lambda b, s: _ws_message(b, fields, s)):
                await self.socket.send_data(message.decode())
            while True:
                items = await resume.subscription.next()
                if not self.watch.holds():
                    self._end(REVOKED_CLOSE, _REVOKED)
                    return
                if items is None:
                    self._end(SLOW_CONSUMER_CLOSE, "slow consumer: too many undelivered events")
                    return
                for batch, selected in items:
                    await self.socket.send_data(_ws_message(batch, fields, selected).decode())
        except WebSocketDisconnect:
            raise  # the client left: not a failure, and the reader sees it too
        except Exception:
            log.exception("the live feed of a WebSocket client failed")
            self._end(FEED_FAILED_CLOSE, "the feed failed; subscribe again with last_event_id to resume")
        finally:
            self.feed.hub.unsubscribe(resume.subscription)
