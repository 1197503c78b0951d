"""`POST /export/{format}`, `GET /exports`, `GET|DELETE /exports/{id}`, `GET /exports/{id}/download`.

A job belongs to the caller that submitted it: other callers but admins (and, with auth off,
the local caller) get 404 for it, as for an id that does not exist, and do not see it listed.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, NotFoundException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response import Response, Stream
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from arbitrage.api._errors import error_responses
from arbitrage.api._openapi import FILE
from arbitrage.export import (
    ACTIVE_STATES,
    ExportJob,
    ExportRequest,
    ExportService,
    JobNotDownloadable,
    JobNotFound,
    JobState,
    UnknownFormat,
    formats,
)
from arbitrage.security import caller, destination_allowed, requires


class ExportAccepted(msgspec.Struct):
    """The answer to `POST /export/{format}`: poll `GET /exports/{id}`."""

    id: str
    state: JobState
    destination: str


class ExportList(msgspec.Struct):
    items: list[ExportJob]


class FormatList(msgspec.Struct):
    formats: list[str]


class ExportController(Controller):
    tags = ["exports"]
    guards = [requires("export"), destination_allowed]
    request_max_body_size = 1024 * 1024

    @get("/export/formats", description="Names of the export formats this server knows.")
    async def list_formats(self) -> FormatList:
        return FormatList(formats=formats())

    @post(
        "/export/{format_name:str}",
        status_code=HTTP_202_ACCEPTED,
        description="Start an export job; answers at once with its id. Unknown format: 404 with the list.",
        responses=error_responses(400, 404),
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        exports: NamedDependency[ExportService],
        format_name: FromPath[str],
        data: JSONBody[ExportRequest | None] = None,
    ) -> ExportAccepted:
        try:
            job = await exports.submit(format_name, data or ExportRequest(), principal=caller(request).principal)
        except UnknownFormat as exc:
            raise NotFoundException(detail=str(exc), extra={"formats": exc.known}) from exc
        return ExportAccepted(id=job.id, state=job.state, destination=job.destination)

    @get("/exports", description="Export jobs, newest first.", responses=error_responses(400))
    async def list_jobs(
        self,
        request: Request[Any, Any, Any],
        exports: NamedDependency[ExportService],
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        job_state: Annotated[JobState | None, QueryParameter(name="state")] = None,
    ) -> ExportList:
        jobs = await exports.list(limit=limit, state=job_state, principal=caller(request).owner_scope)
        return ExportList(items=jobs)

    @get(
        "/exports/{job_id:str}",
        description="State, rows written, bytes, progress, files and error of a job.",
        responses=error_responses(400, 404),
    )
    async def get_job(
        self, request: Request[Any, Any, Any], exports: NamedDependency[ExportService], job_id: FromPath[str]
    ) -> ExportJob:
        try:
            return await exports.get(job_id, principal=caller(request).owner_scope)
        except JobNotFound as exc:
            raise NotFoundException(detail=str(exc)) from exc

    @delete(
        "/exports/{job_id:str}",
        status_code=HTTP_200_OK,
        description="Cancel a queued or running job: 200 with the job once it has ended (a finished job is "
        "unchanged), 202 with the job as it is while the process running it has yet to stop it.",
        responses={
            HTTP_202_ACCEPTED: ResponseSpec(ExportJob, description="Cancel requested; the job has not stopped yet."),
            **error_responses(400, 404),
        },
    )
    async def cancel_job(
        self, request: Request[Any, Any, Any], exports: NamedDependency[ExportService], job_id: FromPath[str]
    ) -> Response[ExportJob]:
        try:
            job = await exports.cancel(job_id, principal=caller(request).owner_scope)
        except JobNotFound as exc:
            raise NotFoundException(detail=str(exc)) from exc
        return Response(job, status_code=HTTP_202_ACCEPTED if job.state in ACTIVE_STATES else HTTP_200_OK)

    @get(
        "/exports/{job_id:str}/download",
        description="The file of a single-file export, or a zip of a multi-file one (with its manifest). "
        "409 while the job is not done.",
        responses={200: FILE, **error_responses(400, 404, 409)},
    )
    async def download(
        self, request: Request[Any, Any, Any], exports: NamedDependency[ExportService], job_id: FromPath[str]
    ) -> Stream:
        try:
            result = await exports.download(job_id, principal=caller(request).owner_scope)
        except JobNotFound as exc:
            raise NotFoundException(detail=str(exc)) from exc
        except JobNotDownloadable as exc:
            raise ClientException(detail=str(exc), status_code=409) from exc
        return Stream(
            result.chunks,
            media_type=result.media_type,
            headers={"Content-Disposition": f'attachment; filename="{result.filename}"'},
        )
