"""Point-in-time rolling windows over many groups in one pass, without `over()`.

A frame sorted by (group columns, time, seq) gets an Int64 `_key` that packs the
group, the time and the row's rank among equal times. A `rolling_*_by("_key",
closed="left")` window of `window_width(W, s2)` then holds exactly the group's
earlier rows with time in (t - W, t]: rows later in the same group and time have a
larger key, and other groups are further apart than any window.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from arbitrage.errors import ArbitrageError

KEY = "_key"
_MAX_KEY = 2**62


def add_window_key(frame: pl.DataFrame, groups: Sequence[str], time: str, max_width: int) -> tuple[pl.DataFrame, int]:
    """Add `_key` and `_gid` to a frame already sorted by (groups, time, seq).

    Returns the frame and the key's time multiplier `s2` that `window_width` needs.
    """
    if frame.height == 0:
        return frame.with_columns(pl.lit(0, pl.Int64).alias(KEY), pl.lit(0, pl.Int64).alias("_gid")), 2
    changed = [pl.col(g).ne_missing(pl.col(g).shift(1)) for g in groups]
    new_group = pl.any_horizontal(changed) if changed else pl.int_range(pl.len()) == 0
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    run_start = new_group | pl.col(time).ne_missing(pl.col(time).shift(1))
    keyed = frame.with_columns(
        new_group.cum_sum().cast(pl.Int64).alias("_gid"),
        (row - pl.when(run_start).then(row).forward_fill()).alias("_sub"),
    )
    bounds = keyed.select(
        pl.col("_sub").max().alias("sub"),
        pl.col(time).min().alias("lo"),
        pl.col(time).max().alias("hi"),
        pl.col("_gid").max().alias("groups"),
    ).row(0)
    s2 = 2 * (int(bounds[0]) + 1)
    lo, hi, groups_n = int(bounds[1]), int(bounds[2]), int(bounds[3])
    span = hi - lo + max_width + 1
    if (groups_n + 1) * span * s2 >= _MAX_KEY:
        raise ArbitrageError("batch spans too long a time for point-in-time windows; split it")
    keyed = keyed.with_columns(
        ((pl.col("_gid") * span + (pl.col(time).cast(pl.Int64) - lo)) * s2 + pl.col("_sub")).alias(KEY)
    ).drop("_sub")
    return keyed, s2


def window_width(width: int, s2: int) -> str:
    """The `window_size` for a window of `width` time units over `_key`."""
    return f"{width * s2 - s2 // 2}i"


def window_sum(value: pl.Expr, width: int, s2: int) -> pl.Expr:
    """Sum of `value` over the group's earlier rows with time in (t - width, t]."""
    return value.rolling_sum_by(KEY, window_size=window_width(width, s2), closed="left")


def same_group_prev(column: str, k: int = 1) -> pl.Expr:
    """`column` of the k-th earlier row of the same group, else null."""
    return pl.when(pl.col("_gid").shift(k) == pl.col("_gid")).then(pl.col(column).shift(k))
