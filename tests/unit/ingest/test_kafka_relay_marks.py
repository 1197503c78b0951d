"""The relay's progress: `through` never passes a position still on its way, and `also` names what was published above it."""

from __future__ import annotations

import polars as pl

from arbitrage.ingest import IngestService
from arbitrage.ingest._unpublished import UnpublishedPositions
from arbitrage.ingest.kafka import DerivedRelay, KafkaOptions, RelayProgress
from arbitrage.ingest.kafka._relay import _runs, _Waiting
from arbitrage.storage import EmbeddedWarehouse
from arbitrage.stream import RecentTransactions


def _relay(highest: list[int], *, started_at: int = 0) -> DerivedRelay:
    """A relay started when `started_at` was the highest position; `highest[0]` is the highest now."""
    # The warehouse is never opened: the bookkeeping under test reads none.
    ingest = IngestService(EmbeddedWarehouse("/nonexistent"), RecentTransactions(0))
    now = highest[0]
    highest[0] = started_at
    relay = DerivedRelay(
        ingest, KafkaOptions(bootstrap_servers="127.0.0.1:1"), highest_position=lambda: highest[0], recover=True
    )
    highest[0] = now
    return relay


def _frame(first: int, last: int) -> pl.DataFrame:
    return pl.DataFrame({"stream_position": pl.Series(range(first, last + 1), dtype=pl.UInt64)})


def test_positions_leave_the_ledger_once_every_row_of_their_reservation_is_published() -> None:
    ledger = UnpublishedPositions()
    ledger.reserved(1, 6)
    ledger.reserved(7, 9)
    ledger.published(pl.Series([1, 3, 5]))  # a caller's rows need not be consecutive
    assert ledger.lowest() == 1
    ledger.published(pl.Series([2, 4, 6]))
    assert ledger.lowest() == 7
    ledger.abandoned(7, 9)
    assert ledger.lowest() is None


def test_a_batch_published_before_an_earlier_one_goes_into_also_until_the_earlier_one_is_published() -> None:
    highest = [200]
    relay = _relay(highest)
    relay.ingest.unpublished.reserved(1, 100)  # stored, its caller not yet at the listeners
    later = _Waiting([(101, 200)], _frame(101, 200), 100)
    relay._waiting = [later]
    through, also = relay._marks([later], None, -1, later.runs)
    assert (through, also) == (0, [(101, 200)])
    relay._through, relay._also, relay._waiting = through, also, []

    relay.ingest.unpublished.published(pl.Series(range(1, 101)))
    earlier = _Waiting([(1, 100)], _frame(1, 100), 100)
    relay._waiting = [earlier]
    assert relay._marks([earlier], None, -1, earlier.runs) == (200, [])


def test_a_page_read_back_moves_through_to_the_last_position_read() -> None:
    relay = _relay([5_000])
    spilled = _Waiting([(1, 5_000)], None, 5_000)
    relay._waiting = [spilled]
    assert relay._marks([], spilled, 1_999, [(1, 1_999)]) == (1_999, [])


def test_a_restart_reads_back_what_its_predecessor_left_skipping_what_it_published_out_of_order() -> None:
    relay = _relay([500], started_at=500)
    relay._resume_from(RelayProgress(through=100, also=[(301, 400)]))
    (missed,) = relay._waiting
    assert (missed.runs, missed.skip, missed.frame) == ([(101, 500)], [(301, 400)], None)
    assert relay._through == 100


def test_no_progress_means_a_first_run_that_publishes_only_what_is_stored_after_it() -> None:
    relay = _relay([500], started_at=500)
    relay._resume_from(None)
    assert relay._waiting == [] and relay._through == 500


def test_runs_of_positions() -> None:
    assert _runs(pl.Series([7, 3, 4, 5, 9, 10])) == [(3, 5), (7, 7), (9, 10)]
