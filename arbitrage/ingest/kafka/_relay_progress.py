"""The relay's progress: a record per transaction on `topic_relay_progress`, and its data dir's own account.

The record (keyed by the relay's transactional id, on partition 0) says which stream positions the
relay published. Positions are a data dir's own, so with the embedded warehouse the relay's id is
the data dir's (a random id kept in `kafka_relay.json` there), whatever the host and port serving
it: a restart on another port goes on where the last one stopped. The same file keeps the relay's
own account of its progress (`DataDirMarks`).
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
from arbitrage.ingest.kafka._producing import BROKER_TIMEOUT_S, CONNECT_TIMEOUT_S

log = logging.getLogger(__name__)

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
    through: int | None = None
    """The `through` of the relay's last commit here (at its first start: the highest position then)."""


class DataDirMarks:
    """This data dir's id, and how far the relay got here by its own account.

    The account lags the progress record by at most the commit in flight, so it is what the relay
    goes on from when the topic has no record of it: one that never reached its broker, or one
    whose record the topic's retention deleted.
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

    def through(self, start_mark: int) -> int:
        """What the relay counts as published here; `start_mark`, recorded now, at its first start here."""
        if self._marks.through is None:
            self.record(start_mark)
        assert self._marks.through is not None
        return self._marks.through

    def record(self, through: int) -> None:
        self._marks.through = through
        staged = self.path.with_name(f".{self.path.name}.tmp")
        staged.write_bytes(msgspec.json.encode(self._marks))
        os.replace(staged, self.path)


def read_progress(options: KafkaOptions, relay_id: str) -> RelayProgress | None:
    """The latest committed progress record of this relay, None if it never published."""
    consumer = Consumer(
        {
            **options.client_config(),
            "group.id": f"{relay_id}-progress",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    try:
        partition = TopicPartition(options.topic_relay_progress, 0)
        try:
            low, high = consumer.get_watermark_offsets(partition, timeout=CONNECT_TIMEOUT_S, cached=False)
        except KafkaException as exc:
            if exc.args[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION):
                return None
            raise
        key, end, window = relay_id.encode(), high, _PROGRESS_WINDOW
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
    deadline = time.monotonic() + BROKER_TIMEOUT_S
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
