"""`POST /schedule/export`, `GET /schedules`, `GET|PATCH|DELETE /schedules/{id}`, `POST /schedules/{id}/run`.

A schedule belongs to the caller that created it, and so do its runs: other callers but admins
(and, with auth off, the local caller) get 404 for it and do not see it listed.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, NotFoundException
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from arbitrage.api._errors import error_responses
from arbitrage.errors import ValidationError
from arbitrage.export import ExportJob, UnknownFormat
from arbitrage.schedule import Schedule, ScheduleBusy, ScheduleCreate, ScheduleDetail, ScheduleNotFound, ScheduleService
from arbitrage.security import caller, destination_allowed, requires


class ScheduleList(msgspec.Struct):
    items: list[Schedule]


class ScheduleController(Controller):
    tags = ["schedules"]
    guards = [requires("export"), destination_allowed]
    request_max_body_size = 1024 * 1024

    @post(
        "/schedule/export",
        status_code=HTTP_201_CREATED,
        description="Export on a timetable (hourly, daily, weekly or cron, UTC).",
        responses=error_responses(400),
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        schedules: NamedDependency[ScheduleService],
        data: JSONBody[ScheduleCreate],
    ) -> Schedule:
        try:
            return await schedules.create(data, principal=caller(request).principal)
        except UnknownFormat as exc:
            raise ValidationError("format", str(exc)) from exc

    @get("/schedules", description="Every schedule of the caller (an admin: every schedule) with its next run time.")
    async def list_schedules(
        self, request: Request[Any, Any, Any], schedules: NamedDependency[ScheduleService]
    ) -> ScheduleList:
        return ScheduleList(items=await schedules.list(principal=caller(request).owner_scope))

    @get(
        "/schedules/{schedule_id:str}",
        description="A schedule, its next run time and its latest runs.",
        responses=error_responses(400, 404),
    )
    async def get_schedule(
        self, request: Request[Any, Any, Any], schedules: NamedDependency[ScheduleService], schedule_id: FromPath[str]
    ) -> ScheduleDetail:
        try:
            return await schedules.get(schedule_id, principal=caller(request).owner_scope)
        except ScheduleNotFound as exc:
            raise NotFoundException(detail=str(exc)) from exc

    @patch(
        "/schedules/{schedule_id:str}",
        description="Change any field of a schedule (null clears an option).",
        responses=error_responses(400, 404),
    )
    async def update(
        self,
        request: Request[Any, Any, Any],
        schedules: NamedDependency[ScheduleService],
        schedule_id: FromPath[str],
        data: JSONBody[dict[str, Any]],
    ) -> Schedule:
        try:
            return await schedules.update(schedule_id, data, principal=caller(request).owner_scope)
        except ScheduleNotFound as exc:
            raise NotFoundException(detail=str(exc)) from exc
        except UnknownFormat as exc:
            raise ValidationError("format", str(exc)) from exc

    @delete(
        "/schedules/{schedule_id:str}",
        status_code=HTTP_204_NO_CONTENT,
        description="Remove a schedule.",
        responses=error_responses(400, 404),
    )
    async def remove(
        self, request: Request[Any, Any, Any], schedules: NamedDependency[ScheduleService], schedule_id: FromPath[str]
    ) -> None:
        try:
            await schedules.delete(schedule_id, principal=caller(request).owner_scope)
        except ScheduleNotFound as exc:
            raise NotFoundException(detail=str(exc)) from exc

    @post(
        "/schedules/{schedule_id:str}/run",
        status_code=HTTP_202_ACCEPTED,
        description="Run a schedule now; 409 while it is running, or when its format is no longer installed.",
        responses=error_responses(400, 404, 409),
    )
    async def run_now(
        self, request: Request[Any, Any, Any], schedules: NamedDependency[ScheduleService], schedule_id: FromPath[str]
    ) -> ExportJob:
        try:
            return await schedules.run_now(schedule_id, principal=caller(request).owner_scope)
        except ScheduleNotFound as exc:
            raise NotFoundException(detail=str(exc)) from exc
        except ScheduleBusy as exc:
            raise ClientException(detail=str(exc), status_code=409) from exc
        except UnknownFormat as exc:
            # The schedule was stored while a plugin format was installed: its state, not this request, is at fault.
            raise ClientException(detail=str(exc), status_code=409, extra={"formats": exc.known}) from exc
