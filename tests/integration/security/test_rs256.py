"""RS256 bearer tokens: the key is an identity provider's, so the audience decides whose tokens count."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app
from arbitrage.errors import ConfigError
from arbitrage.security import fallback_security
from tests.integration.security.conftest import bearer, secure_settings
from tests.unit.security.rs256 import public_pem, rs256_token

pytestmark = pytest.mark.anyio
Client = AsyncTestClient[Any]


@pytest.fixture(scope="module")
def provider_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _token(key: rsa.RSAPrivateKey, audience: str) -> str:
    """What the identity provider issues to the application `audience`."""
    return rs256_token({"sub": "someone", "aud": audience, "roles": ["admin"], "exp": int(time.time()) + 300}, key)


@pytest.fixture(scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory, provider_key: rsa.RSAPrivateKey) -> AsyncIterator[Client]:
    settings = secure_settings(
        tmp_path_factory.mktemp("rs256"),
        **{"auth.jwt_public_key": public_pem(provider_key), "auth.jwt_audience": "arbitrage"},
    )
    async with AsyncTestClient(create_app(settings)) as test_client:
        yield test_client


async def test_only_tokens_issued_for_this_api_open_it(client: Client, provider_key: rsa.RSAPrivateKey) -> None:
    assert (await client.get("/admin/config", headers=bearer(_token(provider_key, "arbitrage")))).status_code == 200
    assert (await client.get("/admin/config", headers=bearer(_token(provider_key, "wiki")))).status_code == 401


def test_an_rs256_key_without_an_audience_stops_start_up(tmp_path: Path, provider_key: rsa.RSAPrivateKey) -> None:
    """Without one, the provider's token for any other application (its `admin` meaning something else)
    was admin here. (What the lifespan builds, without a second warehouse: chdb has one per process.)"""
    settings = secure_settings(tmp_path, **{"auth.jwt_public_key": public_pem(provider_key)})
    with pytest.raises(ConfigError, match=r"auth\.jwt_audience"):
        fallback_security(settings)
