"""Fetched messages as parallel lists, taken apart in the fetch thread as they arrive."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

Headers = list[tuple[str, str | bytes | None]]


@dataclass(slots=True)
class Fetched:
    """What the pipeline needs of each message, in fetch order; the `Message` objects are let go.

    Each `Message` is an object the cyclic GC tracks, and a pipeline of 50k-message batches
    held 100k+ of them for every collection to walk, with the GIL held: collections took 1.26 s
    of a 600k-record run's consumption, 0.43 s since. A list of bytes or ints is one object to it.
    """

    topic: str = ""
    values: list[bytes] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    headers: list[Headers | None] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    """Each message's timestamp in ms (-1 when it has none)."""

    @classmethod
    def of(cls, topic: str, messages: Iterable[Message]) -> Fetched:
        """The fields of `topic`'s messages; call with messages that carry no error."""
        fetched = cls(topic)
        for message in messages:  # one pass over every message consumed
            fetched.values.append(message.value() or b"")
            fetched.keys.append(message.key())
            partition, offset = message.partition(), message.offset()
            fetched.partitions.append(-1 if partition is None else partition)
            fetched.offsets.append(-1 if offset is None else offset)
            headers = message.headers()
            fetched.headers.append(list(headers.items()) if isinstance(headers, dict) else headers)
            kind, stamp = message.timestamp()
            fetched.timestamps.append(-1 if kind == TIMESTAMP_NOT_AVAILABLE else stamp)
        return fetched

    def __len__(self) -> int:
        return len(self.values)

    def extend(self, other: Fetched) -> None:
        self.values.extend(other.values)
        self.keys.extend(other.keys)
        self.partitions.extend(other.partitions)
        self.offsets.extend(other.offsets)
        self.headers.extend(other.headers)
        self.timestamps.extend(other.timestamps)

    def split(self, count: int) -> tuple[Fetched, Fetched]:
        """The first `count` messages and the rest."""
        return self._sliced(slice(None, count)), self._sliced(slice(count, None))

    def by_partition(self) -> dict[int, Fetched]:
        """The messages of each partition, in their order here."""
        positions: dict[int, list[int]] = {}
        for index, partition in enumerate(self.partitions):
            positions.setdefault(partition, []).append(index)
        if len(positions) == 1:
            return dict.fromkeys(positions, self)
        return {partition: self._at(indexes) for partition, indexes in positions.items()}

    def without(self, partitions: set[int]) -> Fetched:
        """The messages of the other partitions (theirs were revoked; rare, so a plain loop)."""
        return self._at([i for i, partition in enumerate(self.partitions) if partition not in partitions])

    def _at(self, indexes: list[int]) -> Fetched:
        return Fetched(
            self.topic,
            [self.values[i] for i in indexes],
            [self.keys[i] for i in indexes],
            [self.partitions[i] for i in indexes],
            [self.offsets[i] for i in indexes],
            [self.headers[i] for i in indexes],
            [self.timestamps[i] for i in indexes],
        )

    def _sliced(self, part: slice) -> Fetched:
        return Fetched(
            self.topic,
            self.values[part],
            self.keys[part],
            self.partitions[part],
            self.offsets[part],
            self.headers[part],
            self.timestamps[part],
        )

    def next_offsets(self) -> dict[int, int]:
        """Partition → the offset after its last message here (offsets grow within a partition)."""
        last = dict(zip(self.partitions, self.offsets, strict=True))
        return {partition: offset + 1 for partition, offset in last.items() if partition >= 0}
