"""Point-in-time ML features of stored transactions, their registry, and ML preparation.

Pure functions of batches and state: the caller loads history from the warehouse
(`HISTORY_WINDOW` of it, for `HistoryFold` a piece at a time) and stores the output.
"""

from arbitrage.features._engine import HISTORY_COLUMNS, HISTORY_WINDOW, FeatureEngine, HistoryFold, RollingState
from arbitrage.features._preparation import ColumnScaler, DataPreparation, PreparationParams, TemporalSplit
from arbitrage.features._registry import (
    FEATURE_NAMES,
    FEATURES,
    LATE_COLUMN,
    Feature,
    feature_columns_sql,
    feature_schema,
)

__all__ = [
    "FEATURES",
    "FEATURE_NAMES",
    "HISTORY_COLUMNS",
    "HISTORY_WINDOW",
    "LATE_COLUMN",
    "ColumnScaler",
    "DataPreparation",
    "Feature",
    "FeatureEngine",
    "HistoryFold",
    "PreparationParams",
    "RollingState",
    "TemporalSplit",
    "feature_columns_sql",
    "feature_schema",
]
