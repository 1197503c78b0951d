"""What the consumer's commit stage and the relay share when they talk to the broker: its timeouts,
waiting until it answers, producing through a full queue, refused records, and transactions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException, Producer

from arbitrage.ingest.kafka._fetched import Headers
from arbitrage.ingest.kafka._records import Keyed

log = logging.getLogger(__name__)

BROKER_TIMEOUT_S = 30.0
"""One call that waits for the broker's answer (a commit, a flush)."""
CONNECT_TIMEOUT_S = 3.0
"""One attempt to reach the broker at start-up (retried): a stop cannot interrupt the worker thread it blocks."""
FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})
"""A newer instance with our transactional id took over. librdkafka can report it first as a
plain error of the call that ran into it (seen on Tansu: committing offsets), and the producer
then refuses every transaction call ("conflicting abort"): it is as fatal as a fatal error."""

_T = TypeVar("_T")


async def until_answered(call: Callable[[], _T], *, backoff_max_s: float, failed: Callable[[KafkaError], None]) -> _T:
    """`call()` in a worker thread until the broker answers it, with backoff; `failed` hears of each miss."""
    delay = 0.5
    while True:
        try:
            return await asyncio.to_thread(call)
        except KafkaException as exc:
            failed(exc.args[0])
        await asyncio.sleep(delay)
        delay = min(delay * 2, backoff_max_s)


def produce_keyed(producer: Producer, topic: str, keyed: Keyed) -> None:
    """Produce every record with one bare `produce` call each (a batch holds tens of thousands)."""
    produce, keys, values = producer.produce, keyed.keys, keyed.values
    start = 0
    while start < len(values):
        index = start
        try:
            for index in range(start, len(values)):
                produce(topic, values[index], keys[index])
        except BufferError:
            producer.poll(0.05)
            start = index
        else:
            return


def produce_one(
    producer: Producer, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None, partition: int = -1
) -> None:
    """Produce one record, waiting while the records before it fill the queue."""
    while True:
        try:
            producer.produce(topic, value, key, headers=headers, partition=partition)
            return
        except BufferError:
            producer.poll(0.05)


class Refusals:
    """Records the broker refused for good (too large, not authorised), for a producer without transactions.

    A flush returns once the broker answered every record, refused ones too: the producer reports
    only those (`delivery.report.only.error`, so delivered records cost no callback).
    """

    def __init__(self) -> None:
        self._reasons: list[str] = []

    def config(self) -> dict[str, Any]:
        """The producer settings that report refusals here."""
        return {"delivery.report.only.error": True, "on_delivery": self._refused}

    def _refused(self, error: KafkaError, message: Any) -> None:
        self._reasons.append(f"{message.topic()}: {error.str()}")

    def clear(self) -> None:
        self._reasons.clear()

    def summary(self) -> str | None:
        """How many were refused since `clear`, and the first one's reason; None when none was."""
        return f"{len(self._reasons)} records ({self._reasons[0]})" if self._reasons else None


class Transactions:
    """A transactional producer that gets over a transaction it could not end.

    A commit that times out may still go through: librdkafka then refuses an abort, so it is
    retried as a commit. A transaction that can be neither committed nor aborted (a broker that
    stalled past the timeouts, or kept failing EndTxn) leaves the producer refusing every later
    transaction; the next `begin` then makes a new producer, whose `init_transactions` fences the
    old one and aborts its open transaction.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config
        self.producer = Producer(config)
        self._stale = False

    def begin(self) -> None:
        if self._stale:
            self.producer = Producer(self._config)
            self.producer.init_transactions(CONNECT_TIMEOUT_S)
            self._stale = False
        self.producer.begin_transaction()

    def commit(self) -> None:
        for attempt in range(1, 4):
            try:
                self.producer.commit_transaction(BROKER_TIMEOUT_S)
                return
            except KafkaException as exc:
                error = exc.args[0]
                if attempt == 3 or not error.retriable() or error.txn_requires_abort():
                    raise

    def abort(self) -> None:
        try:
            self.producer.abort_transaction(BROKER_TIMEOUT_S)
        except KafkaException as exc:
            log.warning("Kafka: could not abort a failed transaction (%s); the next one gets a new producer", exc)
            self._stale = True
