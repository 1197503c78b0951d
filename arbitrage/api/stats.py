"""Aggregates, served from the materialized views and cached for a moment (`ShortCache`)."""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import Parameter

from arbitrage.api._errors import error_responses
from arbitrage.api._openapi import WarehouseRead
from arbitrage.cache import ShortCache, shared_generation
from arbitrage.security import requires
from arbitrage.services import Services


class TokenTotals(msgspec.Struct):
    """A mint anywhere in the route, over everything stored."""

    token: str
    transactions: int
    net_profit_sol: float


class DexTotals(msgspec.Struct):
    """A DEX of any leg, over everything stored."""

    dex: str
    transactions: int
    net_profit_sol: float


class SignerTotals(msgspec.Struct):
    """A signer, over everything stored."""

    signer: str
    transactions: int
    net_profit_sol: float


class Stats(msgspec.Struct):
    """`GET /stats` as the schema declares it, so that a generated client names every field."""

    transactions: int
    successful: int
    circular: int
    profitable: int
    volume_sol: float
    gross_revenue_sol: float
    total_cost_sol: float
    jito_tips_sol: float
    net_profit_sol: float
    top_tokens: list[TokenTotals]
    top_dexes: list[DexTotals]
    top_signers: list[SignerTotals]


class DailyTotals(msgspec.Struct):
    """One UTC day of `GET /stats/daily`."""

    date: datetime.date
    transactions: int
    successful: int
    profitable: int
    volume_sol: float
    total_cost_sol: float
    jito_tips_sol: float
    net_profit_sol: float


class DailyStats(msgspec.Struct):
    """`GET /stats/daily`: oldest day first."""

    days: list[DailyTotals]


def _answer(shape: type[msgspec.Struct]) -> ResponseSpec:
    """The 200 of an aggregate: served as the reader builds it (a dict, cached as such), declared as `shape`."""
    return ResponseSpec(shape, description="Request fulfilled, document follows", generate_examples=False)


class StatsController(Controller):
    path = "/stats"
    tags = ["stats"]
    guards = [requires("read")]

    @get(
        description="Totals over everything stored, and the top tokens, DEXes and signers. `net_profit_sol` sums "
        "the transactions whose profit is known (circular routes that touch SOL); `total_cost_sol` sums every "
        "transaction's cost, so gross revenue minus cost need not equal it.",
        responses={200: _answer(Stats), **error_responses(503)},
        operation_class=WarehouseRead,
    )
    async def stats(self, request: Request[Any, Any, Any], services: NamedDependency[Services]) -> dict[str, Any]:
        return await _answers(services).get(("stats", shared_generation(request)), services.reader.stats)  # type: ignore[no-any-return]

    @get(
        "/daily",
        description="One row per UTC day for the last `days` days (days without data are omitted).",
        responses={200: _answer(DailyStats), **error_responses(400, 503)},
        operation_class=WarehouseRead,
    )
    async def daily(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        days: Annotated[int, Parameter(ge=1, le=3650)] = 30,
    ) -> dict[str, list[dict[str, Any]]]:
        async def compute() -> dict[str, list[dict[str, Any]]]:
            return {"days": await services.reader.daily(days)}

        return await _answers(services).get(("daily", days, shared_generation(request)), compute)  # type: ignore[no-any-return]


def _answers(services: Services) -> ShortCache:
    answers = services.extras[ShortCache.EXTRAS_KEY]
    assert isinstance(answers, ShortCache)
    return answers
