"""Liveness of each component, and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from arbitrage.security import PublicOperation, public
from arbitrage.services import Services
from arbitrage.telemetry import METRICS, redact

_CHECK_TIMEOUT_S = 2.0


class ComponentHealth(msgspec.Struct):
    """One component's check; a component may add fields of its own (`backend`, `error`, ...)."""

    status: Annotated[
        str, msgspec.Meta(description="`healthy`, `degraded`, `unhealthy`, or `disabled` (not configured).")
    ]
    latency_ms: float


class Health(msgspec.Struct):
    """`GET /health`, the same body with 200 and 503 (what the schema declares; served as built)."""

    status: Literal["healthy", "degraded", "unhealthy"]
    components: dict[str, ComponentHealth]


async def _warehouse(services: NamedDependency[Services]) -> dict[str, Any]:
    latency = await services.warehouse.ping()
    answer = {"status": "healthy", "latency_ms": round(latency, 2), "backend": services.warehouse.backend}
    if services.damaged_parts:
        names = ", ".join(f"{part.table}/{part.name}" for part in services.damaged_parts[:5])
        answer["status"] = "degraded"
        answer["error"] = (
            f"{len(services.damaged_parts)} damaged part(s) set aside at start-up, their rows not served "
            f"({names}): see the log and docs/operations.md"
        )
    return answer


_METRICS_TYPE = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")
"""Litestar appends the charset itself; a second one makes the header unparsable to Prometheus."""


class HealthController(Controller):
    tags = ["operations"]
    guards = [public]

    @get(
        "/health",
        description="200 when the service can store and serve data, 503 when the warehouse cannot.",
        responses={
            200: ResponseSpec(Health, description="Healthy or degraded", generate_examples=False),
            503: ResponseSpec(Health, description="Unhealthy: the warehouse cannot answer", generate_examples=False),
        },
        operation_class=PublicOperation,
    )
    async def health(self, services: NamedDependency[Services]) -> Response[dict[str, Any]]:
        checks = {"warehouse": lambda: _warehouse(services), **services.health_checks}
        components: dict[str, dict[str, Any]] = {}
        for name, check in checks.items():
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                components[name] = await asyncio.wait_for(check(), _CHECK_TIMEOUT_S)
            except Exception as exc:
                components[name] = {"status": _failed_status(name), "error": str(exc)[:200]}
            if isinstance(components[name].get("error"), str):  # public: an error may quote a URL with its password
                components[name]["error"] = redact(components[name]["error"])
            components[name].setdefault("latency_ms", round((loop.time() - started) * 1000, 2))
        statuses = {c["status"] for c in components.values()}
        if components["warehouse"]["status"] == "unhealthy":
            status = "unhealthy"
        elif statuses - {"healthy", "disabled"}:
            status = "degraded"
        else:
            status = "healthy"
        code = HTTP_503_SERVICE_UNAVAILABLE if status == "unhealthy" else HTTP_200_OK
        return Response({"status": status, "components": components}, status_code=code)

    @get(
        "/metrics", description="Prometheus text exposition.", media_type=_METRICS_TYPE, operation_class=PublicOperation
    )
    async def metrics(self) -> bytes:
        return generate_latest(METRICS.registry)


def _failed_status(component: str) -> str:
    """A check that raised: only the warehouse makes the service unhealthy; without another
    component (Redis away, ...) it still serves, which is `degraded`, as the docs promise."""
    return "unhealthy" if component == "warehouse" else "degraded"
