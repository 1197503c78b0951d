"""Security headers on every answer, those no route gives too (the router's 404 and 405)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app
from tests.integration.security.conftest import ADMIN_TOKEN, bearer, secure_settings

pytestmark = pytest.mark.anyio
Client = AsyncTestClient[Any]


@pytest.fixture(scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    async with AsyncTestClient(create_app(secure_settings(tmp_path_factory.mktemp("headers")))) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/no-such-page"), ("DELETE", "/health"), ("GET", "/admin/no-such-page"), ("GET", "/transactions")],
)
async def test_answers_no_route_gives_carry_the_security_headers_too(client: Client, method: str, path: str) -> None:
    response = await client.request(method, path, headers=bearer(ADMIN_TOKEN))
    assert response.status_code in (200, 404, 405), response.text
    assert response.headers.get("x-content-type-options") == "nosniff", (path, response.status_code)
    assert response.headers.get("x-frame-options") == "DENY"
    assert "frame-ancestors 'none'" in response.headers.get("content-security-policy", "")
    if path.startswith("/admin"):
        assert response.headers.get("cache-control") == "no-store"
