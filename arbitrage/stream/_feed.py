"""The live feed of one process: positions at store time, fan-out, and resume.

Ingest asks `reserve(n)` for the positions of a batch it is about to insert (they are
stored with the rows), and hands the stored rows to `publish` afterwards. Clients open a
`Resume` that says what they missed: positions the replay buffer lacks (older than it, or
gaps in it) are read from the warehouse (`stream_position > last_id`), the rest comes from
the buffer, then live.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from arbitrage.storage import TransactionFilter, Warehouse
from arbitrage.stream._events import POSITION_COLUMN, LiveBatch, StreamFilter, events_from_frame
from arbitrage.stream._handoff import HandOff
from arbitrage.stream._hub import Missing, StreamHub, Subscription
from arbitrage.stream._redis import RedisLink

_REPLAY_PAGE_ROWS = 5_000


@dataclass
class Resume:
    """A new subscription plus what the client missed before it."""

    subscription: Subscription
    backlog: list[LiveBatch | Missing]
    """In position order: buffered batches, and ranges to read from the warehouse (`stored_batches`)."""
    position: int
    """The feed's position when the subscription started: everything up to it is in the backlog."""


class LiveFeed:
    """What ingest and the stream endpoints talk to; Redis is optional."""

    def __init__(self, warehouse: Warehouse, hub: StreamHub, redis: RedisLink | None = None) -> None:
        self.warehouse = warehouse
        self.hub = hub
        self.redis = redis
        self._last_reserved = 0
        self._handoff = HandOff(hub.reorder_timeout / 2, self._gave_up)
        self._telling: set[asyncio.Task[bool]] = set()
        """Notices of given-up positions on their way to Redis."""
        if redis is not None:
            redis.floor = lambda: self.highest_position

    async def start(self) -> None:
        """Continue the sequence from the warehouse's highest stored position."""
        table = await self.warehouse.query_arrow(
            f"SELECT max({POSITION_COLUMN}) AS position FROM {self.warehouse.database}.transactions"
        )
        highest = int(table.column("position")[0].as_py() or 0)
        self._last_reserved = highest
        self.hub.start_at(highest)
        if self.redis is not None:
            await self.redis.start()

    @property
    def highest_position(self) -> int:
        """The highest position this process knows was handed out: its own, or through Redis any process's."""
        return max(self._last_reserved, self.hub.position)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.close()

    async def reserve(self, count: int) -> int:
        """The first of `count` consecutive new positions (ingest calls this under its writer lock)."""
        floor = self.highest_position
        last = await self.redis.reserve(count, floor) if self.redis is not None else None
        if last is None:
            last = floor + count
        self._last_reserved = last
        self._handoff.reserved(last - count + 1, last)
        return last - count + 1

    async def publish(self, stored: pl.DataFrame) -> None:
        """Fan out stored rows: through Redis to every process when it is up, else in-process.

        Batches render in parallel but are handed on in position order (`HandOff`): the hub
        moves past a missing position after `reorder_timeout`, and a stored batch that took
        longer to render than a later one reached no live client.
        """
        if POSITION_COLUMN not in stored.columns or stored.is_empty():
            return
        batch = LiveBatch.of_rows(stored)
        self._handoff.enter(batch.first, batch.last)
        try:
            in_process = self.redis is None or not self.redis.available
            if in_process:
                await self.hub.prepare(batch)
            waited = await self._handoff.wait_before(batch.first)
            if self.redis is not None and await self.redis.publish(batch):
                return  # every process's hub, this one's included, takes it from Redis
            if in_process and not waited:
                self.hub.accept(batch)
            else:  # Redis did not take it, or subscribers may have come meanwhile
                await self.hub.accept_rendered(batch)
        finally:
            self._handoff.handed_on(batch.first, batch.last)

    def abandon(self, first: int, last: int) -> None:
        """Reserved positions whose rows will not be stored (their insert failed): nothing waits for them."""
        self._handoff.handed_on(first, last)
        self._gave_up(first, last)

    def _gave_up(self, first: int, last: int) -> None:
        """Reserved positions never published (a failed insert): no hub need wait for them.

        Through Redis every process's hub is told, or each would wait its reorder timeout as for
        a gap it cannot explain.
        """
        self.hub.skip(first, last)
        if self.redis is not None and self.redis.available:
            telling = asyncio.create_task(self.redis.publish_skipped(first, last))
            self._telling.add(telling)
            telling.add_done_callback(self._telling.discard)

    async def resume(
        self,
        filters: StreamFilter,
        max_events: int,
        last_event_id: int | None,
        sse_fields: tuple[str, ...] | None = None,
    ) -> Resume:
        """Subscribe and take the backlog in one step (no await between them), so nothing falls between.

        A `last_event_id` ahead of this process (its hub lags another one behind the same Redis)
        is taken as seen when some process handed it out; one beyond every position handed out
        (an id from before a reset) is not, and the client gets the live feed whole.
        `sse_fields`: an SSE client's field selection, when it reads nothing else of an event.
        """
        seen_through = 0
        if last_event_id is not None and self.hub.position < last_event_id <= await self._handed_out():
            seen_through = last_event_id
        subscription = self.hub.subscribe(filters, max_events, sse_fields)
        subscription.seen_through = seen_through
        position = self.hub.position
        if last_event_id is None or last_event_id >= position:
            return Resume(subscription, [], position)
        return Resume(subscription, self.hub.replay(last_event_id), position)

    async def _handed_out(self) -> int:
        """The highest position handed out that this process can learn (Redis knows every process's)."""
        shared = await self.redis.handed_out() if self.redis is not None else None
        return max(shared or 0, self.highest_position)

    async def stored_batches(self, filters: StreamFilter, after: int, before: int) -> AsyncIterator[LiveBatch]:
        """Stored rows with after < position < before that match, in position order, a page at a time."""
        where, params = TransactionFilter(
            token=filters.token, dex=filters.dex, signer=filters.signer, min_profit_sol=filters.min_profit_sol
        ).where()
        sql = (
            f"SELECT * FROM {self.warehouse.database}.transactions WHERE {where} "
            f"AND {POSITION_COLUMN} > {{after:UInt64}} AND {POSITION_COLUMN} < {{before:UInt64}} "
            f"ORDER BY {POSITION_COLUMN} LIMIT {_REPLAY_PAGE_ROWS}"
        )
        while after + 1 < before:
            table: pa.Table = await self.warehouse.query_arrow(sql, {**params, "after": after, "before": before})
            if table.num_rows == 0:
                return
            frame = pl.from_arrow(table)
            assert isinstance(frame, pl.DataFrame)
            events = await asyncio.to_thread(events_from_frame, frame)
            yield LiveBatch(events)
            after = events[-1].position
