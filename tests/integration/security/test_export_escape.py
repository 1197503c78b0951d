"""Export destinations that read as a path inside an allowed root but that fsspec writes elsewhere.

fsspec expands `~`, strips a `file:` prefix and chains file systems with `::`; a check that
read such a destination as a plain relative path approved it whenever the working directory
lay inside an allowed root (say `auth.export_roots = ["/srv"]`, run from `/srv/arbitrage`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app
from arbitrage.simulator import Simulator
from tests.integration.security.conftest import ADMIN_TOKEN, bearer, secure_settings

pytestmark = pytest.mark.anyio
Client = AsyncTestClient[Any]


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("escape")
    found = {"root": base / "root", "work": base / "root" / "work", "outside": base / "outside"}
    for path in found.values():
        path.mkdir(parents=True)
    return found


@pytest.fixture(scope="module")
async def client(places: dict[str, Path]) -> AsyncIterator[Client]:
    settings = secure_settings(places["root"].parent, **{"auth.export_roots": [str(places["root"])]})
    async with AsyncTestClient(create_app(settings)) as test_client:
        stored = await test_client.post(
            "/ingest", content=msgspec.json.encode(Simulator(seed=3).records(20)), headers=bearer(ADMIN_TOKEN)
        )
        assert stored.status_code == 200, stored.text
        yield test_client


@pytest.mark.parametrize("form", ["simplecache::file:{outside}", "file:{outside}", "~/x", "file:~/x"])
async def test_a_destination_fsspec_writes_outside_the_roots_is_refused(
    client: Client, places: dict[str, Path], monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    monkeypatch.chdir(places["work"])
    monkeypatch.setenv("HOME", str(places["outside"]))
    destination = form.format(outside=places["outside"])
    response = await client.post("/export/csv", json={"destination": destination}, headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 400, (destination, response.text)
    assert response.json()["extra"]["field"] == "destination"
    await asyncio.sleep(0.5)
    assert list(places["outside"].iterdir()) == []


async def test_the_same_places_written_plainly_are_accepted(
    client: Client, places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(places["work"])
    for destination in ("out", f"file:{places['root']}/out", f"file://{places['root']}/out", str(places["root"])):
        response = await client.post("/export/csv", json={"destination": destination}, headers=bearer(ADMIN_TOKEN))
        assert response.status_code == 202, (destination, response.text)
