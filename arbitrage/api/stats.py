"""Aggregates, served from the materialized views and cached for a moment (`ShortCache`)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import Parameter

from arbitrage.cache import ShortCache, shared_generation
from arbitrage.security import requires
from arbitrage.services import Services


class StatsController(Controller):
    path = "/stats"
    tags = ["stats"]
    guards = [requires("read")]

    @get(
        description="Totals over everything stored, and the top tokens, DEXes and signers. `net_profit_sol` sums "
        "the transactions whose profit is known (circular routes that touch SOL); `total_cost_sol` sums every "
        "transaction's cost, so gross revenue minus cost need not equal it."
    )
    async def stats(self, request: Request[Any, Any, Any], services: NamedDependency[Services]) -> dict[str, Any]:
        return await _answers(services).get(("stats", shared_generation(request)), services.reader.stats)  # type: ignore[no-any-return]

    @get("/daily", description="One row per UTC day for the last `days` days (days without data are omitted).")
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
