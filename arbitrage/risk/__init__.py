"""Risk of an arbitrage transaction: documented components and a score in [0, 1].

Pure functions of a batch that already carries `arbitrage.features` columns.
"""

from arbitrage.risk._score import (
    LEVEL_BOUNDS,
    RISK_COLUMNS,
    RISK_WEIGHTS,
    risk_columns_sql,
    risk_markdown,
    score_risk,
    summarize_risk,
)

__all__ = [
    "LEVEL_BOUNDS",
    "RISK_COLUMNS",
    "RISK_WEIGHTS",
    "risk_columns_sql",
    "risk_markdown",
    "score_risk",
    "summarize_risk",
]
