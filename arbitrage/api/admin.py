"""`/admin/*`: effective config, status, warehouse maintenance, cache flush, API keys.

Every route needs the admin role, also when auth is otherwise off.
"""

from __future__ import annotations

import inspect
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.status_codes import HTTP_201_CREATED

from arbitrage.api._errors import error_responses
from arbitrage.cache import HistoricalPages
from arbitrage.config import redacted
from arbitrage.security import (
    ApiKey,
    CreatedKey,
    KeyCreate,
    KeyNotFound,
    KeyStore,
    admin_token_path,
    requires,
    security_of,
)
from arbitrage.security._operations import IngestRate, ingest_totals, optimize_table, versions, warehouse_status
from arbitrage.services import Services
from arbitrage.storage import retention_status

TableName = Annotated[str, QueryParameter(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
ADMIN_MAX_BODY_BYTES = 64 * 1024
"""Every /admin controller's body limit (413 beyond); the app's default is ingest's 64 MiB."""


KeyId = Annotated[str, PathParameter(min_length=12, max_length=12, pattern=r"^[0-9a-f]{12}$")]


class KeyList(msgspec.Struct):
    items: list[ApiKey]


class AdminController(Controller):
    path = "/admin"
    tags = ["admin"]
    guards = [requires("admin")]
    request_max_body_size = ADMIN_MAX_BODY_BYTES

    @get("/config", description="The effective configuration, every secret replaced by `***`.")
    async def config(self, services: NamedDependency[Services]) -> dict[str, Any]:
        shown = redacted(services.settings)
        if not services.settings.auth.admin_token:
            # Empty means "<data_dir>/admin_token": show the file the credential is read from (or was generated into).
            shown["auth"]["admin_token_file"] = str(admin_token_path(services.settings))
        return shown

    @get(
        "/status",
        description="Uptime, versions, ingest totals and rate, queue depths, warehouse parts/size/compression, "
        "retention and oldest stored block time, recent warnings and errors.",
    )
    async def status(self, request: Request[Any, Any, Any], services: NamedDependency[Services]) -> dict[str, Any]:
        security = security_of(request)
        rate: IngestRate = request.app.state.ingest_rate
        queues: dict[str, Any] = {
            "ingest_pending_batches": services.ingest.pending if services.ingest is not None else None,
            "ingest_max_pending_batches": services.settings.ingest.max_pending_batches,
        }
        for name, extra in services.extras.items():
            report = getattr(extra, "admin_status", None)
            if callable(report):
                value = report()
                queues[name] = await value if inspect.isawaitable(value) else value
        return {
            "started_at": datetime.fromtimestamp(security.started_at, UTC).isoformat(timespec="milliseconds"),
            "uptime_seconds": round(time.time() - security.started_at, 3),
            "versions": versions(),
            "auth": {
                "enabled": security.enabled,
                "jwt": security.jwt.enabled,
                "rate_limit": "off" if security.limiter is None else type(security.limiter).__name__,
            },
            "ingest": {"totals": ingest_totals(), "stored_per_second": rate.per_second()},
            "queues": queues,
            "warehouse": await warehouse_status(services.warehouse),
            "retention": await retention_status(services.warehouse, services.settings.storage.retention_days),
            "last_errors": msgspec.to_builtins(security.errors.latest()),
        }

    @post(
        "/warehouse/optimize",
        status_code=200,
        description="Merge the parts of a table (`OPTIMIZE TABLE … FINAL` by default); may take a while.",
        responses=error_responses(400),
    )
    async def optimize(
        self,
        services: NamedDependency[Services],
        table: TableName = "transactions",
        final: Annotated[bool, QueryParameter()] = True,
    ) -> dict[str, Any]:
        result = await optimize_table(services.warehouse, table, final=final, cluster=services.settings.storage.cluster)
        pages = services.extras.get("historical")
        if table == "transactions" and isinstance(pages, HistoricalPages):
            pages.flush_cache()  # a merge collapses rows stored twice, which kept pages may still hold
        return result

    @post("/cache/flush", status_code=200, description="Drop cached responses (memory and Redis).")
    async def flush_cache(self, request: Request[Any, Any, Any], services: NamedDependency[Services]) -> dict[str, Any]:
        flushed = []
        config = request.app.response_cache_config
        if config is not None:
            await request.app.stores.get(config.store).delete_all()
            flushed.append("response_cache")
        for name, extra in services.extras.items():
            flush = getattr(extra, "flush_cache", None)
            if callable(flush):
                result = flush()
                if inspect.isawaitable(result):
                    await result
                flushed.append(name)
        return {"flushed": flushed}

    @get("/keys", description="API keys (never their tokens or hashes).")
    async def list_keys(self, request: Request[Any, Any, Any]) -> KeyList:
        return KeyList(items=await _keys(request).list())

    @post(
        "/keys",
        status_code=HTTP_201_CREATED,
        description="Create an API key. The token is in this answer only; it is stored as a hash.",
        responses=error_responses(400),
    )
    async def create_key(self, request: Request[Any, Any, Any], data: JSONBody[KeyCreate]) -> CreatedKey:
        return await _keys(request).create(data.name, data.roles, data.expires_in_days)

    @delete(
        "/keys/{key_id:str}",
        status_code=200,
        description="Revoke an API key; it stops working at once.",
        responses=error_responses(400, 404),
    )
    async def revoke_key(self, request: Request[Any, Any, Any], key_id: KeyId) -> ApiKey:
        try:
            return await _keys(request).revoke(key_id)
        except KeyNotFound as exc:
            raise NotFoundException(detail=str(exc)) from exc


def _keys(request: Request[Any, Any, Any]) -> KeyStore:
    keys = security_of(request).keys
    if keys is None:
        raise NotFoundException(detail="API keys are not available in this app")
    return keys
