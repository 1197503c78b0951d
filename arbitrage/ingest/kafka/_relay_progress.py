"""The relay's progress: a record per transaction on `topic_relay_progress`, and this data dir's own marks.

The record (keyed by the relay's transactional id, on partition 0) says which stream positions the
relay published. Positions are a warehouse's own, so the record names the data dir it counts in
(`warehouse`, a random id kept in `kafka_relay.json` there) and a record of another data dir (a new
or restored one under the same host and port) is not taken for this one's. The same file keeps each
relay's own account of its progress here (`DataDirMarks`).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from arbitrage.ingest.kafka._options import KafkaOptions

log = logging.getLogger(__name__)

_TIMEOUT_S = 30.0
_CALL_TIMEOUT_S = 3.0
_PROGRESS_WINDOW = 1_000
"""Offsets of the progress topic read back per look for this relay's latest record (then 4× more)."""
ORIGIN_FILE = "kafka_relay.json"

Runs = list[tuple[int, int]]
"""Positions as runs of consecutive values, first and last."""


class RelayProgress(msgspec.Struct, frozen=True):
    """What a relay published: every position up to `through`, and the runs in `also` above it."""

    through: int
    also: Runs = msgspec.field(default_factory=list)
    warehouse: str = ""
    """The data dir whose positions these are (empty: a shared ClickHouse, never read back)."""


class _Marks(msgspec.Struct):
    warehouse: str
    through: dict[str, int] = msgspec.field(default_factory=dict)
    """Per relay id: the `through` of its last commit here (at its first start: the highest position then)."""


class DataDirMarks:
    """This data dir's id, and how far each relay got here by its own account.

    The account lags the progress record by at most the commit in flight, so it is what a relay
    goes on from when the topic has no record of it: one that never reached its broker, one whose
    record the topic's retention deleted, or a record of another data dir.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / ORIGIN_FILE
        marks: _Marks | None = None
        if self.path.exists():
            try:
                marks = msgspec.json.decode(self.path.read_bytes(), type=_Marks)
            except (msgspec.DecodeError, OSError) as exc:
                log.warning("Kafka relay: %s is unreadable (%s); starting it afresh", self.path, exc)
        self._marks = marks or _Marks(uuid.uuid4().hex)

    @property
    def warehouse(self) -> str:
        return self._marks.warehouse

    def through(self, relay_id: str, start_mark: int) -> int:
        """What `relay_id` counts as published here; `start_mark`, recorded now, at its first start here."""
        if relay_id not in self._marks.through:
            self.record(relay_id, start_mark)
        return self._marks.through[relay_id]

    def record(self, relay_id: str, through: int) -> None:
        self._marks.through[relay_id] = through
        staged = self.path.with_name(f".{self.path.name}.tmp")
        staged.write_bytes(msgspec.json.encode(self._marks))
        os.replace(staged, self.path)


def read_progress(options: KafkaOptions) -> RelayProgress | None:
    """The latest committed progress record of this relay, None if it never published."""
    consumer = Consumer(
        {
            **options.client_config(),
            "group.id": f"{options.relay_id}-progress",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    try:
        partition = TopicPartition(options.topic_relay_progress, 0)
        try:
            low, high = consumer.get_watermark_offsets(partition, timeout=_CALL_TIMEOUT_S, cached=False)
        except KafkaException as exc:
            if exc.args[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION):
                return None
            raise
        key, end, window = options.relay_id.encode(), high, _PROGRESS_WINDOW
        while end > low:
            start = max(low, end - window)
            latest = _latest_value(consumer, TopicPartition(options.topic_relay_progress, 0, start), key)
            if latest is not None:
                return msgspec.json.decode(latest, type=RelayProgress)
            end, window = start, window * 4
        return None
    finally:
        consumer.close()


def _latest_value(consumer: Consumer, start: TopicPartition, key: bytes) -> bytes | None:
    """The value of the last record with `key` from `start` to the partition's end."""
    consumer.assign([start])
    deadline = time.monotonic() + _TIMEOUT_S
    latest: bytes | None = None
    while time.monotonic() < deadline:
        for message in consumer.consume(500, 0.5):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    return latest
                raise KafkaException(error)
            if message.key() == key:
                latest = message.value()
    raise KafkaException(
        KafkaError(KafkaError._TIMED_OUT, "the relay's progress topic was not read to its end in time")
    )
