"""One ASGI middleware for every HTTP request: request id, latency metric, server span.

Wrapped around the app's whole ASGI handler (`create_app`), not given to Litestar as
middleware, which runs per route: the router answers 404 and 405 before any route's, and a
scanner or a broken client must show in the metrics and carry a request id like any other.

Kept cheap on purpose (it runs on every request): the metric is one histogram observation
with bounded labels (method, route template, status), the request id is 16 random hex
characters unless the client sent a sane `X-Request-ID`, and the span exists only when
tracing is on.
"""

from __future__ import annotations

import contextvars
import os
import re
import time
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace

from arbitrage.telemetry._metrics import METRICS
from arbitrage.telemetry._tracing import tracer, tracing_enabled

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = b"x-request-id"
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
"""The id of the HTTP request being served (in logs and the `X-Request-ID` response header)."""

_SANE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")

_UNMATCHED = "unmatched"
"""The route label of a request no route took (404, 405, a bad Host, a CORS preflight): never its path,
which a scanner picks."""

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
"""Method labels kept as sent; any other is `OTHER`, as a client may send any token as the method of a 405."""


def request_telemetry(app: ASGIApp) -> ASGIApp:
    """Wrap the app: every HTTP request gets an id, a latency observation and (if on) a span."""

    async def middleware(asgi_scope: Scope, receive: Receive, send: Send) -> None:
        scope: Any = asgi_scope
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        incoming = _header(scope, REQUEST_ID_HEADER)
        rid = incoming if incoming is not None and _SANE_ID.match(incoming) else os.urandom(8).hex().encode()
        token = request_id.set(rid.decode())
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID_HEADER, rid)]  # type: ignore[typeddict-unknown-key]
            await send(message)

        METRICS.requests_in_flight.inc()
        try:
            if tracing_enabled():
                await _traced(app, scope, method, receive, send_with_id, lambda: status)
            else:
                await app(scope, receive, send_with_id)
        finally:
            METRICS.requests_in_flight.dec()
            route = scope.get("path_template") or _UNMATCHED
            METRICS.request_seconds.labels(method, route, str(status)).observe(time.perf_counter() - started)
            request_id.reset(token)

    return middleware


async def _traced(app: ASGIApp, scope: Any, method: str, receive: Receive, send: Send, status: Any) -> None:
    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
    with tracer.start_as_current_span(
        method,
        context=propagate.extract(carrier),
        kind=trace.SpanKind.SERVER,
        attributes={"http.request.method": method, "url.path": scope.get("path", "")},
    ) as span:
        try:
            await app(scope, receive, send)
        finally:
            route = scope.get("path_template") or _UNMATCHED
            code = status()
            span.update_name(f"{method} {route}")
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", code)
            if code >= 500:
                span.set_status(trace.StatusCode.ERROR)


def _header(scope: Any, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None
