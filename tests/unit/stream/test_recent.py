"""RecentTransactions: the newest stored rows, whatever order and size their batches come in."""

from __future__ import annotations

import tracemalloc

import msgspec
import polars as pl

from arbitrage.ingest._decode import decode_body
from arbitrage.ingest._derive import derive
from arbitrage.simulator import Simulator
from arbitrage.stream import RecentTransactions
from arbitrage.stream._recent import MAX_KEPT_BYTES


def _stored(n: int) -> pl.DataFrame:
    records = Simulator(seed=11, start=Simulator.start_for(n)).records(n)
    return derive(decode_body(msgspec.json.encode(records), "json").frame, source="test")


def _signatures(page: list[bytes] | None) -> list[str]:
    assert page is not None
    return [msgspec.json.decode(p)["signature"] for p in page]


def test_small_batches_in_any_order_leave_the_newest_rows_newest_first() -> None:
    stored = _stored(300).sample(fraction=1.0, shuffle=True, seed=3)
    recent = RecentTransactions(capacity=100)
    newest = stored.sort(["block_time", "signature"], descending=True)["signature"].to_list()
    for start in range(0, 300, 7):
        recent.add(stored.slice(start, 7))
        seen = stored.head(start + 7).sort(["block_time", "signature"], descending=True)
        assert _signatures(recent.page(5)) == seen["signature"].head(5).to_list()
    assert len(recent) == 100
    assert _signatures(recent.page(100)) == newest[:100]


def test_batches_added_without_reads_in_between_keep_exactly_the_newest_rows() -> None:
    stored = _stored(900).sample(fraction=1.0, shuffle=True, seed=5)
    recent = RecentTransactions(capacity=100)
    start = 0
    for size in [1, 250, 37, 99, 100, 101, 12, 300]:  # merges happen inside add, at different fill levels
        recent.add(stored.slice(start, size))
        start += size
    newest = stored.sort(["block_time", "signature"], descending=True)["signature"].to_list()
    assert len(recent) == 100
    assert _signatures(recent.page(100)) == newest[:100]


def test_rows_of_one_block_time_are_cut_down_to_capacity_by_signature() -> None:
    """Solana block times are whole seconds: a batch can hold thousands of rows of one time."""
    stored = _stored(600)
    stored = stored.with_columns(pl.lit(stored["block_time"][0]).alias("block_time"))
    recent = RecentTransactions(capacity=100)
    for start in range(0, 600, 150):
        recent.add(stored.slice(start, 150))
        assert sum(len(frame) for frame in recent._added) < 2 * recent.capacity
    assert _signatures(recent.page(100)) == sorted(stored["signature"].to_list(), reverse=True)[:100]


def test_a_page_past_what_is_kept_is_not_answered_from_memory() -> None:
    stored = _stored(60)
    recent = RecentTransactions(capacity=50)
    recent.add(stored)
    oldest_kept = recent.page(50)
    assert oldest_kept is not None
    last = msgspec.json.decode(oldest_kept[-1])
    row = stored.filter(pl.col("signature") == last["signature"]).row(0, named=True)
    assert recent.page(10, (row["block_time"], row["signature"])) is None


def test_pages_kept_between_stores_stay_within_a_memory_bound() -> None:
    """Each distinct (limit, cursor) read between two stores keeps its rendered page until the next store:
    256 reads of up to 300 rows kept 90 MiB (of 1,000-row pages they would keep over 1 GiB)."""
    recent = RecentTransactions(capacity=300)
    recent.add(_stored(300))
    tracemalloc.start()
    try:
        for limit in range(45, 301):
            assert recent.page(limit) is not None
        retained, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert retained < MAX_KEPT_BYTES + 8 * 2**20, f"{retained / 2**20:.0f} MiB kept"


def test_with_no_capacity_it_keeps_nothing_and_answers_no_page() -> None:
    """What a process on a shared ClickHouse server gets: other processes store rows it never sees."""
    recent = RecentTransactions(0)
    recent.add(_stored(5))
    assert len(recent) == 0
    assert recent.page(10) is None
