"""Point-in-time windows over many groups at once, as sorted numpy arrays.

Rows come in processing order (`seq`). A stable sort by (group, time) puts each
group's rows together in point-in-time order, ties kept in `seq` order. A row's
window over (t - W, t] of earlier rows is then the run of positions `[lo, i)` just
before it: `lo` comes from one `searchsorted` on a key that packs the group and the
time, counts are `i - lo`, and sums are differences of prefix sums. Each group's
values are scaled by a power of two of their own (`GroupSums`), so that a window's
rounding does not grow with other groups' magnitudes; prefix sums of values whose
windows can be tiny next to the running total are accumulated in extended precision,
so that a window's sum barely depends on how much came before it in the batch.
Streaming and backfill agree within the tests' 1e-9 relative on their data, not to the
bit.
"""

from __future__ import annotations

import itertools
from typing import Final

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from arbitrage.errors import ArbitrageError

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

_MAX_KEY: Final = 2**62


class SortedGroups:
    """Rows sorted by (group code, time), ties in their given order.

    Attributes:
        order: the given positions in sorted order (`sorted = given[order]`).
        time: the time of each sorted row.
        group: the dense group index (0, 1, ...) of each sorted row.
        key: group and time packed so that one group's times stay apart from another's.
    """

    def __init__(self, codes: Ints | None, time: Ints, *, time_follows_order: bool, max_width: int) -> None:
        """Sort; `time_follows_order` says time never decreases in the given order; no codes: one group."""
        n = time.shape[0]
        if codes is None:
            self.order = np.arange(n) if time_follows_order else np.argsort(time, kind="stable")
        elif time_follows_order:
            self.order = stable_argsort(codes)
        else:
            self.order = np.lexsort((time, codes))
        self.time = time[self.order]
        first = np.zeros(n, dtype=np.bool_)
        if n:
            first[0] = True
            if codes is not None:
                sorted_codes = codes[self.order]
                np.not_equal(sorted_codes[1:], sorted_codes[:-1], out=first[1:])
        self.first = first
        self.group = np.cumsum(first, dtype=np.int64) - 1
        if n == 0:
            self.key = np.zeros(0, dtype=np.int64)
            return
        offset = self.time - int(self.time.min())
        span = int(offset.max()) + max_width + 1
        groups = int(self.group[-1]) + 1
        if groups * span >= _MAX_KEY:
            offset = _closed_gaps(self.time, max_width)
            span = int(offset[-1]) + max_width + 1
            if groups * span >= _MAX_KEY:
                raise ArbitrageError("too many rows and groups for point-in-time windows; split the batch")
        self.key = self.group * span + offset

    @property
    def size(self) -> int:
        """Number of rows."""
        return int(self.order.shape[0])

    def window_start(self, width: int, at: Ints | None = None) -> Ints:
        """First position of each row's window (of the rows `at` when given): the group's rows with time in (t - width, t]."""
        keys = self.key if at is None else self.key[at]
        return np.searchsorted(self.key, keys - width, side="right").astype(np.int64)

    def run_start(self, values: Ints | None = None) -> Ints:
        """First position of each row's run of equal (group, `values`), e.g. its slot or minute."""
        starts = self.first.copy()
        if values is not None and self.size:
            starts[1:] |= values[1:] != values[:-1]
        return np.maximum.accumulate(np.where(starts, np.arange(self.size, dtype=np.int64), 0))


def _closed_gaps(time: Ints, max_width: int) -> Ints:
    """Sorted times with every gap wider than `max_width` narrowed to `max_width + 1`.

    No window reaches across such a gap either way, so windows stay exactly the same, while
    the packed keys stay small however far apart the times are (a slot of 2^63 - 1 next to
    today's). Gaps between groups are narrowed too: the group part of the key keeps them apart.
    """
    steps = np.clip(np.diff(time), 0, max_width + 1)
    return np.concatenate(([0], np.cumsum(steps, dtype=np.int64)))


def stable_argsort(codes: Ints) -> Ints:
    """Stable argsort of non-negative integer codes (radix sort when they fit 16 bits)."""
    if codes.shape[0] and int(codes.max()) < 2**16:
        return np.argsort(codes.astype(np.uint16), kind="stable")
    return np.argsort(codes, kind="stable")


def prefix_sums(values: Floats, *, extended: bool = True) -> npt.NDArray[np.floating]:
    """Exclusive prefix sums along the last axis (one more column than `values`).

    `extended` accumulates in long double, for values whose windows can be tiny next to
    the running total (squared log returns); plain float64 suffices for integer counts
    and for sums only ever read relative to their own size (volumes).
    """
    dtype = np.longdouble if extended else np.float64
    shape = (*values.shape[:-1], values.shape[-1] + 1)
    sums = np.zeros(shape, dtype=dtype)
    np.cumsum(values, axis=-1, dtype=dtype, out=sums[..., 1:])
    return sums


def window_sums(sums: npt.NDArray[np.floating], start: Ints, at: Ints | None = None) -> Floats:
    """Sums over positions `[start, i)` for each position i (each of `at` when given), from `prefix_sums`."""
    ends = sums[..., :-1] if at is None else sums[..., at]
    return (ends - sums[..., start]).astype(np.float64, copy=False)


class GroupSums:
    """Window sums of sorted rows' values, each group's values scaled by a power of two of its own.

    Plain prefix sums run through every group before a row's, so a window's rounding error
    scales with the other groups' totals: a pair priced at 1e-6 after one whose price x size
    is 1e12 got a VWAP of 0. Scaled so that each group's largest |value| is below 1 (exact:
    powers of two), a window's error is relative to its own group's magnitude instead.
    """

    def __init__(self, values: Floats, first: Bools, *, extended: bool = True) -> None:
        """`values` is (series, rows) in sorted order; `first` marks each group's first row."""
        self.scale = _group_scales(values, first)
        self.sums = prefix_sums(values / self.scale, extended=extended)

    def over(self, start: Ints, at: Ints, series: slice | int = slice(None)) -> Floats:
        """Sums over positions `[start, i)` for each position i of `at`, of the chosen series."""
        return window_sums(self.sums[series], start, at) * self.scale[series][..., at]


def _group_scales(values: Floats, first: Bools) -> Floats:
    """Per row, the power of two just above its group's largest finite |value| (1 for a group of zeros)."""
    starts = np.flatnonzero(first)
    if starts.shape[0] == 0:
        return np.ones_like(values)
    with np.errstate(invalid="ignore"):
        peak = np.fmax.reduceat(np.abs(values), starts, axis=-1)
    peak = np.where(np.isfinite(peak) & (peak > 0), peak, 1.0)
    scale = np.ldexp(1.0, np.frexp(peak)[1])
    return scale[..., np.cumsum(first) - 1]


_SORT_WINDOWS_UP_TO: Final = 192
"""Mean window length up to which sorting every window beats rank queries (about even at 200 rows)."""


def window_quantiles(
    values: npt.NDArray[np.float64], start: Ints, quantiles: tuple[float, ...], at: Ints | None = None
) -> tuple[Floats, Floats, list[Floats]]:
    """Min, max and linearly interpolated quantiles over positions `[start, i)`, per row of `values`.

    `values` is (series, rows); each result has that shape. Only the rows `at` (all by
    default) are computed, the others are NaN, as is an empty window. Short windows are
    sorted; when they hold more rows on average (a dense feed: thousands of transactions in
    the last slots), each order statistic is a range query on a wavelet matrix instead,
    O(log rows) per row whatever the window's length. Order as `np.sort` (NaN last);
    interpolation as polars' `linear`: at index q (m - 1), lower + (q (m - 1) - floor) x (upper - lower).
    """
    rows = np.arange(values.shape[-1], dtype=np.int64) if at is None else at
    rows = rows[rows > start[rows]]
    lo, hi = start[rows], rows
    last = hi - lo - 1
    positions = [np.zeros_like(last), last]
    weights: list[Floats] = []
    for q in quantiles:
        index = last * q
        below = np.floor(index).astype(np.int64)
        positions += [below, np.ceil(index).astype(np.int64)]
        weights.append(index - below)
    ks = np.stack(positions)
    by_sorting = rows.shape[0] == 0 or float((last + 1).mean()) <= _SORT_WINDOWS_UP_TO
    stats = np.full((2 + len(quantiles), *values.shape), np.nan)
    for series, series_values in enumerate(values):
        found = (_kth_by_sorting if by_sorting else _kth_by_rank_queries)(series_values, lo, hi, ks)
        stats[0, series, rows], stats[1, series, rows] = found[0], found[1]
        for k, weight in enumerate(weights):
            lower, upper = found[2 + 2 * k], found[3 + 2 * k]
            with np.errstate(invalid="ignore"):
                stats[2 + k, series, rows] = np.where(
                    ks[2 + 2 * k] == ks[3 + 2 * k], lower, weight * (upper - lower) + lower
                )
    low, high, *quantile_values = stats
    return low, high, list(quantile_values)


def _kth_by_sorting(values: Floats, lo: Ints, hi: Ints, ks: Ints) -> Floats:
    """`ks[j, r]`-th smallest of `values[lo[r]:hi[r]]`: rows grouped by window length, each group sorted as one matrix.

    A group's windows are rows of a strided view, copied whole (an index per element cost 8x
    the gather), and its rows share their `ks`, which depend on the length only.
    """
    length = hi - lo
    by_length = stable_argsort(length)
    sorted_length = length[by_length]
    found = np.empty(ks.shape)
    bounds = np.flatnonzero(np.diff(sorted_length, prepend=-1, append=-1))
    for first, end in itertools.pairwise(bounds):
        group = by_length[first:end]
        windows = sliding_window_view(values, int(sorted_length[first]))[lo[group]]
        windows.sort(axis=1)
        found[:, group] = windows[:, ks[:, group[0]]].T
    return found


def _kth_by_rank_queries(values: Floats, lo: Ints, hi: Ints, ks: Ints) -> Floats:
    """As `_kth_by_sorting`, from one wavelet matrix of the values' ranks (ties in position order).

    The matrix spans only the positions some window reaches, not every row before them.
    """
    first = int(lo.min())
    reached = values[first : int(hi.max())]
    order = np.argsort(reached, kind="stable")
    ranks = np.empty(reached.shape[0], dtype=np.int64)
    ranks[order] = np.arange(reached.shape[0], dtype=np.int64)
    count = ks.shape[0]
    found = _WaveletMatrix(ranks).kth(np.tile(lo - first, count), np.tile(hi - first, count), ks.reshape(-1))
    return reached[order][found].reshape(ks.shape)


class _WaveletMatrix:
    """The k-th smallest of any range of a permutation of 0..n-1, for many ranges at once.

    One level per bit, most significant first: each level keeps, for every prefix, how many
    of its values have that bit clear, then stably moves the clear ones before the set ones.
    A query walks down the levels, narrowing its range to the side holding its k-th value.
    """

    def __init__(self, ranks: Ints) -> None:
        n = ranks.shape[0]
        self.bits = list(reversed(range(max(1, (n - 1).bit_length()))))
        self.clear_before: list[Ints] = []
        current = ranks
        for bit in self.bits:
            clear = ((current >> bit) & 1) == 0
            counts = np.zeros(n + 1, dtype=np.int32)
            np.cumsum(clear, out=counts[1:])
            self.clear_before.append(counts)
            current = np.concatenate([current[clear], current[~clear]])

    def kth(self, lo: Ints, hi: Ints, k: Ints) -> Ints:
        """The k-th smallest (0-based) value of positions [lo, hi), per query."""
        lo, hi, k = lo.astype(np.int32), hi.astype(np.int32), k.astype(np.int32)
        found = np.zeros(k.shape, dtype=np.int64)
        for bit, clear_before in zip(self.bits, self.clear_before, strict=True):
            clear_lo, clear_hi = clear_before[lo], clear_before[hi]
            clear = clear_hi - clear_lo
            is_set = k >= clear
            found[is_set] += 1 << bit
            k -= clear * is_set
            set_side = clear_before[-1] - clear_lo
            lo = np.where(is_set, lo + set_side, clear_lo)
            hi = np.where(is_set, hi + set_side + clear_lo - clear_hi, clear_hi)
        return found
