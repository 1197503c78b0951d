"""A batch of stored rows renders its events only when someone needs them."""

from __future__ import annotations

import msgspec
import polars as pl
import pytest

from arbitrage.features import FeatureEngine
from arbitrage.ingest._decode import decode_body
from arbitrage.ingest._derive import derive
from arbitrage.risk import score_risk
from arbitrage.simulator import Simulator
from arbitrage.stream import POSITION_COLUMN, LiveBatch, Missing, StreamFilter, StreamHub
from arbitrage.stream._events import events_from_frame

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def stored() -> pl.DataFrame:
    records = Simulator(seed=7, start=Simulator.start_for(50)).records(50)
    frame = derive(decode_body(msgspec.json.encode(records), "json").frame, source="test")
    # Positions arrive shuffled relative to rows here, as after a multi-batch group.
    return frame.with_columns(pl.Series(POSITION_COLUMN, range(150, 100, -1), pl.UInt64))


def test_a_batch_of_rows_knows_its_size_and_positions_without_rendering(stored: pl.DataFrame) -> None:
    batch = LiveBatch.of_rows(stored)
    assert (len(batch), batch.first, batch.last) == (50, 101, 150)
    assert batch._events is None  # nothing rendered yet


async def test_ready_renders_the_same_events_in_position_order(stored: pl.DataFrame) -> None:
    batch = await LiveBatch.of_rows(stored).ready()
    expected = events_from_frame(stored)
    assert [e.position for e in batch.events] == list(range(101, 151))
    assert [e.payload for e in batch.events] == [e.payload for e in expected]
    assert len(batch) == 50


@pytest.mark.parametrize("rendered", [False, True])
async def test_after_keeps_only_later_positions(stored: pl.DataFrame, rendered: bool) -> None:
    batch = LiveBatch.of_rows(stored)
    if rendered:
        await batch.ready()
    later = batch.after(140)
    assert (len(later), later.first, later.last) == (10, 141, 150)
    assert [e.position for e in later.events] == list(range(141, 151))
    assert batch.after(100) is batch


async def test_the_hub_buffers_unrendered_batches_and_replays_them(stored: pl.DataFrame) -> None:
    hub = StreamHub(replay_events=100)
    hub.start_at(100)
    hub.accept(LiveBatch.of_rows(stored))
    assert hub.position == 150
    (replayed,) = hub.replay(145)
    assert isinstance(replayed, LiveBatch)
    assert [e.position for e in replayed.events] == list(range(146, 151))
    subscription = hub.subscribe(StreamFilter(), 1_000)
    hub.accept(LiveBatch.of_rows(stored.with_columns(pl.col(POSITION_COLUMN) + 50)))
    items = await subscription.next()
    assert items is not None
    assert sum(len(batch) for batch, _ in items) == 50


@pytest.mark.parametrize(
    "fields",
    [
        ("signature", "net_profit_sol"),
        ("risk", "signature", "block_time"),
        ("features", "route", "stream_position"),
        ("no_such_field",),
        ("legs", "no_such_field", "hops"),
    ],
)
async def test_field_selections_rendered_from_rows_match_projected_payloads(
    stored: pl.DataFrame, fields: tuple[str, ...]
) -> None:
    enriched = score_risk(FeatureEngine().process(stored.drop(POSITION_COLUMN))).with_columns(stored[POSITION_COLUMN])
    from_rows = await LiveBatch.of_rows(enriched).ready()
    from_events = LiveBatch(from_rows.events)  # as a warehouse replay arrives: events only
    rows_frames = from_rows.sse_frames(fields)
    event_frames = from_events.sse_frames(fields)
    assert len(rows_frames) == len(event_frames) == 50
    for left, right in zip(rows_frames, event_frames, strict=True):
        head_left, _, data_left = left.partition(b"data: ")
        head_right, _, data_right = right.partition(b"data: ")
        assert head_left == head_right
        assert msgspec.json.decode(data_left) == msgspec.json.decode(data_right)


async def test_a_batch_prepared_for_field_only_sse_clients_renders_no_whole_events(stored: pl.DataFrame) -> None:
    hub = StreamHub()
    hub.subscribe(StreamFilter(), 1_000, sse_fields=("signature", "net_profit_sol"))
    renders = hub.renders()
    assert (renders.events, renders.sse_fields) == (False, {("signature", "net_profit_sol")})
    batch = LiveBatch.of_rows(stored)
    await batch.prepare(renders)
    assert batch._events is None
    expected = await LiveBatch.of_rows(stored).ready()
    assert (
        batch.sse_chunk(("signature", "net_profit_sol")).split(b"\n", 1)[1]
        == expected.sse_chunk(("signature", "net_profit_sol")).split(b"\n", 1)[1]
    )


@pytest.mark.parametrize(
    ("filters", "sse_fields"),
    [(StreamFilter(), None), (StreamFilter(dex="raydium_amm"), ("signature",))],
    ids=["whole-transactions", "filtered"],
)
async def test_a_batch_is_rendered_whole_when_a_subscriber_reads_whole_events(
    stored: pl.DataFrame, filters: StreamFilter, sse_fields: tuple[str, ...] | None
) -> None:
    hub = StreamHub()
    hub.subscribe(filters, 1_000, sse_fields=sse_fields)
    batch = LiveBatch.of_rows(stored)
    await batch.prepare(hub.renders())
    assert batch._events is not None


async def test_the_replay_names_the_ranges_its_buffer_lacks(stored: pl.DataFrame) -> None:
    """Older than the buffer, and the gaps the hub moved past: a resuming client reads them from the warehouse."""
    hub = StreamHub(replay_events=1_000)
    hub.start_at(100)
    hub.accept(LiveBatch.of_rows(stored))  # 101-150
    hub.resync()  # as after a Redis outage: 151-199 went by unseen
    hub.accept(LiveBatch.of_rows(stored.with_columns(pl.col(POSITION_COLUMN) + 99)))  # 200-249
    pieces = hub.replay(120)
    assert [(p.first, p.last) if isinstance(p, LiveBatch) else p for p in pieces] == [
        (121, 150),
        Missing(150, 200),
        (200, 249),
    ]
    assert hub.replay(10)[0] == Missing(10, 101)
