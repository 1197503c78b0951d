"""Fetched messages taken apart into lists: what the pipeline and its dead letters read of them."""

from __future__ import annotations

from confluent_kafka import Message

from arbitrage.ingest.kafka._fetched import Fetched
from arbitrage.ingest.kafka._records import dead_letter


def _message(partition: int, offset: int, headers: list[tuple[str, bytes]] | None = None) -> Message:
    return Message(
        topic="arbitrage-transactions",
        partition=partition,
        offset=offset,
        key=f"sig-{partition}-{offset}".encode(),
        value=f"value-{partition}-{offset}".encode(),
        headers=headers,
    )


def test_messages_become_parallel_lists_in_fetch_order() -> None:
    fetched = Fetched.of("arbitrage-transactions", [_message(2, 7, [("trace", b"x")]), _message(0, 3)])
    assert fetched.values == [b"value-2-7", b"value-0-3"]
    assert fetched.keys == [b"sig-2-7", b"sig-0-3"]
    assert (fetched.partitions, fetched.offsets) == ([2, 0], [7, 3])
    assert fetched.headers == [[("trace", b"x")], None]


def test_the_next_offset_of_each_partition_follows_its_last_message() -> None:
    fetched = Fetched.of("t", [_message(1, 5), _message(0, 9), _message(1, 6), _message(0, 10)])
    assert fetched.next_offsets() == {1: 7, 0: 11}


def test_messages_of_revoked_partitions_are_left_out_with_all_their_fields() -> None:
    fetched = Fetched.of("t", [_message(1, 5), _message(0, 9, [("h", b"1")]), _message(1, 6)])
    fetched.extend(Fetched.of("t", [_message(0, 10)]))
    kept = fetched.without({1})
    assert (kept.partitions, kept.offsets, kept.keys) == ([0, 0], [9, 10], [b"sig-0-9", b"sig-0-10"])
    assert kept.headers == [[("h", b"1")], None]
    assert kept.next_offsets() == {0: 11}


def test_a_dead_letter_carries_the_original_bytes_headers_and_where_the_message_was_read() -> None:
    fetched = Fetched.of("arbitrage-transactions", [_message(0, 1), _message(4, 42, [("trace", b"abc")])])
    record = dead_letter(fetched, 1, "slot", "must be positive")
    assert (record.key, record.value, record.partition) == (b"sig-4-42", b"value-4-42", 4)
    assert record.headers[0] == ("trace", b"abc")
    assert dict(record.headers[1:]) == {
        "dlq.reason": b"must be positive",
        "dlq.field": b"slot",
        "dlq.topic": b"arbitrage-transactions",
        "dlq.partition": b"4",
        "dlq.offset": b"42",
    }
