"""Partitions read in step: messages are handed over in message-time order across partitions.

Read from a backlog, librdkafka delivers long runs of one partition before the next: in a
2M-record replay over ten partitions (`benchmarks/ingest_kafka.py`) a 50k-message batch
spanned a median 18.6 hours of block time where the feed put 1.3, so 68% of the rows reached
the feature engine after rows of higher slots (flagged `late`, their windows computed over
later data), and each batch's duplicate check read hours of stored rows. So the fetch
thread holds each partition's messages and hands over only those stamped at or before the
*watermark*: the latest timestamp every partition still expected to deliver has reached. A
partition is not expected when it is at its end (librdkafka's partition EOF), paused by an
operator, or has sent nothing for `idle_s` (a stalled partition must not stop the others;
on a busy box a backlogged partition can be silent for over a second between fetches).
Live, partitions sit at their end between messages, and messages pass at once.

Message timestamps stand for block time: a collector producing as it observes stamps each
transaction moments after its block. A partition whose stamps go back is taken at its
running maximum, so its messages keep their order.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from arbitrage.ingest.kafka._fetched import Fetched


@dataclass
class _Partition:
    held: Fetched
    stamps: list[int] = field(default_factory=list)
    """The running maximum of the held messages' timestamps (never decreasing)."""
    frontier: int | None = None
    """The highest timestamp received so far; None before the first message."""
    at_end: bool = False
    heard_at: float = 0.0


class PartitionAligner:
    """Holds fetched messages per partition and releases them in timestamp order across partitions."""

    def __init__(self, topic: str, *, idle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.topic = topic
        self.idle_s = idle_s
        self._clock = clock
        self._partitions: dict[int, _Partition] = {}

    def __len__(self) -> int:
        return sum(len(p.held) for p in self._partitions.values())

    def held(self, partition: int) -> int:
        state = self._partitions.get(partition)
        return 0 if state is None else len(state.held)

    def expect(self, partitions: Iterable[int]) -> None:
        """Partitions (re)starting, newly assigned or sought: what was held of them is dropped, and each
        holds the others back until it delivers, ends or idles."""
        now = self._clock()
        for partition in partitions:
            self._partitions[partition] = _Partition(Fetched(self.topic), heard_at=now)

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop what is held of `partitions` (revoked, lost, or sought elsewhere): it is fetched again."""
        for partition in partitions:
            self._partitions.pop(partition, None)

    def add(self, fetched: Fetched) -> None:
        """Hold newly fetched messages (of expected partitions; others' are dropped)."""
        now = self._clock()
        for partition, part in fetched.by_partition().items():
            state = self._partitions.get(partition)
            if state is None:
                continue
            start = part.timestamps[0] if state.frontier is None else max(state.frontier, part.timestamps[0])
            stamps = list(itertools.accumulate(part.timestamps, max, initial=start))[1:]
            state.held.extend(part)
            state.stamps.extend(stamps)
            state.frontier = stamps[-1]
            state.at_end = False
            state.heard_at = now

    def reached_end(self, partition: int) -> None:
        state = self._partitions.get(partition)
        if state is not None:
            state.at_end = True
            state.heard_at = self._clock()

    def over(self, limit: int) -> set[int]:
        """Partitions holding `limit` messages or more: pause them, so memory stays bounded."""
        return {partition for partition, state in self._partitions.items() if len(state.held) >= limit}

    def release(self, *, excluded: AbstractSet[int], paused: AbstractSet[int]) -> Fetched:
        """The held messages stamped at or before the watermark, partition by partition, in offset order.

        `excluded` partitions (an operator paused them) hold nothing back; `paused` ones (for
        memory, or while the pipeline is full) are not idle, only not fetching.
        """
        watermark = self._watermark(excluded, paused)
        released = Fetched(self.topic)
        for state in self._partitions.values():
            count = len(state.stamps) if watermark is None else bisect.bisect_right(state.stamps, watermark)
            if count:
                head, state.held = state.held.split(count)
                released.extend(head)
                del state.stamps[:count]
        return released

    def _watermark(self, excluded: AbstractSet[int], paused: AbstractSet[int]) -> int | None:
        """The latest timestamp every expected partition reached; None when none is expected."""
        now = self._clock()
        frontiers: list[int | None] = []
        for partition, state in self._partitions.items():
            if partition in excluded or state.at_end:
                continue
            if partition in paused:
                state.heard_at = now
            elif now - state.heard_at >= self.idle_s:
                continue
            frontiers.append(state.frontier)
        known = [frontier for frontier in frontiers if frontier is not None]
        if len(known) < len(frontiers):
            return _BEFORE_ANY
        return min(known, default=None)


_BEFORE_ANY = -(2**63)
"""A watermark no message is at or before: an expected partition has delivered nothing yet."""
