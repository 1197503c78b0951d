"""The one place where package errors become HTTP responses (Litestar's error shape)."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from arbitrage.errors import ArbitrageError, Saturated, TooManyRecords, ValidationError, WarehouseUnavailable

log = logging.getLogger(__name__)


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """Every error answer's body; `extra` only when there is more to say (e.g. the field at fault)."""

    status_code: int
    detail: str
    extra: dict[str, Any] | list[Any] | None = None


_ERRORS = {
    400: "The request breaks the contract: a parameter, or the body; `extra` names the field when it can.",
    404: "Not found.",
    409: "Not possible in the resource's current state.",
    413: "The body is larger than this route takes (bytes, or records for ingest).",
    415: "The body's Content-Encoding is not one this route reads.",
    503: "Unavailable (ingest saturated, or the warehouse down): retry after `Retry-After` seconds.",
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """The OpenAPI entries of the error answers a route gives besides Litestar's own."""
    return {code: ResponseSpec(ErrorBody, description=_ERRORS[code], generate_examples=False) for code in codes}


def arbitrage_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[object]:
    if isinstance(exc, ValidationError):
        return Response(
            ErrorBody(400, str(exc), {"field": exc.field, "reason": exc.reason}),
            status_code=400,
            media_type=MediaType.JSON,
        )
    if isinstance(exc, TooManyRecords):
        return Response(
            ErrorBody(413, str(exc), {"max_records": exc.limit}),
            status_code=413,
            media_type=MediaType.JSON,
        )
    if isinstance(exc, Saturated):
        return Response(
            ErrorBody(503, str(exc)),
            status_code=503,
            headers={"Retry-After": str(exc.retry_after)},
            media_type=MediaType.JSON,
        )
    if isinstance(exc, WarehouseUnavailable):
        log.warning("warehouse unavailable: %s", exc)
        return Response(
            ErrorBody(503, "warehouse unavailable"),
            status_code=503,
            headers={"Retry-After": "5"},
            media_type=MediaType.JSON,
        )
    log.error("unhandled %s: %s", type(exc).__name__, exc)
    return Response(ErrorBody(500, "internal error"), status_code=500, media_type=MediaType.JSON)


def too_deeply_nested(_: Request[Any, Any, Any], __: RecursionError) -> Response[object]:
    """A body nested deeper than the JSON decoder recurses is the client's error (400), not a 500
    with a traceback in the log for every such request."""
    return Response(
        ErrorBody(400, "body: nested too deeply", {"field": "$", "reason": "nested too deeply"}),
        status_code=400,
        media_type=MediaType.JSON,
    )


def internal_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[object]:
    """Anything unexpected: log it with its traceback, answer without one."""
    if isinstance(exc, HTTPException):
        return Response(
            ErrorBody(exc.status_code, exc.detail, exc.extra or None),
            status_code=exc.status_code,
            headers=exc.headers,
            media_type=MediaType.JSON,
        )
    log.exception("unhandled error", exc_info=exc)
    return Response(
        ErrorBody(500, "internal error"), status_code=HTTP_500_INTERNAL_SERVER_ERROR, media_type=MediaType.JSON
    )


EXCEPTION_HANDLERS = {
    ArbitrageError: arbitrage_error_handler,
    RecursionError: too_deeply_nested,
    HTTPException: internal_error_handler,
    Exception: internal_error_handler,
}
