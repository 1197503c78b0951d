"""API keys: random tokens shown once, kept only as SHA-256 hashes in `api_keys`.

A token reads `arb_<id>_<secret>`: the id finds the record, the secret (256 random bits)
proves possession. SHA-256 is enough for tokens of that entropy (a slow hash such as
scrypt protects low-entropy passwords, and would cost milliseconds per request). Rows are
versioned (ReplacingMergeTree): revoking inserts a newer version with `revoked_at` set.
Verification reads an in-memory copy of the table, refreshed periodically, never the
warehouse.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, cast

import msgspec
import pyarrow as pa

from arbitrage.clock import utc_now
from arbitrage.errors import ArbitrageError, ValidationError

if TYPE_CHECKING:
    from arbitrage.storage import Warehouse

log = logging.getLogger(__name__)

ROLES = ("read", "export", "ingest", "admin")
"""`read` queries data; `export` runs exports and schedules (and reads); `ingest` writes
transactions; `admin` may do everything, including /admin/*."""

IMPLIED_ROLES = {
    "read": frozenset({"read"}),
    "export": frozenset({"export", "read"}),
    "ingest": frozenset({"ingest"}),
    "admin": frozenset(ROLES),
}

TOKEN_PREFIX = "arb_"
_TOKEN = re.compile(r"^arb_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_DUMMY_HASH = hashlib.sha256(b"no such key").digest()
REFRESH_SECONDS = 10.0
"""How often the in-memory copy is re-read (keys created or revoked by other processes)."""


class KeyNotFound(ArbitrageError):
    """No API key has this id."""


class ApiKey(msgspec.Struct, kw_only=True):
    """An API key as listed: never its secret or hash."""

    id: str
    name: str
    roles: list[str]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        now = datetime.now(UTC)
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class CreatedKey(msgspec.Struct, kw_only=True):
    """A new key and its token; the token is shown this once and never stored."""

    key: ApiKey
    token: str


class KeyCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Body of `POST /admin/keys`."""

    name: str = msgspec.field(default="")
    roles: list[str] = msgspec.field(default_factory=lambda: ["read"])
    expires_in_days: float | None = None


def expand_roles(roles: frozenset[str] | list[str]) -> frozenset[str]:
    """Every role a set of granted roles implies (unknown names grant nothing)."""
    granted: set[str] = set()
    for role in roles:
        granted |= IMPLIED_ROLES.get(role, frozenset())
    return frozenset(granted)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def check_new_key(name: str, roles: list[str], expires_in_days: float | None) -> None:
    """Raises `ValidationError` naming the field that is not acceptable."""
    if len(name) > 200 or not name.isprintable():
        raise ValidationError("name", "at most 200 printable characters")
    if not roles:
        raise ValidationError("roles", f"give at least one of {', '.join(ROLES)}")
    for role in roles:
        if role not in ROLES:
            raise ValidationError("roles", f"unknown role {role[:40]!r} (known: {', '.join(ROLES)})")
    if expires_in_days is not None and not 0 < expires_in_days <= 3650:
        raise ValidationError("expires_in_days", "more than 0 and at most 3650 days")


class _Entry(msgspec.Struct):
    digest: bytes
    roles: frozenset[str]
    expires: float | None
    revoked: bool


class KeyStore:
    """The `api_keys` table plus an in-memory map id → hash and roles for verification."""

    def __init__(self, warehouse: Warehouse) -> None:
        self._warehouse = warehouse
        self._table = f"{warehouse.database}.api_keys"
        self._final = " FINAL"
        self._entries: dict[str, _Entry] = {}
        self._writes = 0
        self._written: dict[str, int] = {}
        self._refresher: asyncio.Task[None] | None = None

    async def start(self, *, refresh: bool = True) -> None:
        await self.reload()
        if refresh:
            self._refresher = asyncio.create_task(self._refresh_forever(), name="api-key-refresh")

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None

    def verify(self, token: str) -> tuple[str, frozenset[str]] | None:
        """(key id, granted roles) for a valid, unrevoked, unexpired token, else None.

        The hash comparison runs in constant time, also for unknown ids.
        """
        match = _TOKEN.match(token)
        key_id = match.group(1) if match else ""
        entry = self._entries.get(key_id)
        digest = hash_token(token)
        stored = entry.digest if entry is not None else _DUMMY_HASH
        if not hmac.compare_digest(digest, stored) or entry is None or entry.revoked:
            return None
        if entry.expires is not None and time.time() >= entry.expires:
            return None
        return key_id, entry.roles

    async def create(self, name: str, roles: list[str], expires_in_days: float | None = None) -> CreatedKey:
        check_new_key(name, roles, expires_in_days)
        key_id = secrets.token_hex(6)
        token = f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        now = utc_now()
        expires = now + timedelta(days=expires_in_days) if expires_in_days is not None else None
        key = ApiKey(id=key_id, name=name, roles=sorted(set(roles)), created_at=now, expires_at=expires)
        digest = hash_token(token)
        await self._write(key, digest)
        self._remember_written(key, digest)
        return CreatedKey(key=key, token=token)

    async def revoke(self, key_id: str) -> ApiKey:
        """Mark a key revoked (idempotent). Raises `KeyNotFound`."""
        rows = await self._read("id = {id:String}", {"id": key_id})
        if not rows:
            raise KeyNotFound(f"no API key {key_id[:40]!r}")
        key, digest = rows[0]
        if key.revoked_at is None:
            key.revoked_at = utc_now()
            await self._write(key, digest)
        self._remember_written(key, digest)
        return key

    async def list(self) -> list[ApiKey]:
        return [key for key, _ in await self._read("1", {})]

    async def reload(self) -> None:
        """Replace the in-memory copy with the table's, keeping what this process wrote while
        the read ran (the read may predate it) and every revocation already seen (a replica
        that lags must not bring a revoked key back)."""
        since = self._writes
        rows = await self._read("1", {})
        previous = self._entries
        self._entries = {}
        for key, digest in rows:
            self._remember(key, digest)
            if key.id in previous and previous[key.id].revoked:
                self._entries[key.id].revoked = True
        self._written = {key_id: write for key_id, write in self._written.items() if write > since}
        for key_id in self._written:
            self._entries[key_id] = previous[key_id]

    def _remember_written(self, key: ApiKey, digest: bytes) -> None:
        self._writes += 1
        self._written[key.id] = self._writes
        self._remember(key, digest)

    def _remember(self, key: ApiKey, digest: bytes) -> None:
        self._entries[key.id] = _Entry(
            digest=digest,
            roles=expand_roles(key.roles),
            expires=key.expires_at.timestamp() if key.expires_at else None,
            revoked=key.revoked_at is not None,
        )

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self.reload()
            except Exception as exc:
                log.warning("API key refresh failed: %s", type(exc).__name__)

    async def _write(self, key: ApiKey, digest: bytes) -> None:
        table = pa.table(
            {
                "id": [key.id],
                "version": pa.array([time.time_ns()], pa.uint64()),
                "name": [key.name],
                "roles": pa.array([key.roles], pa.list_(pa.string())),
                "hash": [digest.hex()],
                "created_at": pa.array([key.created_at], pa.timestamp("ms", "UTC")),
                "expires_at": pa.array([key.expires_at], pa.timestamp("ms", "UTC")),
                "revoked_at": pa.array([key.revoked_at], pa.timestamp("ms", "UTC")),
            }
        )
        await self._warehouse.insert_arrow("api_keys", table)

    async def _read(self, where: str, params: dict[str, str]) -> builtins.list[tuple[ApiKey, bytes]]:
        table = await self._warehouse.query_arrow(
            f"SELECT id, name, roles, hash, created_at, expires_at, revoked_at FROM {self._table}{self._final} "
            f"WHERE {where} ORDER BY created_at, id",
            params,
        )
        rows = []
        for row in table.to_pylist():
            key = ApiKey(
                id=row["id"],
                name=row["name"],
                roles=list(row["roles"]),
                created_at=cast(datetime, _utc(row["created_at"])),
                expires_at=_utc(row["expires_at"]),
                revoked_at=_utc(row["revoked_at"]),
            )
            rows.append((key, bytes.fromhex(row["hash"])))
        return rows


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
