"""Auth off (the default on loopback): reads work without credentials, /admin never does."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app
from arbitrage.config import load_settings
from arbitrage.errors import ConfigError
from tests.integration.security.conftest import bearer

pytestmark = pytest.mark.anyio
Client = AsyncTestClient[Any]
ORIGIN = "https://dashboard.example"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("auth-off") / "data"


@pytest.fixture(scope="module")
async def client(data_dir: Path) -> AsyncIterator[Client]:
    overrides = {"storage.data_dir": str(data_dir), "export.dir": str(data_dir.parent / "exports")}
    settings = load_settings(env={}, overrides={**overrides, "auth.cors_origins": [ORIGIN]})
    async with AsyncTestClient(create_app(settings)) as test_client:
        yield test_client


async def test_local_callers_read_and_ingest_without_credentials(client: Client) -> None:
    assert (await client.get("/transactions")).status_code == 200
    assert (await client.get("/stats")).status_code == 200
    assert (await client.post("/ingest", content=b"[]")).status_code != 401


@pytest.mark.parametrize(("header", "value"), [("X-Forwarded-For", "203.0.113.9"), ("Forwarded", "for=203.0.113.9")])
async def test_a_request_a_proxy_relayed_gets_no_local_trust(client: Client, header: str, value: str) -> None:
    """A reverse proxy on this machine connects from loopback, on behalf of whoever reached it."""
    for path in ("/stats", "/transactions"):
        refused = await client.get(path, headers={header: value})
        assert refused.status_code == 401 and "relayed by a proxy" in refused.json()["detail"]
    assert (await client.get("/health", headers={header: value})).status_code == 200


async def test_admin_routes_need_the_generated_admin_token(client: Client, data_dir: Path) -> None:
    assert (await client.get("/admin/config")).status_code == 401
    token_file = data_dir / "admin_token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert (await client.get("/admin/config", headers=bearer(token))).status_code == 200
    created = await client.post("/admin/keys", json={"roles": ["read"]}, headers=bearer(token))
    reader = created.json()["token"]
    assert (await client.get("/admin/config", headers=bearer(reader))).status_code == 403


async def test_cors_answers_only_the_configured_origins(client: Client) -> None:
    allowed = await client.options("/transactions", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    other = await client.options(
        "/transactions", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert other.headers.get("access-control-allow-origin") != "https://evil.example"


def test_binding_beyond_loopback_without_auth_refuses_to_build_the_app() -> None:
    with pytest.raises(ConfigError, match=r"auth\.enabled"):
        create_app(load_settings(env={}, overrides={"server.host": "0.0.0.0"}))
    create_app(load_settings(env={}, overrides={"server.host": "0.0.0.0", "auth.enabled": True}))


async def test_dead_letters_of_binary_bodies_list_and_replay(client: Client, data_dir: Path) -> None:
    """An Arrow stream starts with 0xFF: its dead letter is not UTF-8 and must still be served."""
    table = pa.table({"nonsense": [1, 2]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    body = sink.getvalue().to_pybytes()
    refused = await client.post(
        "/ingest", content=body, headers={"Content-Type": "application/vnd.apache.arrow.stream"}
    )
    assert refused.status_code == 400
    admin = bearer((data_dir / "admin_token").read_text().strip())
    listed = await client.get("/admin/dead-letters", params={"limit": 1000}, headers=admin)
    assert listed.status_code == 200
    assert any(item["raw"].startswith("\ufffd") for item in listed.json()["items"])
    replayed = await client.post("/admin/dead-letters/replay", json={"source": "http"}, headers=admin)
    assert replayed.status_code == 200
    assert replayed.json()["replayed"] >= 1
    # Still unreadable: the same letter stays listed, unreplayed, with the time it was tried.
    again = (await client.get("/admin/dead-letters", params={"limit": 1000}, headers=admin)).json()["items"]
    assert len(again) == len(listed.json()["items"])
    assert all(item["replayed_at"] is not None and not item["replayed"] for item in again)


async def test_local_callers_manage_every_export_job_and_schedule_and_a_key_only_its_own(
    client: Client, data_dir: Path
) -> None:
    """With auth off the local caller keeps what it had before jobs had owners: all of them."""
    admin = bearer((data_dir / "admin_token").read_text().strip())
    key = bearer((await client.post("/admin/keys", json={"roles": ["export"]}, headers=admin)).json()["token"])
    keyed = (await client.post("/export/csv", json={"columns": ["signature"]}, headers=key)).json()["id"]
    local = (await client.post("/export/csv", json={"columns": ["signature"]})).json()["id"]
    for job_id in (keyed, local):
        for _ in range(600):
            if (await client.get(f"/exports/{job_id}")).json()["state"] not in ("queued", "running"):
                break
            await asyncio.sleep(0.05)
    assert {keyed, local} <= {job["id"] for job in (await client.get("/exports")).json()["items"]}
    assert (await client.delete(f"/exports/{keyed}")).status_code == 200
    assert [job["id"] for job in (await client.get("/exports", headers=key)).json()["items"]] == [keyed]
    assert (await client.get(f"/exports/{local}", headers=key)).status_code == 404

    schedule = (await client.post("/schedule/export", json={"format": "csv", "frequency": "daily"}, headers=key)).json()
    assert (await client.get(f"/schedules/{schedule['id']}")).status_code == 200
    assert (await client.delete(f"/schedules/{schedule['id']}")).status_code == 204
