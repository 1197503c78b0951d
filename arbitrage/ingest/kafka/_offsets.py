"""Broker-side offsets for status and health, asked through an admin client of their own.

The consumer could answer too, but only from the fetch thread (calls from other threads
block while it sits in `consume()`), and a broker may take seconds to answer them behind
the consumer's long-polling fetches: nothing would be fetched meanwhile. An admin client
has its own connections, so asking it never stalls ingestion.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]  # not in its __all__

from arbitrage.ingest.kafka._options import KafkaOptions


class BrokerOffsets:
    """Watermarks, committed offsets and reachability of one topic, for one consumer group."""

    def __init__(self, options: KafkaOptions, timeout_s: float = 5.0) -> None:
        self.topic = options.topic_transactions
        self.group_id = options.group_id
        self.timeout_s = timeout_s
        self._admin = AdminClient(options.client_config())

    @contextlib.contextmanager
    def _asking(self) -> Iterator[AdminClient]:
        """The admin client for one call, which then hands its log lines over (`LIBRDKAFKA_LOG`): unpolled,
        they would pile up for as long as a broker is away."""
        try:
            yield self._admin
        finally:
            self._admin.poll(0)

    def watermarks(self, partitions: list[int]) -> dict[int, tuple[int, int]]:
        """Partition → (low, high) watermark; partitions the broker did not answer for are left out."""
        found: dict[int, list[int]] = {p: [-1, -1] for p in partitions}
        specs = (OffsetSpec.earliest(), OffsetSpec.latest())  # type: ignore[no-untyped-call]
        with self._asking() as admin:
            for index, spec in enumerate(specs):
                futures = admin.list_offsets(
                    {TopicPartition(self.topic, p): spec for p in partitions}, request_timeout=self.timeout_s
                )
                for tp, future in futures.items():
                    try:
                        found[tp.partition][index] = future.result(self.timeout_s + 1).offset
                    except KafkaException:
                        continue
        return {p: (low, high) for p, (low, high) in found.items() if low >= 0 and high >= 0}

    def committed(self, partitions: list[int]) -> dict[int, int]:
        """Partition → the group's committed offset; partitions without one are left out."""
        if not partitions:
            return {}
        request = ConsumerGroupTopicPartitions(self.group_id, [TopicPartition(self.topic, p) for p in partitions])
        with self._asking() as admin:
            futures = admin.list_consumer_group_offsets([request], request_timeout=self.timeout_s)
            try:
                answer = futures[self.group_id].result(self.timeout_s + 1)
            except KafkaException:
                return {}
        return {tp.partition: tp.offset for tp in answer.topic_partitions or [] if tp.offset >= 0 and not tp.error}

    def partition_count(self) -> int:
        """How many partitions the topic has now (raises KafkaException when the broker does not say)."""
        with self._asking() as admin:
            topic = admin.list_topics(self.topic, timeout=self.timeout_s).topics[self.topic]
        if topic.error is not None:
            raise KafkaException(topic.error)
        return len(topic.partitions)

    def reachable(self, timeout_s: float) -> bool:
        """Whether the broker answers a metadata request for the topic in time."""
        with self._asking() as admin:
            try:
                admin.list_topics(self.topic, timeout=timeout_s)
            except KafkaException:
                return False
        return True
