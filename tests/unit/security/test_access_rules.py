"""Who gets through with auth off and on, decided without any I/O."""

from __future__ import annotations

import pytest

from arbitrage.config import load_settings
from arbitrage.security import Security
from arbitrage.security._access import Forbidden, RateLimited, Unauthenticated
from arbitrage.security._rate_limit import MemoryRateLimiter

pytestmark = pytest.mark.anyio
ADMIN = "unit-admin-token"


def _security(enabled: bool, limiter: MemoryRateLimiter | None = None) -> Security:
    settings = load_settings(env={}, overrides={"auth.enabled": enabled})
    return Security(settings, admin_token=ADMIN, keys=None, limiter=limiter)


async def test_with_auth_off_local_callers_may_read_export_and_ingest_without_a_credential() -> None:
    security = _security(enabled=False)
    for role in ("read", "export", "ingest"):
        for host in ("127.0.0.1", "::1", None, "testclient"):
            assert (await security.admit(role, None, host)).kind == "local"


async def test_with_auth_off_remote_callers_still_need_a_credential() -> None:
    with pytest.raises(Unauthenticated):
        await _security(enabled=False).admit("read", None, "10.1.2.3")


async def test_admin_routes_need_the_admin_credential_even_with_auth_off() -> None:
    security = _security(enabled=False)
    with pytest.raises(Unauthenticated):
        await security.admit("admin", None, "127.0.0.1")
    with pytest.raises(Unauthenticated):
        await security.admit("admin", "wrong", "127.0.0.1")
    assert (await security.admit("admin", ADMIN, "127.0.0.1")).kind == "admin_token"


async def test_with_auth_on_every_non_public_role_needs_a_credential() -> None:
    security = _security(enabled=True)
    for role in ("read", "export", "ingest", "admin"):
        with pytest.raises(Unauthenticated):
            await security.admit(role, None, "127.0.0.1")
    assert (await security.admit("public", None, "10.0.0.1")).kind == "anonymous"


async def test_failed_attempts_are_rate_limited_by_address() -> None:
    security = _security(enabled=True, limiter=MemoryRateLimiter(per_minute=60, burst=2))
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await security.admit("read", "guess", "10.0.0.9")
    with pytest.raises(RateLimited) as caught:
        await security.admit("read", "guess", "10.0.0.9")
    assert caught.value.retry_after >= 1
    assert (await security.admit("admin", ADMIN, "10.0.0.9")).kind == "admin_token"


async def test_failed_attempts_from_one_ipv6_network_share_one_budget() -> None:
    """One host holds a whole /64: rotating the interface id must not buy new guesses."""
    security = _security(enabled=True, limiter=MemoryRateLimiter(per_minute=60, burst=2))
    for host in ("2001:db8:0:7::1", "2001:db8:0:7::2"):
        with pytest.raises(Unauthenticated):
            await security.admit("read", "guess", host)
    with pytest.raises(RateLimited):
        await security.admit("read", "guess", "2001:db8:0:7:ffff:1:2:3")
    with pytest.raises(Unauthenticated):
        await security.admit("read", "guess", "2001:db8:0:8::1")


async def test_roles_a_token_lacks_are_forbidden_not_unauthenticated() -> None:
    from arbitrage.security import sign_hs256

    secret = "unit-test-hs256-secret-of-32-bytes"
    settings = load_settings(env={}, overrides={"auth.enabled": True, "auth.jwt_secret": secret})
    security = Security(settings, admin_token="", keys=None, limiter=None)
    token = sign_hs256({"sub": "bob", "roles": ["ingest"], "exp": 2**40}, secret)
    assert (await security.admit("ingest", token, "10.0.0.1")).subject == "bob"
    with pytest.raises(Forbidden):
        await security.admit("read", token, "10.0.0.1")


async def test_tokens_without_a_subject_do_not_share_one_rate_limit_budget() -> None:
    from arbitrage.security import sign_hs256

    secret = "unit-test-hs256-secret-of-32-bytes"
    settings = load_settings(env={}, overrides={"auth.enabled": True, "auth.jwt_secret": secret})
    security = Security(settings, admin_token="", keys=None, limiter=MemoryRateLimiter(per_minute=60, burst=2))
    busy, other = (sign_hs256({"roles": ["read"], "exp": 2**40, "jti": n}, secret) for n in ("1", "2"))
    for _ in range(2):
        await security.admit("read", busy, "10.0.0.1")
    with pytest.raises(RateLimited):
        await security.admit("read", busy, "10.0.0.1")
    assert (await security.admit("read", other, "10.0.0.1")).subject.startswith("token-")


async def test_the_owner_of_what_a_caller_creates_is_its_stable_id_never_its_credential() -> None:
    """Export jobs and schedules record it: the same caller must find them again, a secret must not be stored."""
    from arbitrage.security import sign_hs256

    secret = "unit-test-hs256-secret-of-32-bytes"
    settings = load_settings(env={}, overrides={"auth.enabled": True, "auth.jwt_secret": secret})
    security = Security(settings, admin_token=ADMIN + "-long-enough-0123456789", keys=None, limiter=None)
    alice = [sign_hs256({"sub": "alice", "roles": ["export"], "exp": 2**40, "jti": n}, secret) for n in ("1", "2")]
    first, second = [await security.admit("export", token, "10.0.0.1") for token in alice]
    assert first.principal == second.principal == "jwt:alice"
    assert first.owner_scope == "jwt:alice"
    anonymous = sign_hs256({"roles": ["export"], "exp": 2**40}, secret)
    unnamed = await security.admit("export", anonymous, "10.0.0.1")
    assert unnamed.principal == f"jwt:{unnamed.subject}" and unnamed.subject.startswith("token-")
    assert anonymous not in unnamed.principal and secret not in unnamed.principal
    admin = await security.admit("export", ADMIN + "-long-enough-0123456789", "10.0.0.1")
    assert admin.principal == "admin_token:admin" and admin.owner_scope is None
    boss = await security.admit("export", sign_hs256({"sub": "boss", "roles": ["admin"], "exp": 2**40}, secret), None)
    assert boss.owner_scope is None


async def test_with_auth_off_the_local_caller_owns_nothing_and_manages_everything() -> None:
    local = await _security(enabled=False).admit("export", None, "127.0.0.1")
    assert local.principal == "" and local.owner_scope is None
