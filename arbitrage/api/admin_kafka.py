"""Admin operations of the Kafka ingest and the dead-letter store: thin over `arbitrage.ingest.kafka`.

Both always require the admin role, like every route under /admin.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, ServiceUnavailableException
from litestar.params import JSONBody, Parameter

from arbitrage.api._errors import error_responses
from arbitrage.api.admin import ADMIN_MAX_BODY_BYTES
from arbitrage.errors import ValidationError
from arbitrage.ingest.kafka import (
    DeadLetter,
    DeadLetterReplay,
    KafkaIngest,
    KafkaNotConnected,
    KafkaStatus,
    list_dead_letters,
    replay_dead_letters,
)
from arbitrage.security import requires
from arbitrage.services import Services


class PartitionsRequest(msgspec.Struct):
    partitions: list[int] | None = None
    """Partition numbers; all assigned partitions when omitted."""


class PausedPartitions(msgspec.Struct):
    paused: list[int]


class ReplayRequest(msgspec.Struct):
    partition: int
    offset: int | None = None
    timestamp: str | None = None
    """RFC 3339 time: replay from the first message at or after it."""


class ReplayStarted(msgspec.Struct):
    partition: int
    offset: int


class DeadLetterPage(msgspec.Struct):
    items: list[DeadLetter]


class DeadLetterReplayRequest(msgspec.Struct):
    source: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    """Only dead letters from this source (http, kafka, ...)."""
    limit: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 100_000
    """Bounded: the query takes it as UInt32, where -1 or 2^40 fail as a warehouse outage (503)."""


def _kafka(services: Services) -> KafkaIngest:
    kafka = services.extras.get("kafka")
    if not isinstance(kafka, KafkaIngest):
        raise NotFoundException("Kafka ingest is not enabled ([kafka] enabled = true)")
    return kafka


@contextmanager
def _connected() -> Iterator[None]:
    """A consumer still connecting is a temporary state: 503, saying why, not an internal error."""
    try:
        yield
    except KafkaNotConnected as exc:
        raise ServiceUnavailableException(str(exc)) from exc


class KafkaAdminController(Controller):
    path = "/admin/kafka"
    tags = ["admin"]
    guards = [requires("admin")]
    request_max_body_size = ADMIN_MAX_BODY_BYTES

    @get(description="Assignment, positions, committed offsets, lag and paused state per partition.")
    async def status(self, services: NamedDependency[Services]) -> KafkaStatus:
        return await _kafka(services).status()

    @post(
        "/pause",
        status_code=200,
        description="Stop fetching the given partitions (all when none given).",
        responses=error_responses(400),
    )
    async def pause(
        self, services: NamedDependency[Services], data: JSONBody[PartitionsRequest | None] = None
    ) -> PausedPartitions:
        with _connected():
            return PausedPartitions(await _kafka(services).pause(data.partitions if data else None))

    @post(
        "/resume",
        status_code=200,
        description="Resume the given partitions (all when none given).",
        responses=error_responses(400),
    )
    async def resume(
        self, services: NamedDependency[Services], data: JSONBody[PartitionsRequest | None] = None
    ) -> PausedPartitions:
        with _connected():
            return PausedPartitions(await _kafka(services).resume(data.partitions if data else None))

    @post(
        "/replay",
        status_code=202,
        description="Seek an assigned partition to an offset or a time; replayed records are still stored once.",
        responses=error_responses(400),
    )
    async def replay(self, services: NamedDependency[Services], data: JSONBody[ReplayRequest]) -> ReplayStarted:
        timestamp_ms = None
        if data.timestamp is not None:
            try:
                moment = datetime.fromisoformat(data.timestamp.replace("Z", "+00:00"))
            except ValueError as exc:
                raise ValidationError("timestamp", f"not an RFC 3339 datetime: {data.timestamp!r}") from exc
            timestamp_ms = int(moment.timestamp() * 1000)
        with _connected():
            offset = await _kafka(services).replay(data.partition, offset=data.offset, timestamp_ms=timestamp_ms)
        return ReplayStarted(data.partition, offset)


class DeadLetterController(Controller):
    path = "/admin/dead-letters"
    tags = ["admin"]
    guards = [requires("admin")]
    request_max_body_size = ADMIN_MAX_BODY_BYTES

    @get(
        description="Rejected records, newest first, with the field and reason and the original bytes.",
        responses=error_responses(400),
    )
    async def list_dead_letters(
        self,
        services: NamedDependency[Services],
        limit: Annotated[int, Parameter(ge=1, le=10_000)] = 100,
        source: Annotated[str | None, Parameter(max_length=64)] = None,
        include_replayed: Annotated[bool, Parameter(description="Also list letters already replayed.")] = False,
    ) -> DeadLetterPage:
        items = await list_dead_letters(
            services.warehouse, limit=limit, source=source, include_replayed=include_replayed
        )
        return DeadLetterPage(items)

    @post(
        "/replay",
        status_code=200,
        description="Re-ingest dead letters not replayed yet (after a fix) and mark them.",
        responses=error_responses(400),
    )
    async def replay(
        self, services: NamedDependency[Services], data: JSONBody[DeadLetterReplayRequest | None] = None
    ) -> DeadLetterReplay:
        request = data or DeadLetterReplayRequest()
        return await replay_dead_letters(services.ingest, source=request.source, limit=request.limit)
