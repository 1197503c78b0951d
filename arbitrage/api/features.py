"""The feature registry and risk scores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, get_args

import msgspec
import polars as pl
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import Parameter

from arbitrage.api._errors import error_responses
from arbitrage.api._openapi import WarehouseRead
from arbitrage.api.transactions import TransactionSignature
from arbitrage.features import FEATURES, LATE_COLUMN, Feature
from arbitrage.risk import RISK_COLUMNS, summarize_risk
from arbitrage.security import requires
from arbitrage.storage import TransactionFilter, TransactionReader

RiskLevel = Literal["low", "medium", "high"]
Components = Annotated[
    dict[str, float], msgspec.Meta(description="By name without `risk_` (`sandwich`, `il`, ...: `GET /features`).")
]


class FeatureList(msgspec.Struct):
    """`GET /features`: the registry, typed so that a generated client reads it."""

    features: list[Feature]
    risk: list[Feature]
    quality: list[Feature]
    """Flags stored beside the features (`late`): columns of the table and of every export too."""


class RiskScore(msgspec.Struct):
    """`GET /risk/{signature}`; score and level null, components empty, for a row stored before risk scoring."""

    signature: str
    score: float | None
    level: RiskLevel | None
    components: Components


class RiskLevels(msgspec.Struct):
    """Transactions per risk level."""

    low: int
    medium: int
    high: int


class RiskSummary(msgspec.Struct):
    """`GET /risk/summary`: over the transactions of the last `hours`.

    `transactions` = the `levels` + `unscored`; the scores and components are of the scored ones.
    """

    hours: int
    transactions: int
    unscored: Annotated[
        int,
        msgspec.Meta(description="Transactions without a risk level (stored before risk scoring existed)."),
    ]
    mean_score: float
    p50_score: float
    p90_score: float
    levels: RiskLevels
    components: Components


MAX_RISK_HOURS = 24 * 365


async def risk_summary_of(reader: TransactionReader, hours: int) -> RiskSummary:
    """`GET /risk/summary` (and GraphQL's `riskSummary`): over the transactions of the last `hours`."""
    since = datetime.now(UTC) - timedelta(hours=hours)
    columns = [
        "risk_score",
        "risk_level",
        *(c.name for c in RISK_COLUMNS if c.name not in ("risk_score", "risk_level")),
    ]
    frame = await reader.columns(columns, TransactionFilter(start=since))
    return msgspec.convert({"hours": hours, **summarize_risk(frame)}, RiskSummary)


async def risk_score_of(reader: TransactionReader, signature: str) -> RiskScore | None:
    """`GET /risk/{signature}` (and GraphQL's `risk`); None when the transaction is not stored."""
    frame = await reader.get(signature)
    if frame.is_empty():
        return None
    row = frame.select(pl.col("^risk_.*$")).row(0, named=True)
    score, level = row.pop("risk_score"), row.pop("risk_level")
    if level not in get_args(RiskLevel):  # stored before risk scoring: its zeros are not scores
        return RiskScore(signature=signature, score=None, level=None, components={})
    return RiskScore(
        signature=signature, score=score, level=level, components={k.removeprefix("risk_"): v for k, v in row.items()}
    )


class FeatureController(Controller):
    tags = ["features"]
    guards = [requires("read")]

    @get(
        "/features",
        description="Every feature column: name, group, dtype, unit, window, definition; then the risk columns "
        "and the quality flags (`late`), which stored rows and exports carry too.",
    )
    async def features(self) -> FeatureList:
        return FeatureList(list(FEATURES), list(RISK_COLUMNS), [LATE_COLUMN])

    @get(
        "/risk/summary",
        description="Risk levels, score quantiles and mean components over the last `hours`.",
        responses=error_responses(400, 503),
        operation_class=WarehouseRead,
    )
    async def risk_summary(
        self, reader: NamedDependency[TransactionReader], hours: Annotated[int, Parameter(ge=1, le=MAX_RISK_HOURS)] = 24
    ) -> RiskSummary:
        return await risk_summary_of(reader, hours)

    @get(
        "/risk/{signature:str}",
        description="The risk score, level and components of one transaction.",
        responses=error_responses(400, 404, 503),
        operation_class=WarehouseRead,
    )
    async def risk(self, reader: NamedDependency[TransactionReader], signature: TransactionSignature) -> RiskScore:
        score = await risk_score_of(reader, signature)
        if score is None:
            raise NotFoundException(f"transaction {signature} not found")
        return score
