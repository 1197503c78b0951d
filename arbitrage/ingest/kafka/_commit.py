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
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from arbitrage.ingest.kafka import _metrics as m
from arbitrage.ingest.kafka._fetch import Fetcher
from arbitrage.ingest.kafka._fetched import Headers
from arbitrage.ingest.kafka._options import KafkaOptions
from arbitrage.ingest.kafka._records import Keyed
from arbitrage.ingest.kafka._strategies import StoredBatch

log = logging.getLogger(__name__)

_TIMEOUT_S = 30.0
_INIT_TIMEOUT_S = 3.0
_ATTEMPTS = 5
_FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})
"""A newer instance with our transactional id took over. librdkafka can report it first as a
plain error of the call that ran into it (seen on Tansu: committing offsets), and the producer
then refuses every transaction call ("conflicting abort"): it is as fatal as a fatal error."""


class CommitFailed(Exception):
    """A batch's offsets could not be committed; `fatal` when the producer can never commit again."""

    def __init__(self, reason: str, *, fatal: bool = False) -> None:
        super().__init__(reason)
        self.fatal = fatal


class Committer(Protocol):
    def start(self) -> None: ...

    def commit(self, batch: StoredBatch) -> None: ...

    def close(self) -> None: ...


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


class _Producing:
    def __init__(self, options: KafkaOptions, fetcher: Fetcher, producer: Producer) -> None:
        self.options = options
        self.fetcher = fetcher
        self.producer = producer

    def _produce(self, batch: StoredBatch) -> None:
        o = self.options
        self._send_all(o.topic_opportunities, batch.opportunities)
        self._send_all(o.topic_risk, batch.risk)
        for record in batch.dead_letters:
            self._send(o.topic_dlq, record.key, record.value, record.headers or None)

    @staticmethod
    def _count(batch: StoredBatch) -> None:
        """Once the records are delivered (committed), not per attempt."""
        m.DERIVED.labels("opportunity").inc(len(batch.opportunities))
        m.DERIVED.labels("risk").inc(len(batch.risk))
        m.DERIVED.labels("dead_letter").inc(len(batch.dead_letters))

    def _send_all(self, topic: str, keyed: Keyed) -> None:
        produce_keyed(self.producer, topic, keyed)

    def _send(self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers)
                return
            except BufferError:
                self.producer.poll(0.05)

    def _offsets(self, batch: StoredBatch) -> list[TopicPartition]:
        topic = self.options.topic_transactions
        return [TopicPartition(topic, p, o) for p, o in sorted(batch.offsets.items())]

    def close(self) -> None:
        with contextlib.suppress(KafkaException):  # a fenced producer refuses even this; it has nothing to deliver
            self.producer.flush(5)


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
            self.producer.init_transactions(_INIT_TIMEOUT_S)
            self._stale = False
        self.producer.begin_transaction()

    def commit(self) -> None:
        for attempt in range(1, 4):
            try:
                self.producer.commit_transaction(_TIMEOUT_S)
                return
            except KafkaException as exc:
                error = exc.args[0]
                if attempt == 3 or not error.retriable() or error.txn_requires_abort():
                    raise

    def abort(self) -> None:
        try:
            self.producer.abort_transaction(_TIMEOUT_S)
        except KafkaException as exc:
            log.warning("Kafka: could not abort a failed transaction (%s); the next one gets a new producer", exc)
            self._stale = True


class TransactionalCommitter(_Producing):
    """Derived records, dead letters and offsets in one transaction per batch."""

    def __init__(self, options: KafkaOptions, fetcher: Fetcher) -> None:
        config = {"transaction.timeout.ms": 60_000, **options.producer_config(), "transactional.id": options.txn_id}
        self._transactions = Transactions(config)
        super().__init__(options, fetcher, self._transactions.producer)

    def start(self) -> None:
        """Fence a crashed predecessor with the same transactional id and abort its open transaction.

        Each attempt is short (`_INIT_TIMEOUT_S`; the caller retries): it blocks a worker thread
        that a stop cannot interrupt, and the process's exit waits for that thread.
        """
        self.producer.init_transactions(_INIT_TIMEOUT_S)

    def commit(self, batch: StoredBatch) -> None:
        delay = 0.2
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                self._transactions.begin()
                self.producer = self._transactions.producer
                self._produce(batch)
                group = self.fetcher.group_metadata(_TIMEOUT_S)
                self.producer.send_offsets_to_transaction(self._offsets(batch), group, _TIMEOUT_S)
                self._transactions.commit()
                m.COMMITS.labels("ok").inc()
                self._count(batch)
                return
            except KafkaException as exc:
                error = exc.args[0]
                m.COMMITS.labels("failed").inc()
                log.warning("Kafka transaction failed (attempt %d): %s", attempt, error)
                if error.fatal() or error.code() in _FENCED:
                    raise CommitFailed(str(error), fatal=True) from exc
                self._transactions.abort()
                time.sleep(delay)
                delay *= 2
        raise CommitFailed(f"gave up after {_ATTEMPTS} attempts")


class PlainCommitter(_Producing):
    """Produce and flush, then commit offsets with the consumer (brokers without transactions).

    A flush returns once the broker answered every record, also those it refused for good (too
    large, not authorised): the producer reports only those (`delivery.report.only.error`, so
    delivered records cost no callback), and a batch with any is produced again, not committed.
    """

    def __init__(self, options: KafkaOptions, fetcher: Fetcher) -> None:
        self._refused: list[str] = []
        config = {**options.producer_config(), "delivery.report.only.error": True, "on_delivery": self._on_refused}
        super().__init__(options, fetcher, Producer(config))

    def _on_refused(self, error: KafkaError, message: Any) -> None:
        self._refused.append(f"{message.topic()}: {error.str()}")

    def start(self) -> None:
        return None

    def commit(self, batch: StoredBatch) -> None:
        self._refused.clear()
        self._produce(batch)
        if self.producer.flush(_TIMEOUT_S):
            m.COMMITS.labels("failed").inc()
            raise CommitFailed("derived records were not delivered in time")
        if self._refused:
            m.COMMITS.labels("failed").inc()
            raise CommitFailed(f"the broker refused {len(self._refused)} derived records ({self._refused[0]})")
        try:
            offsets = self._offsets(batch)
            self.fetcher.run_in_thread(
                lambda: self.fetcher.consumer.commit(offsets=offsets, asynchronous=False), _TIMEOUT_S
            )
        except KafkaException as exc:
            m.COMMITS.labels("failed").inc()
            raise CommitFailed(str(exc.args[0])) from exc
        m.COMMITS.labels("ok").inc()
        self._count(batch)
