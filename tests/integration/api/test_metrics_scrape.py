"""What a Prometheus scrape of /metrics gets."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import AsyncTestClient

pytestmark = pytest.mark.anyio


async def test_the_content_type_names_each_parameter_once(client: AsyncTestClient[Any]) -> None:
    """Prometheus 3 refuses a scrape whose Content-Type repeats a parameter (Go's mime.ParseMediaType)."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    media, *params = [part.strip() for part in response.headers["content-type"].split(";")]
    names = [p.split("=", 1)[0].lower() for p in params]
    assert media == "text/plain"
    assert sorted(names) == sorted(set(names)) and "version" in names and "charset" in names
    assert "# TYPE" in response.text
