"""Request parameters by the names clients send them, and the rule that a scalar one comes once.

Litestar keeps the last value of a query parameter given twice (`?dex=a&dex=b` filters by
`b`), so a client expecting OR semantics silently gets something else: the app's
`before_request` hook refuses it with a 400 naming the parameter. A parameter declared as a
list takes every value, as Litestar gives it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from litestar import Litestar, Request, Response
from litestar.routes import HTTPRoute

from arbitrage.cache import serve_cached
from arbitrage.errors import ValidationError


class RouteParameters(NamedTuple):
    """What the error handler and the repeat check need of a route's parameters."""

    scalar_query: frozenset[str]
    """Query parameters (as sent) that take one value."""
    sent_as: dict[str, str]
    """Handler argument name → the name in the request (`job_state` → `state`)."""


_NONE = RouteParameters(frozenset(), {})
_OPT_KEY = "arbitrage.parameters"


def route_parameters(request: Request[Any, Any, Any]) -> RouteParameters:
    """The parameters of the route a request was routed to (none before routing).

    Read from the kwargs models Litestar built for the app's routes, the first time any
    route needs them, and kept in each handler's `opt`.
    """
    handler = request.scope.get("route_handler")
    if handler is None:
        return _NONE
    found = handler.opt.get(_OPT_KEY)
    if found is None:
        _index(request.app)
        found = handler.opt.setdefault(_OPT_KEY, _NONE)
    assert isinstance(found, RouteParameters)
    return found


def _index(app: Litestar) -> None:
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler, model in route.route_handler_map.values():
            named = (
                *model.expected_query_params,
                *model.expected_path_params,
                *model.expected_header_params,
                *model.expected_cookie_params,
            )
            handler.opt[_OPT_KEY] = RouteParameters(
                scalar_query=frozenset(p.field_alias for p in model.expected_query_params if not p.is_sequence),
                sent_as={p.field_name: p.field_alias for p in named},
            )


def refuse_repeated_parameters(request: Request[Any, Any, Any]) -> None:
    """Raise a `ValidationError` naming the first scalar query parameter given more than once.

    Costs a byte search on the hot path: a query string without `&` cannot repeat a name.
    """
    if b"&" not in request.scope["query_string"]:
        return
    scalar = route_parameters(request).scalar_query
    params = request.query_params
    for name in params:
        if name in scalar and len(params.getall(name)) > 1:
            raise ValidationError(name, "given more than once")


async def before_request(request: Request[Any, Any, Any]) -> Response[bytes] | None:
    """The app's `before_request` hook, so after the route's guards: refuse a repeated
    parameter, then answer from the response cache when it holds the answer.

    Litestar runs only the nearest layer's hook: a route that sets its own skips both.
    """
    refuse_repeated_parameters(request)
    return await serve_cached(request)
