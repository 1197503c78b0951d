"""Dependency providers: handlers ask for services by name, the app state holds them."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import Provide

from arbitrage.ingest import IngestService
from arbitrage.services import Services
from arbitrage.storage import TransactionReader
from arbitrage.stream import RecentTransactions


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


def _services(state: State) -> Services:
    return services_from(state)


DEPENDENCIES = {
    "services": Provide(_services, sync_to_thread=False),
    "ingest": Provide(_ingest, sync_to_thread=False),
    "reader": Provide(_reader, sync_to_thread=False),
    "recent": Provide(_recent, sync_to_thread=False),
}
