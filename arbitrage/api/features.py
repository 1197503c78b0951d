"""The feature registry and risk scores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
import polars as pl
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import Parameter

from arbitrage.api._errors import error_responses
from arbitrage.api.transactions import TransactionSignature
from arbitrage.features import FEATURES
from arbitrage.risk import RISK_COLUMNS, summarize_risk
from arbitrage.security import requires
from arbitrage.storage import TransactionFilter, TransactionReader


class FeatureController(Controller):
    tags = ["features"]
    guards = [requires("read")]

    @get(
        "/features",
        description="Every feature column: name, group, dtype, unit, window, definition; then the risk columns.",
    )
    async def features(self) -> dict[str, Any]:
        return {"features": msgspec.to_builtins(FEATURES), "risk": msgspec.to_builtins(RISK_COLUMNS)}

    @get("/risk/summary", description="Risk levels, score quantiles and mean components over the last `hours`.")
    async def risk_summary(
        self, reader: NamedDependency[TransactionReader], hours: Annotated[int, Parameter(ge=1, le=24 * 365)] = 24
    ) -> dict[str, Any]:
        since = datetime.now(UTC) - timedelta(hours=hours)
        columns = [
            "risk_score",
            "risk_level",
            *(c.name for c in RISK_COLUMNS if c.name not in ("risk_score", "risk_level")),
        ]
        frame = await reader.columns(columns, TransactionFilter(start=since))
        return {"hours": hours, **summarize_risk(frame)}

    @get(
        "/risk/{signature:str}",
        description="The risk score, level and components of one transaction.",
        responses=error_responses(404),
    )
    async def risk(self, reader: NamedDependency[TransactionReader], signature: TransactionSignature) -> dict[str, Any]:
        frame = await reader.get(signature)
        if frame.is_empty():
            raise NotFoundException(f"transaction {signature} not found")
        row = frame.select(pl.col("^risk_.*$")).row(0, named=True)
        return {
            "signature": signature,
            "score": row.pop("risk_score"),
            "level": row.pop("risk_level"),
            "components": {k.removeprefix("risk_"): v for k, v in row.items()},
        }
