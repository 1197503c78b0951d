"""Security headers on every HTTP response (no per-request objects beyond the header list).

`add_security_headers` is an app-level `before_send` hook: it sees every response, the
router's own 404 and 405 included, which middleware given to `Litestar(middleware=...)` never
sees (Litestar wraps each route handler in it, so a path or method no route matches got
none of the headers).
"""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import Message, Scope

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)
_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
)
_HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
_NO_STORE = (b"cache-control", b"no-store")


async def add_security_headers(message: Message, scope: Scope) -> None:
    """Add the headers a handler did not set itself to a response's start; `/admin` answers are never cached."""
    if message["type"] != "http.response.start" or scope["type"] != ScopeType.HTTP:
        return
    extra = list(_HEADERS)
    if scope.get("scheme") == "https":
        extra.append(_HSTS)
    if scope["path"].startswith("/admin"):
        extra.append(_NO_STORE)
    headers = list(message.get("headers") or [])
    present = {name.lower() for name, _ in headers}
    headers.extend(h for h in extra if h[0] not in present)
    message["headers"] = headers  # type: ignore[typeddict-unknown-key]
