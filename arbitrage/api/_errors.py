"""The one place where errors become HTTP responses, in one body shape.

Every error answers `{"status_code", "detail", "extra"?}` (Litestar's shape). A 400 names the
field at fault in `extra` as `{"field", "reason"}`, whoever found it: this package
(`ValidationError`), Litestar checking parameters and bodies against the handler's signature
(`ValidationException`, whose `extra` is a list of its own), or the repeat check
(`arbitrage.api._parameters`). A client reads one shape.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Reference
from litestar.status_codes import HTTP_400_BAD_REQUEST, HTTP_500_INTERNAL_SERVER_ERROR

from arbitrage.api._parameters import route_parameters
from arbitrage.errors import ArbitrageError, Saturated, TooManyRecords, ValidationError, WarehouseUnavailable

log = logging.getLogger(__name__)


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """Every error answer's body but a 400's; `extra` only when there is more to say (e.g. the known formats)."""

    status_code: int
    detail: str
    extra: dict[str, Any] | None = None


class FieldAtFault(msgspec.Struct):
    """A 400's `extra`: what the client has to change."""

    field: Annotated[
        str,
        msgspec.Meta(
            description="A query, path or header parameter by the name sent (`limit`, `cursor`, `Last-Event-ID`), "
            "or a body field as a JSON path (`legs[0].dex`; `$` is the whole body)."
        ),
    ]
    reason: str


class BadRequestBody(msgspec.Struct, omit_defaults=True):
    """A 400's body: `extra` names the field at fault, always when a parameter or a body field is."""

    status_code: int
    detail: Annotated[str, msgspec.Meta(description="What is wrong: `<field>: <reason>` for each field at fault.")]
    extra: FieldAtFault | None = None


_ERRORS = {
    400: "The request breaks the contract: `extra` names the parameter or body field at fault and why "
    "(a scalar query parameter given more than once included).",
    404: "Not found.",
    409: "Not possible in the resource's current state.",
    413: "The body is larger than this route takes (bytes, or records for ingest).",
    415: "The body's Content-Encoding is not one this route reads.",
    503: "Unavailable (ingest saturated, or the warehouse down): retry after `Retry-After` seconds.",
}


_REFUSALS = {
    401: "No valid credential (auth on, or an `/admin` route): none, or one unknown, revoked or expired.",
    403: "The credential lacks the role this route needs, or the request came from another site's page.",
    429: "Rate limited: retry after `Retry-After` seconds.",
}


@dataclass
class GuardedOperation(Operation):
    """The OpenAPI operation of a route behind a role guard: it also declares what the guard and
    the body limit answer before the handler runs, which no route lists itself."""

    def __post_init__(self) -> None:
        refusals = {**_REFUSALS, **({413: _ERRORS[413]} if self.request_body is not None else {})}
        body = {MediaType.JSON.value: OpenAPIMediaType(schema=Reference(ref="#/components/schemas/ErrorBody"))}
        responses = self.responses if self.responses is not None else {}
        for code, description in refusals.items():
            responses.setdefault(str(code), OpenAPIResponse(description=description, content=body))
        self.responses = responses


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """The OpenAPI entries of a route's error answers; 400 replaces Litestar's own entry, which
    declares the list `extra` clients never get."""
    return {
        code: ResponseSpec(
            BadRequestBody if code == HTTP_400_BAD_REQUEST else ErrorBody,
            description=_ERRORS[code],
            generate_examples=False,
        )
        for code in codes
    }


def _bad_request(
    detail: str, field: str | None = None, reason: str = "", headers: dict[str, str] | None = None
) -> Response[object]:
    extra = FieldAtFault(field, reason) if field is not None else None
    return Response(BadRequestBody(400, detail, extra), status_code=400, headers=headers, media_type=MediaType.JSON)


def arbitrage_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[object]:
    if isinstance(exc, ValidationError):
        return _bad_request(str(exc), exc.field, exc.reason)
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


_NAMED_FIELD = re.compile(r"^Object (?:missing required|contains unknown) field `(.+)`$")
"""msgspec's messages that name a field of the object the error's key points to."""


def _field_of(request: Request[Any, Any, Any], error: dict[str, Any]) -> str | None:
    """The field one of Litestar's validation messages is about, as the client sent it.

    Litestar keys a parameter by the handler's argument name and a body field by its path
    (`roles[0]`), the body itself as `data`; an unknown or missing field is only named in the message.
    """
    key = error.get("key")
    if not isinstance(key, str):
        return None
    if error.get("source") != "body":
        return route_parameters(request).sent_as.get(key, key)
    path = "" if key == "data" else key
    named = _NAMED_FIELD.match(str(error.get("message", "")))
    if named is not None:
        return f"{path}.{named.group(1)}" if path else named.group(1)
    return path or "$"


def invalid_request(request: Request[Any, Any, Any], exc: ValidationException) -> Response[object]:
    """Litestar's 400s for parameters and bodies that break the handler's signature, in the 400 shape.

    Litestar lists every failed check; `detail` keeps them all, `extra` names the first.
    """
    if isinstance(exc.extra, list) and exc.extra:
        faults = [(_field_of(request, e), str(e.get("message", ""))) for e in exc.extra if isinstance(e, dict)]
        field, reason = next(((f, r) for f, r in faults if f is not None), (None, ""))
        detail = "; ".join(f"{f}: {r}" if f is not None else r for f, r in faults)
        return _bad_request(detail, field, reason)
    if isinstance(exc.__cause__, KeyError) and exc.__cause__.args:
        # A required parameter is missing; Litestar says which in the message only.
        name = str(exc.__cause__.args[0])
        return _bad_request(f"{name}: required", name, "required")
    return http_error_handler(request, exc)


def http_error_handler(_: Request[Any, Any, Any], exc: HTTPException) -> Response[object]:
    """Litestar's and the routes' own HTTP errors; a body Litestar cannot decode is the whole body (`$`) at fault."""
    if exc.status_code == HTTP_400_BAD_REQUEST:
        if isinstance(exc.__cause__, SerializationException):
            return _bad_request(f"$: {exc.detail}", "$", exc.detail)
        return _bad_request(exc.detail, headers=exc.headers)
    return Response(
        ErrorBody(exc.status_code, exc.detail, exc.extra if isinstance(exc.extra, dict) and exc.extra else None),
        status_code=exc.status_code,
        headers=exc.headers,
        media_type=MediaType.JSON,
    )


def too_deeply_nested(_: Request[Any, Any, Any], __: RecursionError) -> Response[object]:
    """A body nested deeper than the JSON decoder recurses is the client's error (400), not a 500
    with a traceback in the log for every such request."""
    return _bad_request("$: nested too deeply", "$", "nested too deeply")


def internal_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[object]:
    """Anything unexpected: log it with its traceback, answer without one."""
    log.exception("unhandled error", exc_info=exc)
    return Response(
        ErrorBody(500, "internal error"), status_code=HTTP_500_INTERNAL_SERVER_ERROR, media_type=MediaType.JSON
    )


EXCEPTION_HANDLERS = {
    ArbitrageError: arbitrage_error_handler,
    RecursionError: too_deeply_nested,
    ValidationException: invalid_request,
    HTTPException: http_error_handler,
    Exception: internal_error_handler,
}
