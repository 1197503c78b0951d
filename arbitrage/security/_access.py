"""Who is calling and what they may do: the admin token, API keys, JWTs, rate limits.

`Security` is built once by the app's lifespan (`start_security`) and consulted by the
route guards. Nothing here imports Litestar; the guards translate its errors to 401, 403
and 429.
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import logging
import os
import secrets
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from arbitrage.config import Settings
from arbitrage.errors import ArbitrageError, ConfigError
from arbitrage.security._hardening import check_destination, client_network, is_local_client
from arbitrage.security._jwt import InvalidToken, JwtVerifier, roles_of
from arbitrage.security._keys import ROLES, TOKEN_PREFIX, KeyStore, expand_roles, hash_token
from arbitrage.security._rate_limit import MemoryRateLimiter, RateLimiter, RedisRateLimiter

if TYPE_CHECKING:
    from arbitrage.storage import Warehouse

log = logging.getLogger(__name__)

PUBLIC = "public"
"""The role of routes anyone may call (health, metrics, the status page, the API docs): no credential, no rate limit."""
_MAX_CREDENTIAL = 8192
MIN_ADMIN_TOKEN_CHARS = 32
"""A configured admin credential shorter than this stops the start-up (the generated one has 52)."""


class Unauthenticated(ArbitrageError):
    """No credential, or one that is not valid (401)."""


class Forbidden(ArbitrageError):
    """A valid credential without the role a route needs (403)."""


class RateLimited(ArbitrageError):
    """The client spent its budget; retry after `retry_after` seconds (429)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"rate limit exceeded, retry after {retry_after}s")
        self.retry_after = retry_after


class Identity(msgspec.Struct, frozen=True):
    """The caller of a request: how it proved itself, its id, and the roles it holds."""

    kind: str
    """`admin_token`, `api_key`, `jwt`, `local` (auth off, loopback) or `anonymous`."""
    subject: str
    """Key id, token subject, `admin`, or the client address."""
    roles: frozenset[str]

    @property
    def principal(self) -> str:
        """Who owns the export jobs and schedules this caller creates: `<kind>:<subject>` (the kind keeps a
        JWT `sub` from posing as a key id), never a credential; "" for the local caller with auth off."""
        return "" if self.kind in ("local", "anonymous") else f"{self.kind}:{self.subject}"

    @property
    def owner_scope(self) -> str | None:
        """The principal whose export jobs and schedules this caller may see and manage; None for all of them.

        Admins manage everyone's; so does the local caller with auth off, who could before owners were
        recorded. Anyone else only their own: jobs and schedules without an owner (created before owners
        were recorded, or locally with auth off) are then the admins' alone.
        """
        return None if "admin" in self.roles or self.kind == "local" else self.principal


def visible_to(owner: str | None, scope: str | None) -> bool:
    """Whether something `owner` created (an export job, a schedule; None: no one recorded) is seen
    by a caller of `scope` (`Identity.owner_scope`: None sees everything, "" the unowned)."""
    return scope is None or (owner or "") == scope


ANONYMOUS = Identity("anonymous", "", frozenset())
LOCAL = Identity("local", "loopback", expand_roles(["export", "ingest", "read"]))


class Security:
    """Credential checks and rate limits for one app.

    Args:
        settings: the whole settings (auth, export dir, server).
        admin_token: the admin credential (configured or generated).
        keys: API key store, or None where the warehouse is not at hand.
        limiter: rate limiter, or None when rate limiting is off.

    Raises:
        ConfigError: JWT settings `check_jwt_settings` refuses.
    """

    def __init__(
        self, settings: Settings, *, admin_token: str, keys: KeyStore | None, limiter: RateLimiter | None
    ) -> None:
        auth = settings.auth
        self.settings = settings
        self.enabled = auth.enabled
        self.keys = keys
        self.limiter = limiter
        self.jwt = check_jwt_settings(settings)
        self._admin_digest = hash_token(admin_token) if admin_token else b""
        self.secrets = tuple(s for s in (admin_token, auth.jwt_secret) if s)
        """Values that must never appear in logs or answers (used by the error log's scrubber)."""
        self.started_at = time.time()
        self.errors = RecentErrors(self.secrets)

    async def admit(
        self, role: str, credential: str | None, client_host: str | None, *, other_site: bool = False
    ) -> Identity:
        """The caller's identity when it may use a route that needs `role`.

        `other_site`: the request may come from another site's web page in a browser on this
        machine (`from_other_site`), or a proxy relayed it (`relayed`): no auth-off trust.

        Raises:
            Unauthenticated: no or an invalid credential where one is needed.
            Forbidden: the credential lacks `role`.
            RateLimited: the caller (key, subject or address) is over its budget.
        """
        if role == PUBLIC:
            return ANONYMOUS
        if credential is None:
            local = not self.enabled and role != "admin" and is_local_client(client_host)
            if local and not other_site:
                return LOCAL
            await self._throttle(f"ip:{client_network(client_host)}")
            reason = (
                " (a request from another site's web page, or relayed by a proxy, is not trusted as local)"
                if local
                else ""
            )
            raise Unauthenticated(f"credentials required: send `Authorization: Bearer <token>` or `X-API-Key`{reason}")
        identity = self.authenticate(credential)
        if identity is None:
            await self._throttle(f"ip:{client_network(client_host)}")
            raise Unauthenticated("invalid credentials")
        await self._throttle(f"{identity.kind}:{identity.subject}")
        if role not in identity.roles:
            raise Forbidden(f"this route requires the {role!r} role")
        return identity

    def authenticate(self, credential: str) -> Identity | None:
        """The identity a credential proves, or None. Hash comparisons run in constant time."""
        if len(credential) > _MAX_CREDENTIAL:
            return None
        if self._admin_digest and hmac.compare_digest(hash_token(credential), self._admin_digest):
            return Identity("admin_token", "admin", frozenset(ROLES))
        if credential.startswith(TOKEN_PREFIX):
            found = self.keys.verify(credential) if self.keys is not None else None
            return Identity("api_key", found[0], found[1]) if found else None
        if self.jwt.enabled and credential.count(".") == 2:
            try:
                claims = self.jwt.verify(credential)
            except InvalidToken:
                return None
            subject = claims.get("sub")
            if not isinstance(subject, str) or not subject:
                # Each token its own rate-limit bucket: one shared by every token without `sub` let one client starve the rest.
                subject = f"token-{hash_token(credential)[:8].hex()}"
            return Identity("jwt", subject, expand_roles(roles_of(claims)))
        return None

    def check_destination(self, url: str, field: str) -> None:
        """Raises `ValidationError` unless exports may write to `url`."""
        check_destination(url, export_dir=self.settings.export.dir, roots=self.settings.auth.export_roots, field=field)

    async def _throttle(self, client: str) -> None:
        if self.limiter is None:
            return
        wait = await self.limiter.take(client)
        if wait > 0:
            raise RateLimited(max(1, int(wait + 0.999)))

    async def close(self) -> None:
        self.errors.detach()
        if self.keys is not None:
            await self.keys.close()
        if self.limiter is not None:
            await self.limiter.close()


async def start_security(settings: Settings, warehouse: Warehouse) -> Security:
    """Load keys, resolve (or generate) the admin token, connect the rate limiter."""
    keys = KeyStore(warehouse)
    await keys.start()
    try:
        security = Security(settings, admin_token=admin_token(settings), keys=keys, limiter=rate_limiter(settings))
    except BaseException:
        await keys.close()
        raise
    security.errors.attach()
    return security


def fallback_security(settings: Settings) -> Security:
    """Security for an app assembled without `start_security` (route tests): no API keys,
    the configured admin token only, memory rate limits."""
    return Security(
        settings, admin_token=settings.auth.admin_token, keys=None, limiter=rate_limiter(settings, memory=True)
    )


def rate_limiter(settings: Settings, *, memory: bool = False) -> RateLimiter | None:
    auth = settings.auth
    if auth.rate_limit_per_minute <= 0:
        return None
    if settings.redis.url and not memory:
        # Under redis.key_prefix like every other key: deployments sharing a Redis keep their own budgets.
        prefix = f"{settings.redis.key_prefix}:ratelimit:"
        return RedisRateLimiter(settings.redis.url, auth.rate_limit_per_minute, auth.rate_limit_burst, prefix=prefix)
    return MemoryRateLimiter(auth.rate_limit_per_minute, auth.rate_limit_burst)


def admin_token_path(settings: Settings) -> Path:
    return Path(settings.auth.admin_token_file or Path(settings.storage.data_dir) / "admin_token")


def check_jwt_settings(settings: Settings) -> JwtVerifier:
    """The verifier of the configured JWTs.

    An RS256 key is an identity provider's, which signs tokens for every application it serves:
    without an audience, a token it issued to any of them (with roles that mean something else
    there) would open this API.

    Raises:
        ConfigError: naming `auth.jwt_audience`, or `auth.jwt_public_key` when it is no RSA public key.
    """
    auth = settings.auth
    if auth.jwt_public_key and not auth.jwt_audience:
        raise ConfigError(
            "auth.jwt_audience: required with auth.jwt_public_key, or tokens the identity provider "
            "issued to other applications are accepted here; set it to this API's audience"
        )
    return JwtVerifier(
        secret=auth.jwt_secret, public_key=auth.jwt_public_key, issuer=auth.jwt_issuer, audience=auth.jwt_audience
    )


def admin_token(settings: Settings) -> str:
    """`auth.admin_token`, else the token file's content, else a new token written to it (mode 0600).

    Raises:
        ConfigError: the token is shorter than `MIN_ADMIN_TOKEN_CHARS`, or the file exists but
            cannot be read, is empty, others may read it, or it belongs to another user.
    """
    if settings.auth.admin_token:
        return _long_enough(settings.auth.admin_token, "auth.admin_token")
    path = admin_token_path(settings)
    if path.exists():
        info = path.stat()
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise ConfigError(f"auth.admin_token_file: {path} is readable by others (mode {mode:o}); chmod 600 it")
        if info.st_uid != os.geteuid():
            # Its owner can read and rewrite it: a file another user planted (or swapped in) hands them admin.
            raise ConfigError(
                f"auth.admin_token_file: {path} belongs to another user (uid {info.st_uid}), who could read or "
                "replace the admin credential; chown it to the user running the server"
            )
        token = _read_token_file(path)
        if not token:
            raise ConfigError(f"auth.admin_token_file: {path} is empty")
        return _long_enough(token, f"auth.admin_token_file: {path}")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = f"arbadmin_{secrets.token_urlsafe(32)}"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    log.warning("generated the admin credential in %s (mode 600); send it as `Authorization: Bearer …`", path)
    return token


def _long_enough(token: str, source: str) -> str:
    """The token, unless it is short enough to guess: it opens every route, `/admin/*` included,
    and a rate limit per address slows down, but does not stop, an attacker trying a few likely
    words (`changeme`, `admin`) from several addresses."""
    if len(token) < MIN_ADMIN_TOKEN_CHARS:
        raise ConfigError(
            f"{source}: the admin credential has {len(token)} characters, at least {MIN_ADMIN_TOKEN_CHARS} are "
            "needed (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`), or leave it unset to "
            "have one generated"
        )
    return token


def _read_token_file(path: Path) -> str:
    """The token file's text; a directory, an unreadable or a non-UTF-8 file is a `ConfigError`
    naming the key (not a traceback, and never the bytes read)."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"auth.admin_token_file: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"auth.admin_token_file: {path} is not UTF-8 text") from None


class ErrorRecord(msgspec.Struct):
    at: float
    level: str
    logger: str
    message: str


class RecentErrors(logging.Handler):
    """The last warnings and errors logged by the process, for `/admin/status`.

    Messages are capped at 500 characters and scrubbed of the secrets given.
    """

    def __init__(self, secrets_to_hide: tuple[str, ...], size: int = 50) -> None:
        super().__init__(logging.WARNING)
        self._records: collections.deque[ErrorRecord] = collections.deque(maxlen=size)
        self._secrets = secrets_to_hide

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message += f" ({type(record.exc_info[1]).__name__})"
            for secret in self._secrets:
                message = message.replace(secret, "***")
            self._records.append(ErrorRecord(record.created, record.levelname, record.name, message[:500]))

    def latest(self, limit: int = 20) -> list[ErrorRecord]:
        return list(self._records)[-limit:][::-1]

    def attach(self) -> None:
        logging.getLogger().addHandler(self)

    def detach(self) -> None:
        logging.getLogger().removeHandler(self)
