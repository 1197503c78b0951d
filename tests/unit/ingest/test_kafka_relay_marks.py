"""The relay's progress: `through` never passes a position still on its way, and `also` names what was published above it."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from arbitrage.ingest import IngestService
from arbitrage.ingest._unpublished import UnpublishedPositions
from arbitrage.ingest.kafka import DerivedRelay, KafkaOptions, RelayProgress
from arbitrage.ingest.kafka._relay import _runs, _Waiting
from arbitrage.storage import EmbeddedWarehouse
from arbitrage.stream import RecentTransactions

pytestmark = pytest.mark.anyio


class _Highest:
    """The highest position handed out, moved by the test."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __call__(self) -> int:
        return self.value


def _relay(highest: _Highest, data_dir: Path | None = None, **options: int) -> DerivedRelay:
    # The warehouse is never opened: the bookkeeping under test reads none.
    ingest = IngestService(EmbeddedWarehouse("/nonexistent"), RecentTransactions(0))
    kafka = KafkaOptions(bootstrap_servers="127.0.0.1:1", instance="box-8080")
    return DerivedRelay(ingest, kafka, highest_position=highest, data_dir=data_dir, **options)


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
    highest = _Highest(0)
    relay = _relay(highest)
    highest.value = 200
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


def test_a_page_read_back_moves_through_to_the_last_position_read_and_keeps_what_it_still_skips() -> None:
    highest = _Highest(0)
    relay = _relay(highest)
    highest.value = 30_000
    # A predecessor published 20001-30000 out of order; this page read 1-19999.
    reading = _Waiting([(1, 30_000)], None, 0, skip=[(20_001, 30_000)])
    relay._waiting = [reading]
    assert relay._marks([], reading, 19_999, [(1, 19_999)]) == (19_999, [(20_001, 30_000)])


async def test_batches_stored_while_a_read_back_runs_do_not_join_it() -> None:
    relay = _relay(_Highest(0), max_buffered_rows=0)  # every batch waits as positions
    await relay._stored(_frame(1, 100))
    (reading,) = relay._waiting
    relay._reading = reading
    await relay._stored(_frame(101, 200))
    assert [w.runs for w in relay._waiting] == [[(1, 100)], [(101, 200)]]
    relay._reading = None
    await relay._stored(_frame(201, 300))  # joins the entry before it, which no read-back holds
    assert [w.runs for w in relay._waiting] == [[(1, 100)], [(101, 300)]]


def test_a_restart_reads_back_what_its_predecessor_left_skipping_what_it_published_out_of_order(tmp_path: Path) -> None:
    _relay(_Highest(0), tmp_path)
    relay = _relay(_Highest(500), tmp_path)
    assert relay._marks_here is not None
    warehouse = relay._marks_here.warehouse
    assert relay._resume_from(RelayProgress(through=100, also=[(301, 400)], warehouse=warehouse))
    (missed,) = relay._waiting
    assert (missed.runs, missed.skip, missed.frame) == ([(101, 500)], [(301, 400)], None)
    assert relay._through == 100


def test_rows_stored_before_the_relay_ever_reached_its_broker_are_read_back(tmp_path: Path) -> None:
    _relay(_Highest(40), tmp_path)  # a first start whose broker never answered: no progress record
    relay = _relay(_Highest(900), tmp_path)
    assert not relay._resume_from(None)  # so a first record is written
    (missed,) = relay._waiting
    assert missed.runs == [(41, 900)]


def test_without_a_progress_record_the_data_dirs_own_account_says_where_to_go_on(tmp_path: Path) -> None:
    first = _relay(_Highest(40), tmp_path)
    first._account(700)  # committed up to 700; the topic's retention later deleted the record
    relay = _relay(_Highest(900), tmp_path)
    assert not relay._resume_from(None)
    (missed,) = relay._waiting
    assert missed.runs == [(701, 900)]


def test_the_progress_of_another_data_dir_under_the_same_id_is_not_taken_for_this_ones(tmp_path: Path) -> None:
    relay = _relay(_Highest(1_000), tmp_path)  # a fresh data dir, rows 1-1000 stored by `arbitrage ingest`
    assert not relay._resume_from(RelayProgress(through=500, warehouse="another"))
    assert relay._waiting == [] and relay._through == 1_000  # not 501-1000 only: what it had, it had before


def test_no_read_back_on_a_shared_warehouse() -> None:
    relay = _relay(_Highest(500))
    assert relay._resume_from(RelayProgress(through=100))
    assert relay._waiting == [] and relay._through == 500


async def test_health_says_when_rows_wait_too_long() -> None:
    relay = _relay(_Highest(0))
    relay.error = None
    await relay._stored(_frame(1, 10))
    assert (await relay.health())["status"] == "healthy"
    relay._waiting[0].arrived -= 60
    health = await relay.health()
    assert health["status"] == "degraded" and "waited" in health["error"]


def test_runs_of_positions() -> None:
    assert _runs(pl.Series([7, 3, 4, 5, 9, 10])) == [(3, 5), (7, 7), (9, 10)]
