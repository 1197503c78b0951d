"""Dependency providers: handlers ask for services by name, the app state holds them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from litestar.datastructures import State
from litestar.di import Provide

from arbitrage.cache import HistoricalPages
from arbitrage.export import ExportService
from arbitrage.ingest import IngestService
from arbitrage.schedule import ScheduleService
from arbitrage.services import Services
from arbitrage.storage import TransactionReader
from arbitrage.stream import RecentTransactions

T = TypeVar("T")


def services_from(state: State) -> Services:
    services = state.get("services")
    assert isinstance(services, Services), "the app's lifespan has not started"
    return services


def _ingest(state: State) -> IngestService:
    return services_from(state).ingest


def _reader(state: State) -> TransactionReader:
    return services_from(state).reader


def _recent(state: State) -> RecentTransactions:
    return services_from(state).recent


def _extra(name: str, kind: type[T]) -> Callable[[State], T]:
    """A provider of an optional module's service from `services.extras`."""

    def provide(state: State) -> T:
        service = services_from(state).extras.get(name)
        assert isinstance(service, kind), f"{name} are not configured in this app"
        return service

    return provide


def _services(state: State) -> Services:
    return services_from(state)


DEPENDENCIES = {
    "services": Provide(_services, sync_to_thread=False),
    "ingest": Provide(_ingest, sync_to_thread=False),
    "reader": Provide(_reader, sync_to_thread=False),
    "recent": Provide(_recent, sync_to_thread=False),
    "exports": Provide(_extra("exports", ExportService), sync_to_thread=False),
    "schedules": Provide(_extra("schedules", ScheduleService), sync_to_thread=False),
    "historical": Provide(_extra("historical", HistoricalPages), sync_to_thread=False),
}
