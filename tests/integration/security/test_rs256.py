"""RS256 bearer tokens: the key is an identity provider's, so the audience decides whose tokens count."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app
from arbitrage.errors import ConfigError
from arbitrage.security import fallback_security
from arbitrage.security._jwt import b64url_encode
from tests.integration.security.conftest import bearer, secure_settings

pytestmark = pytest.mark.anyio
Client = AsyncTestClient[Any]


@pytest.fixture(scope="module")
def provider_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _token(key: rsa.RSAPrivateKey, audience: str) -> str:
    """What the identity provider issues to the application `audience`."""
    header = b64url_encode(b'{"alg":"RS256","typ":"JWT"}')
    claims = {"sub": "someone", "aud": audience, "roles": ["admin"], "exp": int(time.time()) + 300}
    payload = b64url_encode(msgspec.json.encode(claims))
    signature = key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{b64url_encode(signature)}"


@pytest.fixture(scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory, provider_key: rsa.RSAPrivateKey) -> AsyncIterator[Client]:
    settings = secure_settings(
        tmp_path_factory.mktemp("rs256"),
        **{"auth.jwt_public_key": _public_pem(provider_key), "auth.jwt_audience": "arbitrage"},
    )
    async with AsyncTestClient(create_app(settings)) as test_client:
        yield test_client


async def test_only_tokens_issued_for_this_api_open_it(client: Client, provider_key: rsa.RSAPrivateKey) -> None:
    assert (await client.get("/admin/config", headers=bearer(_token(provider_key, "arbitrage")))).status_code == 200
    assert (await client.get("/admin/config", headers=bearer(_token(provider_key, "wiki")))).status_code == 401


def test_an_rs256_key_without_an_audience_stops_start_up(tmp_path: Path, provider_key: rsa.RSAPrivateKey) -> None:
    """Without one, the provider's token for any other application (its `admin` meaning something else)
    was admin here. (What the lifespan builds, without a second warehouse: chdb has one per process.)"""
    settings = secure_settings(tmp_path, **{"auth.jwt_public_key": _public_pem(provider_key)})
    with pytest.raises(ConfigError, match=r"auth\.jwt_audience"):
        fallback_security(settings)
