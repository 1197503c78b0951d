"""Partitions handed over in message-time order: what the aligner holds back and what it lets go."""

from __future__ import annotations

from arbitrage.ingest.kafka._align import PartitionAligner
from arbitrage.ingest.kafka._fetched import Fetched


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fetched(*runs: tuple[int, list[int]], first_offset: int = 0) -> Fetched:
    """Messages of each (partition, timestamps) run, offsets counting up per run."""
    batch = Fetched("t")
    for partition, stamps in runs:
        for offset, stamp in enumerate(stamps, start=first_offset):
            batch.values.append(f"{partition}@{stamp}".encode())
            batch.keys.append(None)
            batch.partitions.append(partition)
            batch.offsets.append(offset)
            batch.headers.append(None)
            batch.timestamps.append(stamp)
    return batch


def released(
    aligner: PartitionAligner, excluded: frozenset[int] = frozenset(), paused: frozenset[int] = frozenset()
) -> list[tuple[int, int]]:
    out = aligner.release(excluded=excluded, paused=paused)
    return list(zip(out.partitions, out.timestamps, strict=True))


def test_a_partition_ahead_of_the_others_waits_until_they_reach_its_time() -> None:
    aligner = PartitionAligner("t", idle_s=5, clock=Clock())
    aligner.expect([0, 1])
    aligner.add(fetched((0, [10, 20, 30, 40, 50])))
    assert released(aligner) == []  # partition 1 has said nothing yet
    aligner.add(fetched((1, [15, 25])))
    assert released(aligner) == [(0, 10), (0, 20), (1, 15), (1, 25)]
    aligner.add(fetched((1, [45, 60]), first_offset=2))
    assert released(aligner) == [(0, 30), (0, 40), (0, 50), (1, 45)]
    assert aligner.held(0) == 0 and aligner.held(1) == 1  # 60: partition 0 has reached only 50


def test_a_partition_at_its_end_holds_no_other_back_until_it_receives_again() -> None:
    aligner = PartitionAligner("t", idle_s=5, clock=Clock())
    aligner.expect([0, 1])
    aligner.add(fetched((0, [10, 20]), (1, [5])))
    assert released(aligner) == [(1, 5)]
    aligner.reached_end(1)
    assert released(aligner) == [(0, 10), (0, 20)]
    aligner.add(fetched((0, [30])))
    aligner.add(fetched((1, [25]), first_offset=1))  # more arrived: partition 1 is expected again
    assert released(aligner) == [(1, 25)]


def test_a_silent_partition_stops_holding_the_others_back_after_the_wait_unless_it_is_only_paused() -> None:
    clock = Clock()
    aligner = PartitionAligner("t", idle_s=1.0, clock=clock)
    aligner.expect([0, 1])
    aligner.add(fetched((0, [10, 20])))
    clock.now += 0.9
    assert released(aligner) == []
    clock.now += 0.2
    assert released(aligner, paused=frozenset({1})) == []  # paused (for memory, or a full pipeline): not silent
    clock.now += 0.9
    assert released(aligner) == []  # the pause refreshed it
    clock.now += 0.2
    assert released(aligner) == [(0, 10), (0, 20)]


def test_a_partition_an_operator_paused_holds_no_other_back() -> None:
    aligner = PartitionAligner("t", idle_s=5, clock=Clock())
    aligner.expect([0, 1])
    aligner.add(fetched((0, [10, 20])))
    assert released(aligner, excluded=frozenset({1})) == [(0, 10), (0, 20)]


def test_stamps_that_go_back_keep_their_partitions_order() -> None:
    aligner = PartitionAligner("t", idle_s=5, clock=Clock())
    aligner.expect([0, 1])
    aligner.add(fetched((0, [10, 30, 20, 40]), (1, [25])))
    out = aligner.release(excluded=set(), paused=set())
    assert list(zip(out.partitions, out.offsets, strict=True)) == [(0, 0), (1, 0)]
    aligner.add(fetched((1, [35]), first_offset=1))
    out = aligner.release(excluded=set(), paused=set())
    # 20 comes after 30 in its partition: it waits for the running maximum, 30, to be reached.
    assert list(zip(out.partitions, out.offsets, strict=True)) == [(0, 1), (0, 2), (1, 1)]


def test_partitions_over_the_limit_are_named_and_forgotten_ones_hold_nothing() -> None:
    aligner = PartitionAligner("t", idle_s=5, clock=Clock())
    aligner.expect([0, 1, 2])
    aligner.add(fetched((0, [10, 20, 30]), (1, [5]), (3, [1, 2])))  # 3 is not ours: dropped
    assert aligner.over(3) == {0}
    assert len(aligner) == 4
    aligner.forget([0])
    assert len(aligner) == 1
    aligner.reached_end(2)
    assert released(aligner) == [(1, 5)]
