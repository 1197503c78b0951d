"""create_app(settings) → the Litestar app: routes, dependencies, lifespan, error mapping."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import swagger_ui_bundle
from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.config.response_cache import ResponseCacheConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, Operation, SecurityScheme
from litestar.static_files import create_static_files_router

from arbitrage import __version__
from arbitrage.api import CONTROLLERS, DEPENDENCIES, EXCEPTION_HANDLERS, before_request
from arbitrage.api._errors import GuardedOperation
from arbitrage.api._sliced_bodies import sliced_response_bodies
from arbitrage.api.graphql import register_graphql
from arbitrage.api.status import STATUS_ROUTES
from arbitrage.cache import (
    HistoricalPages,
    RangeCache,
    ResponseCache,
    ShortCache,
    response_cache,
    warehouse_identity,
)
from arbitrage.config import Settings
from arbitrage.export import ExportService, storage_options_from
from arbitrage.features import HISTORY_COLUMNS, HISTORY_WINDOW, FeatureEngine, HistoryFold
from arbitrage.ingest import IngestService
from arbitrage.risk import score_risk
from arbitrage.schedule import ScheduleService
from arbitrage.security import add_security_headers, check_bind, public, start_security
from arbitrage.security._operations import IngestRate
from arbitrage.services import Services
from arbitrage.storage import (
    TransactionReader,
    Warehouse,
    apply_retention,
    damaged_parts,
    open_warehouse,
    rebuild_daily_aggregates,
)
from arbitrage.stream import LiveFeed, RecentTransactions, RedisLink, StreamHub
from arbitrage.telemetry import configure_tracing, flush_tracing, request_telemetry

log = logging.getLogger(__name__)

_SWAGGER_ASSETS = Path(swagger_ui_bundle.swagger_ui_path)


def create_app(settings: Settings) -> Litestar:
    """The whole service for these settings; nothing starts until the lifespan runs.

    Raises:
        ConfigError: the settings bind beyond loopback with auth off.
    """
    check_bind(settings.server.host, settings.auth.enabled)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        telemetry = settings.telemetry
        configure_tracing(
            telemetry.tracing,
            otlp_endpoint=telemetry.otlp_endpoint,
            service_name=telemetry.service_name,
            sample_ratio=telemetry.sample_ratio,
        )
        # Whatever starts is closed in reverse order at shutdown, or as soon as a later step fails.
        async with contextlib.AsyncExitStack() as started:
            started.callback(gc.unfreeze)
            started.callback(flush_tracing)
            app.state.services = services = await start_services(settings)
            started.push_async_callback(services.close)
            app.state.security = security = await start_security(settings, services.warehouse)
            started.push_async_callback(security.close)
            app.state.ingest_rate = rate = IngestRate()
            sampler = asyncio.create_task(rate.keep_sampling(), name="ingest-rate")
            started.push_async_callback(_cancel, sampler)
            if settings.kafka.enabled:  # before the demo: the relay publishes what is stored after it started
                from arbitrage.ingest.kafka import start_kafka

                started.push_async_callback(await start_kafka(services))
            if settings.demo.enabled:
                from arbitrage.demo import feed_demo

                demo = asyncio.create_task(feed_demo(services.ingest, settings.demo.rate), name="demo")
                started.push_async_callback(_cancel, demo)
            started.callback(gc.set_threshold, *settle_garbage_collector())
            yield

    openapi = OpenAPIConfig(
        title="arbitrage",
        version=__version__,
        description="Solana arbitrage transactions as an API, live streams and ML-ready datasets.",
        # The API docs are public (they hold no data); declared here, like every route's role.
        openapi_router=Router("/schema", route_handlers=[], include_in_schema=False, guards=[public]),
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer", description="API key, admin token or JWT"),
                "apiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header"),
            }
        ),
        security=[{"bearer": []}, {"apiKey": []}],
        render_plugins=[
            SwaggerRenderPlugin(
                js_url="/schema/assets/swagger-ui-bundle.js",
                css_url="/schema/assets/swagger-ui.css",
                standalone_preset_js_url="/schema/assets/swagger-ui-standalone-preset.js",
                favicon="<link rel='icon' type='image/png' href='/schema/assets/favicon-32x32.png'>",
            )
        ],
    )
    app = Litestar(
        route_handlers=[
            *CONTROLLERS,
            create_static_files_router(
                path="/schema/assets", directories=[_SWAGGER_ASSETS], include_in_schema=False, guards=[public]
            ),
            *STATUS_ROUTES,
        ],
        dependencies=DEPENDENCIES,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=[lifespan],
        # Logging is `arbitrage.telemetry.configure_logging`'s (format, request ids, masking);
        # Litestar's default set-up would replace its handler with a plain, unmasked one.
        logging_config=None,
        openapi_config=openapi,
        middleware=[response_cache],
        before_send=[add_security_headers],  # every answer, the router's own 404 and 405 included
        # After the route's guards: a repeated parameter is refused, a cached answer only served to whom they admit.
        before_request=before_request,
        cors_config=CORSConfig(
            allow_origins=settings.auth.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Last-Event-ID"],
        )
        if settings.auth.cors_origins
        else None,
        request_max_body_size=settings.ingest.max_body_bytes,
        response_cache_config=ResponseCacheConfig(default_expiration=1),
        debug=False,
    )
    register_graphql(app)
    _declare_refusals(app)
    # Around the router, not in `middleware` (per route): 404s, 405s and errors raised before a
    # handler get a request id and are counted too.
    app.asgi_handler = request_telemetry(sliced_response_bodies(app.asgi_handler))
    return app


def _declare_refusals(app: Litestar) -> None:
    """Every guarded route's schema lists the guard's 401, 403 and 429 and, with a body, the 413 of the
    body limit (`GuardedOperation`); public routes have their own operation class."""
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if handler.operation_class is Operation:
                handler.operation_class = GuardedOperation


async def _warmed_engine(reader: TransactionReader) -> FeatureEngine:
    """The feature engine as if it had seen the stored history, read a piece at a time (bounded memory)."""
    extent = await reader.history_extent(HISTORY_WINDOW)
    if extent is None:
        return FeatureEngine()
    fold = HistoryFold(extent.newest_ms, extent.newest_slot)
    async for piece in reader.feature_history(extent, HISTORY_COLUMNS):
        await asyncio.to_thread(fold.add, piece)
    return await asyncio.to_thread(fold.engine)


async def start_services(settings: Settings, *, jobs: bool = True) -> Services:
    """Open the warehouse (applying migrations) and build what handlers need.

    `jobs=False` leaves out export jobs and the schedule loop (one-shot commands such as
    `arbitrage ingest` must not run scheduled exports).
    """
    warehouse = open_warehouse(settings.storage)
    await warehouse.start()
    async with contextlib.AsyncExitStack() as opened:
        # A step that fails closes what was opened: the embedded warehouse holds the data dir's lock.
        opened.push_async_callback(warehouse.close)
        await apply_retention(warehouse, settings.storage.retention_days)
        damaged = await damaged_parts(warehouse)
        for part in damaged:
            log.error(
                "a damaged part of %s was set aside at start-up (%s): its rows are not served; re-send them, "
                "then remove %s (docs/operations.md)",
                part.table,
                part.reason,
                part.path,
            )
        if warehouse.backend == "embedded":
            months = {int(p.partition_id) for p in damaged if p.table == "transactions" and p.partition_id.isdigit()}
            await rebuild_daily_aggregates(warehouse, settings.storage.retention_days, months)
        reader = TransactionReader(warehouse)
        # Only the embedded warehouse has one writer, so only there does this process see every row.
        recent = RecentTransactions(settings.ingest.recent_buffer if warehouse.backend == "embedded" else 0)
        if recent.capacity:
            recent.add(await reader.newest(recent.capacity))
        engine = await _warmed_engine(reader)
        feed, cache = await _start_live_feed(settings, warehouse)
        opened.push_async_callback(feed.close)
        ingest = IngestService(
            warehouse,
            recent,
            enrichers=[engine, score_risk],
            max_pending_batches=settings.ingest.max_pending_batches,
            max_records_per_body=settings.ingest.max_records_per_body,
            insert_min_rows=settings.ingest.insert_min_rows,
            insert_linger_seconds=settings.ingest.insert_linger_seconds,
            position_source=feed.reserve,
            positions_abandoned=feed.abandon,
            retention_days=settings.storage.retention_days,
        )
        # Only the embedded warehouse guarantees one writer, whose stores this process sees.
        pages = RangeCache() if warehouse.backend == "embedded" else None
        if pages is not None:
            ingest.on_stored(pages.invalidate)
        answers = ShortCache(1.0)
        ingest.on_stored(answers.invalidate)
        if cache is not None:
            ingest.on_stored(cache.invalidate)
        # After the caches dropped their answers: a client reacting to the live event reads the new data.
        ingest.on_stored(feed.publish)
        services = Services(
            settings=settings,
            warehouse=warehouse,
            ingest=ingest,
            reader=reader,
            recent=recent,
            feed=feed,
            damaged_parts=damaged,
        )
        opened.pop_all()
        opened.push_async_callback(services.close)  # the feed, the warehouse, and the jobs started below
        services.extras["historical"] = HistoricalPages(reader, pages)
        services.extras[ShortCache.EXTRAS_KEY] = answers
        services.health_checks["ingest"] = ingest.health
        services.health_checks["redis"] = feed.redis.health if feed.redis is not None else _redis_disabled
        if cache is not None:
            services.extras[ResponseCache.EXTRAS_KEY] = cache
        if jobs:
            await _start_exports(settings, services)
        opened.pop_all()
    return services


async def _start_exports(settings: Settings, services: Services) -> None:
    """Export jobs and schedules; interrupted jobs are marked failed, missed runs caught up."""
    exports = ExportService(
        services.warehouse,
        export_dir=settings.export.dir,
        storage_options=storage_options_from(settings.export),
        max_concurrent_jobs=settings.export.max_concurrent_jobs,
        destination_roots=settings.auth.export_roots,
    )
    await exports.start()
    services.extras["exports"] = exports
    schedules = ScheduleService(
        services.warehouse,
        exports,
        run_missed_on_startup=settings.schedule.run_missed_on_startup,
        max_retries=settings.schedule.max_retries,
        retry_backoff_seconds=settings.schedule.retry_backoff_seconds,
        poll_seconds=settings.schedule.poll_seconds,
        watermark_lag_seconds=settings.schedule.watermark_lag_seconds,
        unsettled_since=services.ingest.unsettled_since,
    )
    await schedules.start(run_loop=settings.schedule.enabled)
    services.extras["schedules"] = schedules

    async def schedules_health() -> dict[str, Any]:
        return schedules.health()

    services.health_checks["schedules"] = schedules_health


async def _start_live_feed(settings: Settings, warehouse: Warehouse) -> tuple[LiveFeed, ResponseCache | None]:
    """The live feed, through Redis when `redis.url` is set (several processes, one feed), and then
    the Redis response cache, made before the link's first subscription: each drops every entry,
    which another process that stored batches while Redis was away may have left stale."""
    hub = StreamHub(
        replay_events=settings.stream.replay_buffer, reorder_timeout=settings.stream.reorder_timeout_seconds
    )
    redis = RedisLink(settings.redis.url, hub, key_prefix=settings.redis.key_prefix) if settings.redis.url else None
    cache = (
        ResponseCache(redis, settings.redis.cache_ttl_seconds, warehouse=warehouse_identity(settings.storage))
        if redis is not None
        else None
    )
    feed = LiveFeed(warehouse, hub, redis)
    await feed.start()
    return feed, cache


GC_THRESHOLDS = (20_000, 20, 20)
"""Collections of the young generation every 20,000 net allocations instead of CPython's 700."""


def settle_garbage_collector() -> tuple[int, int, int]:
    """Tune the cyclic GC for a server that allocates in bursts; returns the thresholds it replaced.

    The objects built at start-up (modules, routes, services) live as long as the process, yet
    every full collection walked all of them (about 170k objects, 100+ ms with the event loop
    stopped): that pause was the p99 of the hot read endpoints. So collect once, so that no
    garbage is frozen, then freeze them. And every batch allocates tens of thousands of objects
    that die with it (a Kafka fetch builds one `Message` per record): at CPython's thresholds
    the consumer ran 500+ collections per 600k records, 1.0-1.6 s of CPU; at these none.
    The lifespan's end unfreezes and restores, so an app started and stopped in a longer-lived
    process changes nothing there.
    """
    gc.collect()
    gc.freeze()
    replaced = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    return replaced


async def _redis_disabled() -> dict[str, str]:
    return {"status": "disabled"}


async def _cancel(task: asyncio.Task[None]) -> None:
    """Stop a background task; whatever it raises on the way out is its own business."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
