"""Bind checks, export destinations, rate-limit buckets, redaction of settings."""

from __future__ import annotations

import asyncio
import time
import tomllib
from pathlib import Path

import msgspec
import pytest

from arbitrage.config import AuthSettings, load_settings, redacted
from arbitrage.errors import ConfigError, ValidationError
from arbitrage.security import check_bind, check_destination, is_loopback
from arbitrage.security._keys import check_new_key, expand_roles
from arbitrage.security._rate_limit import _MAX_BUCKETS, MemoryRateLimiter

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "localhost", "::ffff:127.0.0.1"])
def test_loopback_addresses_may_serve_without_auth(host: str) -> None:
    assert is_loopback(host)
    check_bind(host, auth_enabled=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com", ""])
def test_other_addresses_refuse_to_serve_without_auth(host: str) -> None:
    with pytest.raises(ConfigError, match=r"auth\.enabled"):
        check_bind(host, auth_enabled=False)
    check_bind(host, auth_enabled=True)


def test_destinations_inside_the_export_dir_or_a_configured_root_are_allowed(tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    roots = ["s3://datasets/ml/", str(tmp_path / "shared")]
    for url in (
        str(exports),
        str(exports / "nightly"),
        f"file://{exports}/x",
        "s3://datasets/ml",
        "s3://datasets/ml/daily/",
        str(tmp_path / "shared" / "a"),
    ):
        check_destination(url, export_dir=str(exports), roots=roots)


@pytest.mark.parametrize(
    "url",
    [
        "/etc",
        "file:///etc/cron.d",
        "{exports}/../escape",
        "{exports}-sibling",
        "s3://datasets/mlx",
        "s3://datasets/ml/../../other",
        "s3://other-bucket/ml",
        "gcs://datasets/ml",
        "memory://anything",
        "{exports}/a\x00b",
    ],
)
def test_destinations_outside_the_allowed_roots_are_refused(tmp_path: Path, url: str) -> None:
    exports = tmp_path / "exports"
    with pytest.raises(ValidationError) as caught:
        check_destination(url.format(exports=exports), export_dir=str(exports), roots=["s3://datasets/ml/"])
    assert caught.value.field == "destination"


@pytest.mark.parametrize(
    "url",
    [
        "s3://datasets/ml?x=1",
        "s3://datasets/ml/daily?versionId=3",
        "s3://datasets/ml#frag",
        "s3://datasets//ml/x",
        "s3://datasets/ml//x",
        "s3:///datasets/ml",
        "s3://",
        "s3://datasets/ml/./x",
        "S3://datasets/ml/x",
        "{exports}?x=1",
        "{exports}//x",
        "{exports}/./x",
        "File://{exports}/x",
    ],
)
def test_non_canonical_destinations_are_refused_not_normalised(tmp_path: Path, url: str) -> None:
    """What passes the check is written verbatim, so a form fsspec would read differently is refused."""
    exports = tmp_path / "exports"
    with pytest.raises(ValidationError) as caught:
        check_destination(
            url.format(exports=exports), export_dir=str(exports), roots=["s3://datasets/ml/"], field="upload_to"
        )
    assert caught.value.field == "upload_to"


def test_a_symlink_out_of_the_export_dir_is_refused(tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "link").symlink_to("/etc")
    with pytest.raises(ValidationError):
        check_destination(str(exports / "link"), export_dir=str(exports), roots=[])


async def test_the_token_bucket_trips_after_the_burst_and_refills() -> None:
    limiter = MemoryRateLimiter(per_minute=600, burst=3)
    assert [await limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = await limiter.take("k")
    assert 0 < wait <= 0.1 + 1e-9
    assert await limiter.take("other") == 0.0
    deadline = time.monotonic() + 2
    while await limiter.take("k") > 0:
        assert time.monotonic() < deadline, "the bucket never refilled"
        await asyncio.sleep(0.02)


async def test_a_flood_of_new_clients_does_not_refill_a_spent_bucket() -> None:
    """At its size cap the limiter must forget idle clients, not everyone: otherwise 100,000
    fresh addresses would hand a throttled client a full budget again."""
    limiter = MemoryRateLimiter(per_minute=1, burst=1)
    assert await limiter.take("ip:attacker") == 0.0
    assert await limiter.take("ip:attacker") > 0
    for number in range(_MAX_BUCKETS):
        await limiter.take(f"ip:flood-{number}")
        if number % 1000 == 0:
            assert await limiter.take("ip:attacker") > 0
    assert await limiter.take("ip:attacker") > 0


def test_roles_imply_lesser_roles() -> None:
    assert expand_roles(["admin"]) == {"read", "export", "ingest", "admin"}
    assert expand_roles(["export"]) == {"read", "export"}
    assert expand_roles(["ingest"]) == {"ingest"}
    assert expand_roles(["superuser"]) == frozenset()


def test_new_keys_need_known_roles() -> None:
    with pytest.raises(ValidationError, match="unknown role"):
        check_new_key("x", ["root"], None)
    with pytest.raises(ValidationError):
        check_new_key("x", [], None)
    check_new_key("ci", ["read", "export"], 30)


def test_redacted_settings_hide_every_secret() -> None:
    settings = load_settings(
        env={},
        overrides={
            "auth.admin_token": "admin-token-value",
            "auth.jwt_secret": "jwt-secret-value-of-at-least-32-bytes",
            "redis.url": "redis://:redis-password@127.0.0.1:6379/0",
            "storage.url": "clickhouse://user:ch-password@127.0.0.1:9000/db",
            "kafka.extra": {"sasl.password": "kafka-password", "client.id": "visible"},
        },
    )
    text = msgspec.json.encode(redacted(settings)).decode()
    for secret in (
        "admin-token-value",
        "jwt-secret-value-of-at-least-32-bytes",
        "redis-password",
        "ch-password",
        "kafka-password",
    ):
        assert secret not in text
    assert "visible" in text


def test_config_toml_shows_every_auth_key_with_its_default() -> None:
    shipped = tomllib.loads((Path(__file__).parents[3] / "config.toml").read_text())["auth"]
    assert shipped == msgspec.to_builtins(AuthSettings())
