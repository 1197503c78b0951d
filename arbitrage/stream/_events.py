"""Stream events, their filters, and the batches the fan-out hands to subscribers.

An event carries the few fields the stream filters on next to its rendered JSON, so a
subscriber's filter is a handful of comparisons, never a JSON parse. A `LiveBatch` caches
its encodings (SSE frames per field selection, the whole SSE chunk), so subscribers that
ask for the same thing share one encoding: per-client cost is a queue put.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
import polars as pl

from arbitrage.stream._render import render_transactions, top_level_key

POSITION_COLUMN = "stream_position"
"""The stored column that holds each transaction's stream position."""


class LiveEvent(msgspec.Struct, frozen=True, array_like=True):
    """One stored transaction as a stream event; positions grow with store order."""

    position: int
    signature: str
    block_time: datetime
    payload: bytes
    signer: str = ""
    route: tuple[str, ...] = ()
    dexes: tuple[str, ...] = ()
    net_profit_sol: float | None = None


class StreamFilter(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """What a subscriber wants; None means "any". Same meaning as the `/transactions` filters."""

    token: str | None = None
    dex: str | None = None
    signer: str | None = None
    min_profit_sol: float | None = None

    @property
    def is_empty(self) -> bool:
        return self.token is None and self.dex is None and self.signer is None and self.min_profit_sol is None

    def matches(self, event: LiveEvent) -> bool:
        if self.signer is not None and event.signer != self.signer:
            return False
        if self.token is not None and self.token not in event.route:
            return False
        if self.dex is not None and self.dex not in event.dexes:
            return False
        return self.min_profit_sol is None or (
            event.net_profit_sol is not None and event.net_profit_sol >= self.min_profit_sol
        )


def _columns_for(columns: list[str], fields: tuple[str, ...]) -> list[str]:
    """The stored columns that render to the top-level keys `fields` (unknown names are left out)."""
    chosen = [c for name in fields for c in columns if top_level_key(c) == name]
    return list(dict.fromkeys(chosen))


def events_from_frame(stored: pl.DataFrame) -> list[LiveEvent]:
    """Events of stored rows (which carry `stream_position`), in position order."""
    if stored.is_empty():
        return []
    ordered = stored.sort(POSITION_COLUMN)
    payloads = render_transactions(ordered)
    profits = ordered["net_profit_sol"].to_list()
    return [
        LiveEvent(position, signature, block_time, payload, signer, tuple(route), tuple(dexes), profit)
        for position, signature, block_time, payload, signer, route, dexes, profit in zip(
            ordered[POSITION_COLUMN].to_list(),
            ordered["signature"].to_list(),
            ordered["block_time"].to_list(),
            payloads,
            ordered["signer"].to_list(),
            ordered["route"].to_list(),
            ordered["dexes"].to_list(),
            profits,
            strict=True,
        )
    ]


Fields = tuple[str, ...] | None
"""Top-level keys a subscriber asked for (`fields=`), or None for the whole transaction."""


def project(payload: bytes, fields: Fields) -> bytes:
    """The payload with only `fields` (unknown names are left out)."""
    if fields is None:
        return payload
    whole = msgspec.json.decode(payload)
    return msgspec.json.encode({name: whole[name] for name in fields if name in whole})


@dataclass
class Renders:
    """What a batch's subscribers read: whole events, and the field selections of SSE clients."""

    events: bool = False
    sse_fields: set[tuple[str, ...]] = field(default_factory=set)


class LiveBatch:
    """Events stored together (contiguous positions), with encodings cached per field selection.

    A batch built from stored rows (`of_rows`) renders its events only when first needed:
    with nobody subscribed, ingest pays for no JSON at all. `ready()` renders off the event
    loop; `events` renders in place as a fallback.
    """

    __slots__ = ("_chunks", "_events", "_frames", "_rows", "first", "last", "published_at")

    def __init__(self, events: list[LiveEvent], published_at: float | None = None) -> None:
        self._events: list[LiveEvent] | None = events
        self._rows: pl.DataFrame | None = None
        self.first = events[0].position if events else 0
        self.last = events[-1].position if events else 0
        self.published_at = time.time() if published_at is None else published_at
        """Wall-clock time the origin process published the batch (after the insert returned)."""
        self._frames: dict[Fields, list[bytes]] = {}
        self._chunks: dict[Fields, bytes] = {}

    @classmethod
    def of_rows(cls, stored: pl.DataFrame, published_at: float | None = None) -> LiveBatch:
        """A batch of stored rows (which carry `stream_position`), rendered on demand."""
        positions = stored[POSITION_COLUMN]
        if not positions.is_sorted():
            stored = stored.sort(POSITION_COLUMN)
            positions = stored[POSITION_COLUMN]
        batch = cls([], published_at)
        batch._events = None
        batch._rows = stored
        if len(stored):
            batch.first, batch.last = int(positions[0]), int(positions[-1])
        return batch

    def __len__(self) -> int:
        if self._events is not None:
            return len(self._events)
        assert self._rows is not None
        return len(self._rows)

    @property
    def rows(self) -> pl.DataFrame | None:
        """The stored rows in position order; None for a batch made of events (a warehouse replay)."""
        return self._rows

    @property
    def events(self) -> list[LiveEvent]:
        if self._events is None:
            self._render()
        assert self._events is not None
        return self._events

    async def ready(self) -> LiveBatch:
        """Render the events in a worker thread unless that is done already."""
        await self.prepare(Renders(events=True))
        return self

    async def prepare(self, renders: Renders) -> None:
        """Render what subscribers will read in a worker thread, before the batch is shared.

        Whole events only when someone needs them (a filter, whole transactions, WebSocket);
        SSE clients that ask for `fields` get frames rendered from the rows' columns alone.
        """
        if renders.sse_fields or (renders.events and self._events is None):
            await asyncio.to_thread(self._prepare, renders)

    def _prepare(self, renders: Renders) -> None:
        if renders.events:
            self._render()
        for fields in renders.sse_fields:
            self.sse_chunk(fields)

    def _render(self) -> None:
        rows = self._rows
        if self._events is None and rows is not None:
            self._events = events_from_frame(rows)

    def after(self, position: int) -> LiveBatch:
        """The events with positions > `position` (the whole batch when all are)."""
        if self.first > position:
            return self
        rows = self._rows
        if self._events is None and rows is not None:
            return LiveBatch.of_rows(rows.filter(pl.col(POSITION_COLUMN) > position), self.published_at)
        return LiveBatch([e for e in self.events if e.position > position], self.published_at)

    def sse_frames(self, fields: Fields) -> list[bytes]:
        """One `id/event/data` SSE frame per event."""
        frames = self._frames.get(fields)
        if frames is None:
            frames = [
                b"id: %d\nevent: transaction\ndata: %s\n\n" % (position, payload)
                for position, payload in zip(self._positions(), self._payloads(fields), strict=True)
            ]
            self._frames[fields] = frames
        return frames

    def _positions(self) -> list[int]:
        if self._events is not None:
            return [e.position for e in self._events]
        assert self._rows is not None
        positions: list[int] = self._rows[POSITION_COLUMN].to_list()  # sorted by `of_rows`
        return positions

    def _payloads(self, fields: Fields) -> list[bytes]:
        """Each event's JSON with only `fields`: rendered from the rows when the batch has them."""
        if fields is None:
            return [e.payload for e in self.events]
        if self._rows is not None:
            columns = _columns_for(self._rows.columns, fields)
            if not columns:
                return [b"{}"] * len(self._rows)
            return render_transactions(self._rows.select(columns))
        return [project(e.payload, fields) for e in self.events]

    def sse_chunk(self, fields: Fields, selected: list[int] | None = None) -> bytes:
        """The SSE bytes of the selected events (all when None), after a `published` comment.

        The comment line (`: published <unix seconds>`) is ignored by SSE clients; it lets a
        client measure delivery latency without a clock in the payload.
        """
        if selected is None:
            chunk = self._chunks.get(fields)
            if chunk is None:
                chunk = self._comment() + b"".join(self.sse_frames(fields))
                self._chunks[fields] = chunk
            return chunk
        frames = self.sse_frames(fields)
        return self._comment() + b"".join([frames[i] for i in selected])

    def _comment(self) -> bytes:
        return b": published %.6f\n" % self.published_at

    def select(self, filters: StreamFilter) -> list[int] | None:
        """Indices of matching events; None means all of them (no filter)."""
        if filters.is_empty:
            return None
        return [i for i, event in enumerate(self.events) if filters.matches(event)]
