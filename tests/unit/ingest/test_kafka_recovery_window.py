"""Which fetched messages a crashed predecessor may have stored without committing them."""

from __future__ import annotations

from arbitrage.ingest.kafka._fetched import Fetched
from arbitrage.ingest.kafka._strategies import RecoveryWindow, suspect_keys


def fetched(*runs: tuple[int, range]) -> Fetched:
    """Messages of each (partition, offsets) run, keyed by where they are."""
    batch = Fetched("t")
    for partition, offsets in runs:
        for offset in offsets:
            batch.values.append(b"{}")
            batch.keys.append(f"sig-{partition}-{offset}".encode())
            batch.partitions.append(partition)
            batch.offsets.append(offset)
            batch.headers.append(None)
            batch.timestamps.append(-1)
    return batch


def suspects(window: RecoveryWindow, batch: Fetched) -> dict[str, tuple[int, int]]:
    return suspect_keys(batch, window.suspects(batch))


def test_only_the_first_span_offsets_of_a_newly_assigned_partition_are_suspects() -> None:
    window = RecoveryWindow(span=5)
    window.reset([0, 1])
    first = suspects(window, fetched((0, range(100, 103)), (1, range(7, 9))))
    assert first == {
        "sig-0-100": (0, 100),
        "sig-0-101": (0, 101),
        "sig-0-102": (0, 102),
        "sig-1-7": (1, 7),
        "sig-1-8": (1, 8),
    }
    second = suspects(window, fetched((0, range(103, 110)), (1, range(9, 20))))
    assert set(second) == {"sig-0-103", "sig-0-104", "sig-1-9", "sig-1-10", "sig-1-11"}
    assert window.suspects(fetched((0, range(110, 120)), (1, range(20, 30)))) == {}


def test_interleaved_partitions_are_windowed_each_from_its_own_first_offset() -> None:
    window = RecoveryWindow(span=2)
    window.reset([0, 1])
    batch = fetched((0, range(10, 11)), (1, range(50, 51)), (0, range(11, 13)), (1, range(51, 53)))
    assert set(suspects(window, batch)) == {"sig-0-10", "sig-0-11", "sig-1-50", "sig-1-51"}
    assert window.suspects(fetched((0, range(13, 14)))) == {}


def test_a_partition_not_newly_assigned_has_no_suspects_and_a_new_assignment_reopens_its_window() -> None:
    window = RecoveryWindow(span=3)
    window.reset([0])
    assert window.suspects(fetched((2, range(5)))) == {}
    assert set(suspects(window, fetched((0, range(50, 60))))) == {"sig-0-50", "sig-0-51", "sig-0-52"}
    assert window.suspects(fetched((0, range(60, 70)))) == {}
    window.reset([0])
    assert set(suspects(window, fetched((0, range(70, 80))))) == {"sig-0-70", "sig-0-71", "sig-0-72"}


def test_a_batch_ending_just_before_the_horizon_keeps_the_window_open_for_nothing_more() -> None:
    window = RecoveryWindow(span=4)
    window.reset([3])
    assert set(suspects(window, fetched((3, range(4))))) == {f"sig-3-{o}" for o in range(4)}
    assert window.suspects(fetched((3, range(4, 8)))) == {}
