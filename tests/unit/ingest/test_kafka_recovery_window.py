"""Which fetched messages a crashed predecessor may have stored without committing them."""

from __future__ import annotations

from typing import Any, cast

from confluent_kafka import Message

from arbitrage.ingest.kafka._strategies import RecoveryWindow


class _Fetched:
    """The three accessors of a fetched message that the window reads."""

    def __init__(self, partition: int, offset: int) -> None:
        self._partition = partition
        self._offset = offset

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return f"sig-{self._partition}-{self._offset}".encode()


def fetched(partition: int, offsets: range) -> list[Message]:
    return [cast(Any, _Fetched(partition, o)) for o in offsets]


def test_only_the_first_span_offsets_of_a_newly_assigned_partition_are_suspects() -> None:
    window = RecoveryWindow(span=5)
    window.reset([0, 1])
    first = window.suspects(fetched(0, range(100, 103)) + fetched(1, range(7, 9)))
    assert first == {
        "sig-0-100": (0, 100),
        "sig-0-101": (0, 101),
        "sig-0-102": (0, 102),
        "sig-1-7": (1, 7),
        "sig-1-8": (1, 8),
    }
    second = window.suspects(fetched(0, range(103, 110)) + fetched(1, range(9, 20)))
    assert set(second) == {"sig-0-103", "sig-0-104", "sig-1-9", "sig-1-10", "sig-1-11"}
    assert window.suspects(fetched(0, range(110, 120)) + fetched(1, range(20, 30))) == {}


def test_a_partition_not_newly_assigned_has_no_suspects_and_a_new_assignment_reopens_its_window() -> None:
    window = RecoveryWindow(span=3)
    window.reset([0])
    assert window.suspects(fetched(2, range(5))) == {}
    assert set(window.suspects(fetched(0, range(50, 60)))) == {"sig-0-50", "sig-0-51", "sig-0-52"}
    assert window.suspects(fetched(0, range(60, 70))) == {}
    window.reset([0])
    assert set(window.suspects(fetched(0, range(70, 80)))) == {"sig-0-70", "sig-0-71", "sig-0-72"}
