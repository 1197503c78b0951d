"""The process's fan-out: orders batches by stream position and hands them to subscribers.

Every batch reaches the hub once (from this process's ingest, or from Redis when several
processes share one feed). The hub delivers in position order: a batch that arrives ahead
of a missing position waits up to `reorder_timeout` for it (another process may still be
inserting it), then is delivered past the gap. Delivered batches stay in a bounded replay
buffer for clients that reconnect with `Last-Event-ID`. Each subscriber has a bounded
queue; one that falls behind is dropped instead of slowing the others or growing memory.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import deque
from dataclasses import dataclass

from arbitrage.stream._events import LiveBatch, Renders, StreamFilter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Missing:
    """Positions `after` < p < `before` that the replay buffer does not hold."""

    after: int
    before: int


Queued = tuple[LiveBatch, list[int] | None]


class Idle:
    """What `Subscription.next_or_idle` returns when a wait lasted its `idle` seconds (an SSE keep-alive is due)."""


IDLE = Idle()


class Subscription:
    """One client's view of the feed: its filter and a bounded queue of matching batches.

    The queue is a deque and one waiter: with hundreds of clients woken several times a
    second, `asyncio.Queue` and a timeout armed around every wait cost the event loop more
    than the sends. The idle timer is armed once per `idle` seconds, not once per wait.
    """

    def __init__(self, filters: StreamFilter, max_events: int, sse_fields: tuple[str, ...] | None = None) -> None:
        self.filters = filters
        self.max_events = max_events
        self.sse_fields = sse_fields
        """Set for an SSE client that reads only these fields: it needs no whole-event render."""
        self.dropped = False
        self.queued_events = 0
        self.seen_through = 0
        """Positions up to this the client already has: a Last-Event-ID ahead of this process's hub
        (another process behind the same Redis delivered them first) must not come again."""
        self._queued: deque[Queued] = deque()
        self._waiter: asyncio.Future[bool] | None = None
        """Resolved True when batches arrive or the client is dropped, False when the wait went idle."""
        self._waiting_since = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    def offer(self, batch: LiveBatch) -> bool:
        """Queue the batch's matching events; False (and dropped) when the bound would be exceeded.

        An empty queue takes any one batch, so a batch larger than the bound drops nobody.
        """
        if batch.last <= self.seen_through:
            return True
        if batch.first <= self.seen_through:
            batch = batch.after(self.seen_through)
        selected = batch.select(self.filters)
        count = len(batch) if selected is None else len(selected)
        if count == 0:
            return True
        if self.queued_events and self.queued_events + count > self.max_events:
            self.drop()
            return False
        self.queued_events += count
        self._queued.append((batch, selected))
        self._wake(True)
        return True

    def drop(self) -> None:
        """Discard what is queued and wake the reader, which then gets None."""
        if self.dropped:
            return
        self.dropped = True
        self._queued.clear()
        self.queued_events = 0
        self._wake(True)

    async def next(self) -> list[Queued] | None:
        """Everything queued (waiting for at least one batch); None once dropped."""
        items = await self.next_or_idle(None)
        assert not isinstance(items, Idle)
        return items

    async def next_or_idle(self, idle: float | None) -> list[Queued] | Idle | None:
        """As `next`, or `IDLE` once a wait has lasted `idle` seconds."""
        while not self._queued and not self.dropped:
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            self._waiting_since = loop.time()
            if idle is not None and self._idle_timer is None:
                self._idle_timer = loop.call_at(self._waiting_since + idle, self._check_idle, idle)
            try:
                if not await self._waiter:
                    return IDLE
            finally:
                self._waiter = None
        if self.dropped:
            return None
        items = list(self._queued)
        self._queued.clear()
        self.queued_events = 0
        return items

    def close(self) -> None:
        """Stop the idle timer (the client is gone)."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _wake(self, arrived: bool) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(arrived)

    def _check_idle(self, idle: float) -> None:
        """The timer of the oldest wait: end the current wait if it has lasted `idle`, else re-arm for it."""
        self._idle_timer = None
        if self._waiter is None or self._waiter.done():
            return  # not waiting now: the next wait arms a timer of its own
        loop = asyncio.get_running_loop()
        due = self._waiting_since + idle
        if loop.time() >= due:
            self._wake(False)
        else:
            self._idle_timer = loop.call_at(due, self._check_idle, idle)


class StreamHub:
    """Orders, buffers and fans out stored batches within one process."""

    def __init__(self, *, replay_events: int = 10_000, reorder_timeout: float = 2.0) -> None:
        self.replay_events = replay_events
        self.reorder_timeout = reorder_timeout
        self._subscribers: set[Subscription] = set()
        self._replay: deque[LiveBatch] = deque()
        self._replay_count = 0
        self._next: int | None = None
        self._last_delivered = 0
        self._held: list[tuple[int, int, LiveBatch]] = []
        self._skipped: list[tuple[int, int]] = []
        """Position ranges that will never come, ahead of the next expected one (a few at most)."""
        self._order = itertools.count()
        self._release: asyncio.TimerHandle | None = None

    @property
    def position(self) -> int:
        """The highest position delivered so far (0 before any)."""
        return self._last_delivered

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def start_at(self, position: int) -> None:
        """Expect `position + 1` next (the warehouse's highest position at start-up)."""
        self._last_delivered = max(self._last_delivered, position)
        self._next = self._last_delivered + 1

    def resync(self) -> None:
        """Forget which position comes next (after re-subscribing to Redis): the next batch sets it."""
        self._next = None

    def subscribe(
        self, filters: StreamFilter, max_events: int, sse_fields: tuple[str, ...] | None = None
    ) -> Subscription:
        subscription = Subscription(filters, max_events, sse_fields)
        self._subscribers.add(subscription)
        return subscription

    def renders(self) -> Renders:
        """What the current subscribers will read of a batch, so it can be rendered off the loop."""
        renders = Renders()
        for subscription in self._subscribers:
            if subscription.sse_fields is None or not subscription.filters.is_empty:
                renders.events = True
            else:
                renders.sse_fields.add(subscription.sse_fields)
        return renders

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)
        subscription.close()

    def accept(self, batch: LiveBatch) -> None:
        """Take a batch from ingest or Redis (call on the event loop); deliver what is in order."""
        self._take(batch)
        self._drain_held()

    async def accept_rendered(self, batch: LiveBatch) -> None:
        """`accept`, once what the current subscribers read of the batch is rendered off the loop."""
        await self.prepare(batch)
        self.accept(batch)

    async def prepare(self, batch: LiveBatch) -> None:
        """Render off the loop what the current subscribers read of the batch (nothing without any)."""
        if self._subscribers:
            await batch.prepare(self.renders())

    def _take(self, batch: LiveBatch) -> None:
        if not len(batch) or batch.last <= self._last_delivered:
            return
        if batch.first <= self._last_delivered:
            batch = batch.after(self._last_delivered)
        if self._next is None:
            if self._last_delivered and batch.first > self._last_delivered + 1:
                _log_gap(self._last_delivered + 1, batch.first - 1, "while the Redis subscription was down")
            self._next = batch.first
        if batch.first > self._next:
            heapq.heappush(self._held, (batch.first, next(self._order), batch))
            if self._release is None:
                self._release = asyncio.get_running_loop().call_later(self.reorder_timeout, self._release_held)
            return
        self._deliver(batch)

    def skip(self, first: int, last: int) -> None:
        """Positions `first`..`last` will never come (a failed insert, of this process or another): stop
        waiting for them, now or once the positions before them have come."""
        if self._next is None or last < self._next:
            return
        self._skipped.append((first, last))
        self._drain_held()

    def replay(self, after: int) -> list[LiveBatch | Missing]:
        """What was delivered after `after`, in position order: buffered batches (trimmed to > `after`),
        and the ranges the buffer lacks, which the caller reads from the warehouse.

        Those are the positions older than the buffer, and the gaps inside it: positions that came
        only after the hub moved past them, or while the Redis subscription was down, may be stored
        all the same (by another process, in a shared warehouse). Positions never stored (a failed
        insert) cost a query that finds nothing.
        """
        pieces: list[LiveBatch | Missing] = []
        expected = after + 1
        for batch in self._replay:
            if batch.last <= after:
                continue
            if batch.first <= after:
                batch = batch.after(after)
            if batch.first > expected:
                pieces.append(Missing(expected - 1, batch.first))
            pieces.append(batch)
            expected = batch.last + 1
        if expected <= self._last_delivered:
            pieces.append(Missing(expected - 1, self._last_delivered + 1))
        return pieces

    def _deliver(self, batch: LiveBatch) -> None:
        self._last_delivered = batch.last
        self._next = batch.last + 1
        self._replay.append(batch)
        self._replay_count += len(batch)
        while self._replay_count - len(self._replay[0]) >= self.replay_events:
            self._replay_count -= len(self._replay.popleft())
        for subscription in list(self._subscribers):
            if not subscription.offer(batch):
                self._subscribers.discard(subscription)

    def _drain_held(self) -> None:
        while self._next is not None:
            if self._held and self._held[0][0] <= self._next:
                _, _, batch = heapq.heappop(self._held)
                self._take(batch)
            elif skipped := next(((f, last) for f, last in self._skipped if f <= self._next <= last), None):
                self._next = skipped[1] + 1
            else:
                break
        if self._next is not None:
            self._skipped = [(f, last) for f, last in self._skipped if last >= self._next]
        if not self._held and self._release is not None:
            self._release.cancel()
            self._release = None

    def _release_held(self) -> None:
        """The gap did not fill in time (a failed insert, a crashed process): move past it."""
        self._release = None
        if self._held:
            if self._next is not None:
                _log_gap(self._next, self._held[0][0] - 1, f"within {self.reorder_timeout:g} s")
            self._next = self._held[0][0]
            self._drain_held()
        if self._held and self._release is None:
            self._release = asyncio.get_running_loop().call_later(self.reorder_timeout, self._release_held)


def _log_gap(first: int, last: int, when: str) -> None:
    """Live clients do not get these positions (resuming ones read them from the warehouse, once stored)."""
    log.warning("live feed: positions %d-%d did not arrive %s; moving past them", first, last, when)
