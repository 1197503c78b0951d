"""Point-in-time, streaming = backfill, warm start from history, and late-row rebuilds."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from functools import cache
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbitrage.features import FEATURE_NAMES, LATE_COLUMN, FeatureEngine, HistoryFold
from arbitrage.features._synthetic import stored_rows

_ONE_RUN = """
import sys
import polars as pl
from arbitrage.features import FeatureEngine
from arbitrage.features._synthetic import stored_rows
data = stored_rows(30_000, seed=7, tokens=50).head(3_000)
engine = FeatureEngine()
pl.concat([engine.process(data.slice(s, 500)) for s in range(0, data.height, 500)]).write_parquet(sys.argv[1])
"""


@cache
def minutes_of_data() -> pl.DataFrame:
    """~450 rows over about an hour: exercises the 5 m tail and the minute bars."""
    return stored_rows(450, seed=7, mean_slot_gap=30.0)


@cache
def days_of_data() -> pl.DataFrame:
    """~450 rows over about two days: exercises the 24 h / 48 h bars and pruning."""
    return stored_rows(450, seed=11, mean_slot_gap=1_200.0, same_slot_share=0.5)


_BACKFILLS: dict[int, pl.DataFrame] = {}


def backfill(data: pl.DataFrame) -> pl.DataFrame:
    """One engine over all of `data` (memoised: the data sets are built once)."""
    if id(data) not in _BACKFILLS:
        _BACKFILLS[id(data)] = FeatureEngine().process(data)
    return _BACKFILLS[id(data)]


def assert_same_features(actual: pl.DataFrame, expected: pl.DataFrame) -> None:
    assert actual.height == expected.height
    for name in (*FEATURE_NAMES, "late"):
        left, right = actual.get_column(name).to_list(), expected.get_column(name).to_list()
        if actual.schema[name] == pl.Float64:
            bad = [
                i
                for i, (a, b) in enumerate(zip(left, right, strict=True))
                if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
            ]
            assert not bad, (
                f"{name} differs at rows {bad[:5]}: {[left[i] for i in bad[:3]]} vs {[right[i] for i in bad[:3]]}"
            )
        else:
            assert left == right, name


def stream(data: pl.DataFrame, cuts: list[int]) -> pl.DataFrame:
    engine = FeatureEngine()
    bounds = [0, *sorted(set(cuts)), data.height]
    return pl.concat([engine.process(data.slice(lo, hi - lo)) for lo, hi in itertools.pairwise(bounds)])


def test_appending_later_transactions_never_changes_earlier_features() -> None:
    data = minutes_of_data()
    alone = FeatureEngine().process(data.head(300))
    with_later = FeatureEngine().process(data).head(300)
    assert_same_features(alone, with_later)


cuts = st.lists(st.integers(min_value=1, max_value=449), max_size=6)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=cuts)
def test_streaming_in_any_batches_equals_one_backfill_over_minutes(cuts: list[int]) -> None:
    data = minutes_of_data()
    assert_same_features(stream(data, cuts), backfill(data))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=cuts)
def test_streaming_in_any_batches_equals_one_backfill_over_days(cuts: list[int]) -> None:
    data = days_of_data()
    assert_same_features(stream(data, cuts), backfill(data))


def test_single_row_batches_equal_one_backfill() -> None:
    data = minutes_of_data().head(60)
    assert_same_features(stream(data, list(range(1, 60))), FeatureEngine().process(data))


def test_engine_warmed_from_history_continues_exactly_like_one_that_saw_everything() -> None:
    for data in (minutes_of_data(), days_of_data()):
        split = 380
        engine = FeatureEngine.from_history(data.head(split))
        assert_same_features(engine.process(data.slice(split)), backfill(data).slice(split))


@given(sizes=st.lists(st.integers(1, 120), min_size=1, max_size=12))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_history_folded_a_piece_at_a_time_warms_the_engine_as_all_of_it_at_once(sizes: list[int]) -> None:
    """A restart reads its history in slot ranges: any cut must leave the same state as one read."""
    # Block times that step back in slot order (sources disagree on them): event times are running maxima.
    jittered = minutes_of_data().with_columns(
        pl.col("block_time") - pl.duration(seconds=pl.int_range(pl.len()) * 7_919 % 97)
    )
    for data in (minutes_of_data(), days_of_data(), jittered):
        history, rest = data.head(380), data.slice(380)
        newest_ms = history.select(pl.col("block_time").dt.epoch("ms").max()).item()
        fold = HistoryFold(newest_ms, history.get_column("slot").max())  # type: ignore[arg-type]
        start = 0
        for size in itertools.cycle(sizes):
            if start >= history.height:
                break
            fold.add(history.slice(start, size))
            start += size
        engine, whole = fold.engine(), FeatureEngine.from_history(history)
        assert engine.state.bars.height == whole.state.bars.height
        assert_same_features(engine.process(rest), whole.process(rest))


def test_warm_state_is_bounded_by_time_not_by_history_length() -> None:
    engine = FeatureEngine()
    engine.process(days_of_data())
    state = engine.state
    newest_minute = state.max_t // 60_000  # type: ignore[operator]
    assert state.tail.get_column("minute").min() >= newest_minute - 6 or state.tail.height < 60  # type: ignore[operator]
    assert state.bars.get_column("minute").min() >= newest_minute - 2 * 1_440 - 10  # type: ignore[operator]
    assert state.bars.height < days_of_data().height


def test_late_rows_are_flagged_and_a_rebuild_in_slot_order_gives_them_backfill_values() -> None:
    data = minutes_of_data().head(200)
    slots = data.get_column("slot").to_list()
    a, b = (next(i for i in range(start, 200) if slots[i] != slots[i - 1]) for start in (100, 150))
    shuffled = pl.concat([data.slice(0, a), data.slice(b), data.slice(a, b - a)])
    engine = FeatureEngine()
    on_time = engine.process(shuffled.slice(0, a + 200 - b))
    late = engine.process(shuffled.slice(a + 200 - b))
    assert not on_time.get_column("late").any()
    assert late.get_column("late").all()
    rebuilt = FeatureEngine().process(shuffled.sort("slot", maintain_order=True))
    assert_same_features(rebuilt, backfill(data))


def test_features_are_the_same_to_the_bit_from_one_process_to_the_next(tmp_path: Path) -> None:
    """Group codes order the rows whose float sums are read: they must not depend on thread timing."""
    runs = [tmp_path / f"run{n}.parquet" for n in range(2)]
    for path in runs:
        subprocess.run([sys.executable, "-c", _ONE_RUN, str(path)], check=True, cwd=Path(__file__).parents[3])
    assert pl.read_parquet(runs[0]).equals(pl.read_parquet(runs[1]))


def test_rows_after_late_rows_count_them_at_arrival_until_a_restart_as_documented() -> None:
    """On-time rows streamed after late ones see them out of slot order; a restart or rebuild puts them in order."""
    data = minutes_of_data().head(200)
    slots = data.get_column("slot").to_list()
    a = next(i for i in range(100, 200) if slots[i] != slots[i - 1])
    b = next(i for i in range(a + 3, 200) if slots[i] != slots[i - 1])
    shuffled = pl.concat([data.slice(0, a), data.slice(b, 20), data.slice(a, b - a), data.slice(b + 20)])
    arrived = a + 20 + (b - a)  # the on-time rows from here on follow the late ones
    engine = FeatureEngine()
    streamed = pl.concat([engine.process(shuffled.slice(0, a + 20)), engine.process(shuffled.slice(a + 20, b - a))])
    following = engine.process(shuffled.slice(arrived))
    assert streamed.slice(a + 20).get_column("late").all()
    assert not following.get_column("late").any()
    in_order = shuffled.slice(0, arrived).sort("slot", maintain_order=True)
    restarted = FeatureEngine.from_history(in_order).process(shuffled.slice(arrived))
    rebuilt = FeatureEngine().process(shuffled.sort("slot", maintain_order=True))
    rebuilt = shuffled.slice(arrived).select("signature").join(rebuilt, on="signature", maintain_order="left")
    assert_same_features(restarted, rebuilt)
    assert not following.select(FEATURE_NAMES).equals(restarted.select(FEATURE_NAMES))
    assert "rows after it" in LATE_COLUMN.definition
    assert "never recomputed" in LATE_COLUMN.definition  # no command rebuilds stored features
