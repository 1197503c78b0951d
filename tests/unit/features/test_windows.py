"""The numpy window primitives against brute force and polars' own rolling windows."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbitrage.features import _windows
from arbitrage.features._windows import GroupSums, SortedGroups, prefix_sums, window_quantiles, window_sums

events = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40), st.integers(0, 1_000)), min_size=1, max_size=60)


FAR = 2**63 - 1_000
"""Times this far apart (a slot of 2^63 - 1 beside today's) cannot be packed into keys as they are."""


@settings(max_examples=40, deadline=None)
@given(events=events, width=st.integers(1, 15), far=st.booleans())
def test_window_starts_and_sums_hold_the_groups_earlier_rows_within_the_width(
    events: list[tuple[int, int, int]], width: int, far: bool
) -> None:
    if far:  # the later times jump to the end of the 64-bit range
        events = [(g, t + FAR if t > 20 else t, v) for g, t, v in events]
    codes = np.array([g for g, _, _ in events], dtype=np.int64)
    time = np.array([t for _, t, _ in events], dtype=np.int64)
    values = np.array([float(v) for _, _, v in events])
    groups = SortedGroups(codes, time, time_follows_order=False, max_width=width)
    start = groups.window_start(width)
    sums, counts = np.empty(groups.size), np.empty(groups.size, dtype=np.int64)
    sums[groups.order] = window_sums(prefix_sums(values[groups.order]), start)
    counts[groups.order] = np.arange(groups.size) - start
    for i, (g, t, _) in enumerate(events):
        earlier = [
            j for j, (h, u, _) in enumerate(events) if h == g and t - width < u <= t and (u < t or (u == t and j < i))
        ]
        assert counts[i] == len(earlier)
        assert sums[i] == pytest.approx(sum(values[j] for j in earlier))


@settings(max_examples=40, deadline=None)
@given(
    slots=st.lists(st.integers(0, 6), min_size=1, max_size=50).map(sorted),
    data=st.data(),
)
def test_window_quantiles_equal_polars_rolling_quantiles_over_the_same_windows(
    slots: list[int], data: st.DataObject
) -> None:
    fees = data.draw(st.lists(st.integers(0, 50), min_size=len(slots), max_size=len(slots)))
    slot = np.array(slots, dtype=np.int64)
    groups = SortedGroups(None, slot, time_follows_order=True, max_width=3)
    start = groups.window_start(3)
    (low,), (high,), ((p50,), (p90,)) = window_quantiles(np.array([fees], dtype=np.float64), start, (0.5, 0.9))
    here = np.arange(slot.shape[0])
    sub = here - groups.run_start(slot)
    s2 = 2 * (int(sub.max()) + 1)
    window = f"{3 * s2 - s2 // 2}i"
    frame = pl.DataFrame({"key": slot * s2 + sub, "fee": np.array(fees, dtype=np.float64)})
    expected = frame.select(
        pl.col("fee").rolling_min_by("key", window, closed="left").alias("low"),
        pl.col("fee").rolling_max_by("key", window, closed="left").alias("high"),
        pl.col("fee")
        .rolling_quantile_by("key", window, quantile=0.5, interpolation="linear", closed="left")
        .alias("p50"),
        pl.col("fee")
        .rolling_quantile_by("key", window, quantile=0.9, interpolation="linear", closed="left")
        .alias("p90"),
    )
    for name, actual in (("low", low), ("high", high), ("p50", p50), ("p90", p90)):
        wanted = expected.get_column(name).fill_null(np.nan).to_numpy()
        assert np.allclose(actual, wanted, rtol=1e-12, atol=0.0, equal_nan=True), name


def _sorted_window_quantiles(values: np.ndarray, start: np.ndarray, q: float) -> np.ndarray:
    """The definition: sort each window (NaN last) and interpolate linearly at q (m - 1)."""
    out = np.full(values.shape[0], np.nan)
    for i in range(values.shape[0]):
        window = np.sort(values[start[i] : i])
        if window.shape[0]:
            at = (window.shape[0] - 1) * q
            below, above = int(at), math.ceil(at)
            out[i] = window[below] if below == above else (at - below) * (window[above] - window[below]) + window[below]
    return out


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.one_of(st.integers(0, 9).map(float), st.just(math.nan), st.floats(-1e9, 1e9)), max_size=300),
    width=st.integers(1, 400),
    data=st.data(),
)
def test_window_quantiles_equal_sorting_each_window_for_the_rows_asked(
    values: list[float], width: int, data: st.DataObject
) -> None:
    """Ties, NaN (sorted last, as np.sort does) and windows far longer than a slot's rows."""
    n = len(values)
    steps = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    start = np.maximum.accumulate(np.maximum(0, np.arange(n) - np.cumsum(steps) % width)).astype(np.int64)
    start = np.minimum(start, np.arange(n))
    at = np.array(sorted(data.draw(st.sets(st.integers(0, max(n - 1, 0)), max_size=n))) if n else [], dtype=np.int64)
    series = np.array([values], dtype=np.float64)
    asked = np.zeros(n, dtype=bool)
    asked[at] = True
    for sort_up_to in (0, 10**9):  # rank queries, then sorting each window
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_windows, "_SORT_WINDOWS_UP_TO", sort_up_to)
            (low,), (high,), ((p50,), (p90,)) = window_quantiles(series, start, (0.5, 0.9), at=at)
        for actual, q in ((low, 0.0), (high, 1.0), (p50, 0.5), (p90, 0.9)):
            expected = _sorted_window_quantiles(series[0], start, q)
            assert np.array_equal(actual[asked], expected[asked], equal_nan=True), (sort_up_to, q)
            assert np.isnan(actual[~asked]).all()


@settings(max_examples=40, deadline=None)
@given(events=events, width=st.integers(1, 15), exponents=st.lists(st.integers(-12, 12), min_size=4, max_size=4))
def test_group_window_sums_keep_the_digits_of_small_groups_beside_large_ones(
    events: list[tuple[int, int, int]], width: int, exponents: list[int]
) -> None:
    """Each group's values at a magnitude of their own, from 1e-12 to 1e12."""
    codes = np.array([g for g, _, _ in events], dtype=np.int64)
    time = np.array([t for _, t, _ in events], dtype=np.int64)
    values = np.array([(v + 1) * 10.0 ** exponents[g] for g, _, v in events])
    groups = SortedGroups(codes, time, time_follows_order=False, max_width=width)
    at = np.arange(groups.size)
    (sums,) = GroupSums(values[groups.order][None, :], groups.first).over(groups.window_start(width), at)
    sorted_values, group = values[groups.order], groups.group
    for i in range(groups.size):
        expected = math.fsum(
            sorted_values[j] for j in range(i) if group[j] == group[i] and groups.time[j] > groups.time[i] - width
        )
        assert sums[i] == pytest.approx(expected, rel=1e-12, abs=0.0)
