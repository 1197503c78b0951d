"""The commit stage: produce a stored batch's derived records and dead letters, then commit its offsets.

`TransactionalCommitter` does both in one Kafka transaction (`send_offsets_to_transaction`),
so a `read_committed` reader sees each derived record once and a crash before the commit
leaves neither offsets nor records behind. `PlainCommitter` is for brokers without
transactions: an idempotent producer, flushed before the consumer commits (at least once).
Both are blocking and run in a worker thread, one batch at a time, in fetch order.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Protocol

from confluent_kafka import KafkaException, Producer, TopicPartition

from arbitrage.ingest.kafka import _metrics as m
from arbitrage.ingest.kafka._fetch import Fetcher
from arbitrage.ingest.kafka._options import KafkaOptions
from arbitrage.ingest.kafka._producing import (
    BROKER_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    FENCED,
    Refusals,
    Transactions,
    produce_keyed,
    produce_one,
)
from arbitrage.ingest.kafka._strategies import StoredBatch

log = logging.getLogger(__name__)

_ATTEMPTS = 5


class CommitFailed(Exception):
    """A batch's offsets could not be committed; `fatal` when the producer can never commit again."""

    def __init__(self, reason: str, *, fatal: bool = False) -> None:
        super().__init__(reason)
        self.fatal = fatal


class Committer(Protocol):
    def start(self) -> None: ...

    def commit(self, batch: StoredBatch) -> None: ...

    def close(self) -> None: ...


class _Producing:
    def __init__(self, options: KafkaOptions, fetcher: Fetcher, producer: Producer) -> None:
        self.options = options
        self.fetcher = fetcher
        self.producer = producer

    def _produce(self, batch: StoredBatch) -> None:
        o = self.options
        produce_keyed(self.producer, o.topic_opportunities, batch.opportunities)
        produce_keyed(self.producer, o.topic_risk, batch.risk)
        for record in batch.dead_letters:
            produce_one(self.producer, o.topic_dlq, record.key, record.value, record.headers or None)

    @staticmethod
    def _count(batch: StoredBatch) -> None:
        """Once the records are delivered (committed), not per attempt."""
        m.DERIVED.labels("opportunity").inc(len(batch.opportunities))
        m.DERIVED.labels("risk").inc(len(batch.risk))
        m.DERIVED.labels("dead_letter").inc(len(batch.dead_letters))

    def _offsets(self, batch: StoredBatch) -> list[TopicPartition]:
        topic = self.options.topic_transactions
        return [TopicPartition(topic, p, o) for p, o in sorted(batch.offsets.items())]

    def close(self) -> None:
        with contextlib.suppress(KafkaException):  # a fenced producer refuses even this; it has nothing to deliver
            self.producer.flush(5)


class TransactionalCommitter(_Producing):
    """Derived records, dead letters and offsets in one transaction per batch."""

    def __init__(self, options: KafkaOptions, fetcher: Fetcher) -> None:
        config = {"transaction.timeout.ms": 60_000, **options.producer_config(), "transactional.id": options.txn_id}
        self._transactions = Transactions(config)
        super().__init__(options, fetcher, self._transactions.producer)

    def start(self) -> None:
        """Fence a crashed predecessor with the same transactional id and abort its open transaction.

        Each attempt is short (`CONNECT_TIMEOUT_S`; the caller retries): it blocks a worker thread
        that a stop cannot interrupt, and the process's exit waits for that thread.
        """
        self.producer.init_transactions(CONNECT_TIMEOUT_S)

    def commit(self, batch: StoredBatch) -> None:
        delay = 0.2
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                self._transactions.begin()
                self.producer = self._transactions.producer
                self._produce(batch)
                group = self.fetcher.group_metadata(BROKER_TIMEOUT_S)
                self.producer.send_offsets_to_transaction(self._offsets(batch), group, BROKER_TIMEOUT_S)
                self._transactions.commit()
                m.COMMITS.labels("ok").inc()
                self._count(batch)
                return
            except KafkaException as exc:
                error = exc.args[0]
                m.COMMITS.labels("failed").inc()
                log.warning("Kafka transaction failed (attempt %d): %s", attempt, error)
                if error.fatal() or error.code() in FENCED:
                    raise CommitFailed(str(error), fatal=True) from exc
                self._transactions.abort()
                time.sleep(delay)
                delay *= 2
        raise CommitFailed(f"gave up after {_ATTEMPTS} attempts")


class PlainCommitter(_Producing):
    """Produce and flush, then commit offsets with the consumer (brokers without transactions).

    A batch with a record the broker refused for good (`Refusals`) is produced again, not committed.
    """

    def __init__(self, options: KafkaOptions, fetcher: Fetcher) -> None:
        self._refusals = Refusals()
        super().__init__(options, fetcher, Producer({**options.producer_config(), **self._refusals.config()}))

    def start(self) -> None:
        return None

    def commit(self, batch: StoredBatch) -> None:
        self._refusals.clear()
        self._produce(batch)
        if self.producer.flush(BROKER_TIMEOUT_S):
            m.COMMITS.labels("failed").inc()
            raise CommitFailed("derived records were not delivered in time")
        if refused := self._refusals.summary():
            m.COMMITS.labels("failed").inc()
            raise CommitFailed(f"the broker refused {refused}")
        try:
            offsets = self._offsets(batch)
            self.fetcher.run_in_thread(
                lambda: self.fetcher.consumer.commit(offsets=offsets, asynchronous=False), BROKER_TIMEOUT_S
            )
        except KafkaException as exc:
            m.COMMITS.labels("failed").inc()
            raise CommitFailed(str(exc.args[0])) from exc
        m.COMMITS.labels("ok").inc()
        self._count(batch)
