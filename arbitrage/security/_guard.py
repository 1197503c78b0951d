"""Litestar guards: every route declares the role it needs with `requires(role)`.

401 when a credential is missing or invalid (with `WWW-Authenticate`), 403 when it lacks
the role, 429 with `Retry-After` when its budget is spent. With auth off, callers on this
machine may use every route but `/admin/*`, which always needs the admin role; web pages
of other sites in a browser on this machine are not such callers (`from_other_site`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException, TooManyRequestsException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import Operation

from arbitrage.security._access import (
    PUBLIC,
    Forbidden,
    Identity,
    RateLimited,
    Security,
    Unauthenticated,
    fallback_security,
)
from arbitrage.security._hardening import from_other_site, relayed
from arbitrage.security._keys import ROLES

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="arbitrage"'}


def security_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Security:
    """The app's `Security`, built by the lifespan; apps assembled without it get a fallback."""
    state = connection.app.state
    security = state.get("security")
    if security is None:
        services = state.get("services")
        if services is None:
            raise RuntimeError("the app has neither security nor services in its state")
        security = fallback_security(services.settings)
        state["security"] = security
    assert isinstance(security, Security)
    return security


def credential_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """`Authorization: Bearer <token>` or `X-API-Key: <token>`; None when neither is sent."""
    headers = connection.headers
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""
    return headers.get("x-api-key")


def requires(role: str) -> Guard:
    """A guard admitting callers that hold `role` (`read`, `export`, `ingest` or `admin`)."""
    if role not in ROLES and role != PUBLIC:
        raise ValueError(f"unknown role {role!r}")

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        security = security_of(connection)
        client = connection.client.host if connection.client else None
        credential = credential_of(connection)
        # Only auth-off trust depends on it: skipped on the hot path of requests that carry a credential.
        other_site = (
            credential is None
            and not security.enabled
            and (
                relayed(connection.headers)
                or from_other_site(
                    origin=connection.headers.get("origin"),
                    host=connection.headers.get("host"),
                    client_host=client,
                    trusted_origins=security.settings.auth.cors_origins,
                )
            )
        )
        try:
            identity = await security.admit(role, credential, client, other_site=other_site)
        except Unauthenticated as exc:
            raise NotAuthorizedException(detail=str(exc), headers=_CHALLENGE) from None
        except Forbidden as exc:
            raise PermissionDeniedException(detail=str(exc)) from None
        except RateLimited as exc:
            raise TooManyRequestsException(detail=str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
        connection.scope.setdefault("state", {})["identity"] = identity

    guard.role = role  # type: ignore[attr-defined]
    guard.__name__ = f"requires_{role}"
    guard.__qualname__ = guard.__name__
    return guard


public = requires(PUBLIC)
"""For routes anyone may call without a credential, which hold no data: `/health`, `/metrics`,
the status page `/` and its `/static` files, the API docs `/schema` (docs/security.md)."""


@dataclass
class PublicOperation(Operation):
    """The OpenAPI operation of a `public` route: `security: []` lifts the app's default requirement."""

    def __post_init__(self) -> None:
        self.security = []


class CredentialWatch:
    """Whether the credential a long-lived response (SSE, WebSocket) was admitted with still holds.

    A guard checks a request once, at its start; a stream outlives that check. Revoking a key
    (or a JWT expiring) ends its streams too, at most `every` seconds later: checked on each
    send, not more often, since a check hashes the key or verifies the token.
    """

    def __init__(self, connection: ASGIConnection[Any, Any, Any, Any], role: str, every: float = 5.0) -> None:
        self._credential = credential_of(connection)
        self._security = security_of(connection) if self._credential else None
        self._role = role
        self._every = every
        self._next_check = time.monotonic() + every

    def holds(self) -> bool:
        if self._security is None or self._credential is None:
            return True  # admitted without a credential (auth off, on loopback): nothing to revoke
        now = time.monotonic()
        if now < self._next_check:
            return True
        self._next_check = now + self._every
        identity = self._security.authenticate(self._credential)
        return identity is not None and self._role in identity.roles


def identity_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Identity | None:
    """Who the guard admitted for this request."""
    identity = connection.scope.get("state", {}).get("identity")
    return identity if isinstance(identity, Identity) else None


def caller(connection: ASGIConnection[Any, Any, Any, Any]) -> Identity:
    """Who the guard admitted for this request, where a route acts on the caller's behalf.

    Raises:
        RuntimeError: no guard ran, so the caller is unknown (a route without `requires`).
    """
    identity = identity_of(connection)
    if identity is None:
        raise RuntimeError("no identity for this request: the route declares no role")
    return identity


def role_of(handler: BaseRouteHandler) -> str | None:
    """The role a route declares through its guards (any layer), or None when it declares none."""
    for guard in handler.resolve_guards():
        role = getattr(guard, "role", None)
        if role is not None:
            return str(role)
    return None


async def destination_allowed(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Refuse export bodies whose `destination`/`upload_to` lies outside the allowed roots.

    Reads the JSON body (Litestar keeps it for the handler); bodies that are not JSON
    objects are left for the handler to reject.
    """
    if not isinstance(connection, Request) or connection.method not in ("POST", "PUT", "PATCH"):
        return
    body = await connection.body()
    if not body:
        return
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return
    if not isinstance(document, dict):
        return
    security = security_of(connection)
    for field in ("destination", "upload_to"):
        value = document.get(field)
        if isinstance(value, str) and value:
            security.check_destination(value, field)
