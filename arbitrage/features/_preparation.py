"""ML preparation: temporal splits with an embargo, and scaling fitted on train only.

    prep = DataPreparation(method="robust", handle_outliers="clip", missing="median")
    split = prep.split_temporal(frame, train=0.7, val=0.15, test=0.15, gap=timedelta(minutes=5))
    params = prep.fit(split.train)              # train split only: no look-ahead
    train, val, test = (params.apply(part) for part in split)
    msgspec.json.encode(params)                 # store with the export; apply to new data later

Fitting on the train split alone is what keeps validation and test honest: their
statistics never leak into the scaler, the fill values or the category lists.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Literal

import msgspec
import polars as pl

from arbitrage.errors import ArbitrageError
from arbitrage.model import IDENTIFIER_COLUMNS

NormalizeMethod = Literal["standard", "minmax", "robust", "none"]
OutlierPolicy = Literal["clip", "none"]
MissingPolicy = Literal["zero", "mean", "median", "keep"]
Encoding = Literal["onehot", "ordinal"]

_NUMERIC = (pl.Float32, pl.Float64, pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)
_OTHER = "__other__"


class ColumnScaler(msgspec.Struct, frozen=True):
    """How one numeric column is filled, clipped and scaled: (clip(fill(x)) - center) / scale."""

    center: float
    scale: float
    lower: float | None
    upper: float | None
    fill: float | None


class PreparationParams(msgspec.Struct, frozen=True):
    """Everything fitted on the train split; serialisable with msgspec, applicable to new data."""

    method: str
    numeric: dict[str, ColumnScaler]
    categories: dict[str, list[str]]
    encoding: str

    def apply(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` with the fitted fill, clipping, scaling and encoding applied."""
        numeric = []
        for name, scaler in self.numeric.items():
            value = pl.col(name).cast(pl.Float64).fill_nan(None)
            if scaler.fill is not None:
                value = value.fill_null(scaler.fill)
            if scaler.lower is not None and scaler.upper is not None:
                value = value.clip(scaler.lower, scaler.upper)
            numeric.append(((value - scaler.center) / scaler.scale).alias(name))
        encoded = frame.with_columns(numeric)
        for name, categories in self.categories.items():
            known = pl.when(pl.col(name).is_in(categories)).then(pl.col(name)).otherwise(pl.lit(_OTHER))
            if self.encoding == "ordinal":
                mapping = {c: i + 1 for i, c in enumerate(categories)}
                code = known.replace_strict(mapping, default=0, return_dtype=pl.UInt32)
                encoded = encoded.with_columns(code.alias(name))
            else:
                encoded = encoded.with_columns(
                    (known == c).cast(pl.UInt8).alias(f"{name}={c}") for c in categories
                ).drop(name)
        return encoded


class TemporalSplit(msgspec.Struct, frozen=True):
    """Train, validation and test frames in time order, separated by the embargo gap."""

    train: pl.DataFrame
    val: pl.DataFrame
    test: pl.DataFrame

    def __iter__(self) -> Iterator[pl.DataFrame]:
        return iter((self.train, self.val, self.test))


class DataPreparation:
    """Temporal splitting and train-fitted normalisation, encoding and missing-value policy.

    Args:
        method: "standard" (mean/std), "minmax" (to [0, 1]), "robust" (median/IQR) or "none".
        handle_outliers: "clip" clips to the train split's `outlier_quantiles` before scaling.
        missing: fill nulls/NaNs with "zero", the train "mean" or "median", or "keep" them.
        encoding: categorical columns become one-hot `name=value` columns or ordinal codes
            (0 = unseen); the `max_categories` most frequent train values are kept, the rest
            share one `__other__` category.
        columns: numeric columns to scale (default: every numeric column but the identifiers,
            `IDENTIFIER_COLUMNS`).
        categorical: string columns to encode (default: `risk_level`, `source` when present).
        time_column: what `split_temporal` orders by.
    """

    def __init__(
        self,
        *,
        method: NormalizeMethod = "standard",
        handle_outliers: OutlierPolicy = "none",
        outlier_quantiles: tuple[float, float] = (0.01, 0.99),
        missing: MissingPolicy = "median",
        encoding: Encoding = "onehot",
        max_categories: int = 32,
        columns: Sequence[str] | None = None,
        categorical: Sequence[str] | None = None,
        time_column: str = "block_time",
    ) -> None:
        self.method = method
        self.handle_outliers = handle_outliers
        self.outlier_quantiles = outlier_quantiles
        self.missing = missing
        self.encoding = encoding
        self.max_categories = max_categories
        self.columns = columns
        self.categorical = categorical
        self.time_column = time_column

    def split_temporal(
        self,
        frame: pl.DataFrame,
        train: float = 0.7,
        val: float = 0.15,
        test: float = 0.15,
        gap: timedelta = timedelta(0),
    ) -> TemporalSplit:
        """Split by time: the first `train` share of rows, then `val`, then `test`.

        Rows within `gap` after the end of the previous split are dropped (the embargo),
        so features with look-back windows up to `gap` never span two splits. A split given a
        share that ends up empty (too little data for the gap) is an error, not a silent surprise.
        """
        if min(train, val, test) < 0 or abs(train + val + test - 1.0) > 1e-9:
            raise ArbitrageError("split shares must be non-negative and sum to 1")
        ordered = frame.sort(self.time_column, maintain_order=True)
        n = ordered.height
        train_end, val_end = round(n * train), round(n * (train + val))
        time = pl.col(self.time_column)
        train_part = ordered.slice(0, train_end)
        val_part = ordered.slice(train_end, val_end - train_end)
        test_part = ordered.slice(val_end)
        if train_part.height:
            last_train = train_part.get_column(self.time_column).max()
            val_part = val_part.filter(time > last_train + gap)  # type: ignore[operator]
            test_part = test_part.filter(time > last_train + gap)  # type: ignore[operator]
        if val_part.height:
            test_part = test_part.filter(time > val_part.get_column(self.time_column).max() + gap)  # type: ignore[operator]
        for name, share, part in (("val", val, val_part), ("test", test, test_part)):
            if share > 0 and n and part.height == 0:
                raise ArbitrageError(
                    f"the {name} split is empty: {n} rows do not leave any after the {gap} embargo gap; "
                    "give more data, a shorter gap or a share of 0"
                )
        return TemporalSplit(train_part, val_part, test_part)

    def fit(self, train: pl.DataFrame) -> PreparationParams:
        """Fit fill values, clipping bounds, scalers and categories on the train split only."""
        numeric = self.columns or [
            name
            for name, dtype in train.schema.items()
            if isinstance(dtype, _NUMERIC) and name not in IDENTIFIER_COLUMNS
        ]
        categorical = self.categorical
        if categorical is None:
            categorical = [name for name in ("risk_level", "source") if name in train.columns]
        return PreparationParams(
            method=self.method,
            numeric={name: self._fit_column(train.get_column(name)) for name in numeric},
            categories={name: self._fit_categories(train.get_column(name)) for name in categorical},
            encoding=self.encoding,
        )

    def normalize(self, frame: pl.DataFrame) -> tuple[pl.DataFrame, PreparationParams]:
        """Fit on `frame` (which must be the train split) and return it prepared, with the params."""
        params = self.fit(frame)
        return params.apply(frame), params

    def _fit_column(self, column: pl.Series) -> ColumnScaler:
        values = column.cast(pl.Float64).fill_nan(None).drop_nulls()
        fill = {"zero": 0.0, "mean": values.mean(), "median": values.median(), "keep": None}[self.missing]
        filled = values if fill is None else column.cast(pl.Float64).fill_nan(None).fill_null(fill)
        lower = upper = None
        if self.handle_outliers == "clip" and filled.len():
            lower = float(filled.quantile(self.outlier_quantiles[0], "linear"))  # type: ignore[arg-type]
            upper = float(filled.quantile(self.outlier_quantiles[1], "linear"))  # type: ignore[arg-type]
            filled = filled.clip(lower, upper)
        center, scale = self._center_scale(filled)
        return ColumnScaler(center, scale if scale > 0 else 1.0, lower, upper, None if fill is None else float(fill))  # type: ignore[arg-type]

    def _center_scale(self, values: pl.Series) -> tuple[float, float]:
        if values.len() == 0 or self.method == "none":
            return 0.0, 1.0
        if self.method == "standard":
            return float(values.mean()), float(values.std(ddof=0))  # type: ignore[arg-type]
        if self.method == "minmax":
            low, high = float(values.min()), float(values.max())  # type: ignore[arg-type]
            return low, high - low
        q1, q3 = values.quantile(0.25, "linear"), values.quantile(0.75, "linear")
        return float(values.median()), float(q3) - float(q1)  # type: ignore[arg-type]

    def _fit_categories(self, column: pl.Series) -> list[str]:
        counts = column.cast(pl.String).drop_nulls().value_counts(sort=True)
        top = counts.head(self.max_categories).get_column(column.name).sort().to_list()
        return [*top, _OTHER]
