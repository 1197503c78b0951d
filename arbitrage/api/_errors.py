"""The one place where package errors become HTTP responses (Litestar's error shape)."""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from arbitrage.errors import ArbitrageError, Saturated, ValidationError, WarehouseUnavailable

log = logging.getLogger(__name__)


def _body(status: int, detail: str, extra: object = None) -> dict[str, object]:
    body: dict[str, object] = {"status_code": status, "detail": detail}
    if extra is not None:
        body["extra"] = extra
    return body


def arbitrage_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[object]:
    if isinstance(exc, ValidationError):
        return Response(
            _body(400, str(exc), {"field": exc.field, "reason": exc.reason}), status_code=400, media_type=MediaType.JSON
        )
    if isinstance(exc, Saturated):
        return Response(
            _body(503, str(exc)),
            status_code=503,
            headers={"Retry-After": str(exc.retry_after)},
            media_type=MediaType.JSON,
        )
    if isinstance(exc, WarehouseUnavailable):
        log.warning("warehouse unavailable: %s", exc)
        return Response(
            _body(503, "warehouse unavailable"),
            status_code=503,
            headers={"Retry-After": "5"},
            media_type=MediaType.JSON,
        )
    log.error("unhandled %s: %s", type(exc).__name__, exc)
    return Response(_body(500, "internal error"), status_code=500, media_type=MediaType.JSON)


def internal_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[object]:
    """Anything unexpected: log it with its traceback, answer without one."""
    if isinstance(exc, HTTPException):
        return Response(
            _body(exc.status_code, exc.detail, exc.extra or None),
            status_code=exc.status_code,
            headers=exc.headers,
            media_type=MediaType.JSON,
        )
    log.exception("unhandled error", exc_info=exc)
    return Response(_body(500, "internal error"), status_code=HTTP_500_INTERNAL_SERVER_ERROR, media_type=MediaType.JSON)


EXCEPTION_HANDLERS = {
    ArbitrageError: arbitrage_error_handler,
    HTTPException: internal_error_handler,
    Exception: internal_error_handler,
}
