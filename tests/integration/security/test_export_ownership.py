"""With auth on, an export job or schedule belongs to whoever created it: other principals get 404
for it (as for an id that does not exist) and do not see it listed, in REST and GraphQL; admins
see and manage everyone's. One app (real embedded warehouse) serves the module."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app
from arbitrage.export import ExportRequest, ExportService
from arbitrage.simulator import Simulator
from tests.integration.security.conftest import ADMIN_TOKEN, bearer, jwt_for, secure_settings

pytestmark = pytest.mark.anyio
Client = AsyncTestClient[Any]

# Minted at import: the module may run many minutes after the suite was collected.
ALICE = bearer(jwt_for("export", subject="alice", lifetime=86_400))
BOB = bearer(jwt_for("export", subject="bob", lifetime=86_400))
ROOT = bearer(jwt_for("admin", subject="root", lifetime=86_400))
ADMIN = bearer(ADMIN_TOKEN)


@pytest.fixture(scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    settings = secure_settings(tmp_path_factory.mktemp("ownership"))
    async with AsyncTestClient(create_app(settings)) as test_client:
        stored = await test_client.post(
            "/ingest", content=msgspec.json.encode(Simulator(seed=5).records(30)), headers=ADMIN
        )
        assert stored.status_code == 200, stored.text
        yield test_client


async def _done(client: Client, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    for _ in range(600):
        job = (await client.get(f"/exports/{job_id}", headers=headers)).json()
        if job["state"] not in ("queued", "running"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"export {job_id} did not finish")


async def _export(client: Client, headers: dict[str, str]) -> str:
    accepted = await client.post("/export/csv", json={"columns": ["signature"]}, headers=headers)
    assert accepted.status_code == 202, accepted.text
    job_id: str = accepted.json()["id"]
    assert (await _done(client, job_id, headers))["state"] == "done"
    return job_id


async def _listed(client: Client, headers: dict[str, str]) -> set[str]:
    response = await client.get("/exports", params={"limit": 1000}, headers=headers)
    assert response.status_code == 200, response.text
    return {job["id"] for job in response.json()["items"]}


async def _graphql(client: Client, query: str, headers: dict[str, str]) -> Any:
    response = await client.post("/graphql", json={"query": query}, headers=headers)
    assert response.status_code == 200, response.text
    assert "errors" not in response.json(), response.text
    return response.json()["data"]


def _not_found_like_an_unknown_id(response: Any, kind: str, some_id: str) -> None:
    assert response.status_code == 404, response.text
    assert response.json() == {"status_code": 404, "detail": f"no {kind} {some_id!r}"}


async def test_another_principals_export_job_is_a_404_everywhere_and_not_listed(client: Client) -> None:
    job_id = await _export(client, ALICE)
    for method, path in (
        ("GET", f"/exports/{job_id}"),
        ("GET", f"/exports/{job_id}/download"),
        ("DELETE", f"/exports/{job_id}"),
    ):
        mine = await client.request(method, path, headers=BOB)
        _not_found_like_an_unknown_id(mine, "export job", job_id)
        unknown = await client.request(method, path.replace(job_id, job_id[:-1] + "x"), headers=BOB)
        assert unknown.status_code == 404
    assert job_id not in await _listed(client, BOB)
    assert job_id not in str(await _graphql(client, "{ exports(limit: 1000) { id } }", BOB))

    assert job_id in await _listed(client, ALICE)
    assert (await client.get(f"/exports/{job_id}/download", headers=ALICE)).status_code == 200
    job = (await client.get(f"/exports/{job_id}", headers=ALICE)).json()
    assert job["state"] == "done" and job["principal"] == "jwt:alice"
    assert job_id in {j["id"] for j in (await _graphql(client, "{ exports(limit: 1000) { id } }", ALICE))["exports"]}


async def test_an_api_keys_jobs_are_its_own_whatever_the_jwt_subject_claims(client: Client) -> None:
    created = await client.post("/admin/keys", json={"name": "nightly", "roles": ["export"]}, headers=ADMIN)
    token, key_id = created.json()["token"], created.json()["key"]["id"]
    key = {"X-API-Key": token}
    job_id = await _export(client, key)
    posing = bearer(jwt_for("export", subject=key_id))
    assert (await client.get(f"/exports/{job_id}", headers=posing)).status_code == 404
    assert job_id not in await _listed(client, posing)
    assert job_id not in await _listed(client, ALICE)
    job = (await client.get(f"/exports/{job_id}", headers=key)).json()
    assert job["principal"] == f"api_key:{key_id}"
    assert token not in str(job) and token.split("_", 2)[2] not in str(job)


async def test_admins_see_and_manage_every_job(client: Client) -> None:
    job_id = await _export(client, ALICE)
    for headers in (ADMIN, ROOT):
        assert job_id in await _listed(client, headers)
        assert (await client.get(f"/exports/{job_id}", headers=headers)).json()["principal"] == "jwt:alice"
        assert (await client.get(f"/exports/{job_id}/download", headers=headers)).status_code == 200
        assert (await client.delete(f"/exports/{job_id}", headers=headers)).status_code == 200
        assert job_id in {
            j["id"] for j in (await _graphql(client, "{ exports(limit: 1000) { id } }", headers))["exports"]
        }


async def test_a_job_with_no_recorded_owner_is_for_admins_only(client: Client) -> None:
    """Like a job stored before owners were recorded, or submitted by a local caller with auth off."""
    exports = client.app.state.services.extras["exports"]
    assert isinstance(exports, ExportService)
    job = await exports.submit("csv", ExportRequest(columns=["signature"]))
    await exports.wait(job.id, timeout=60)
    _not_found_like_an_unknown_id(await client.get(f"/exports/{job.id}", headers=ALICE), "export job", job.id)
    assert job.id not in await _listed(client, ALICE)
    assert (await client.get(f"/exports/{job.id}", headers=ROOT)).json()["principal"] is None


async def test_schedules_and_their_runs_belong_to_whoever_created_the_schedule(client: Client) -> None:
    created = await client.post("/schedule/export", json={"format": "csv", "frequency": "daily"}, headers=ALICE)
    assert created.status_code == 201, created.text
    schedule_id = created.json()["id"]

    for method, path, body in (
        ("GET", f"/schedules/{schedule_id}", None),
        ("PATCH", f"/schedules/{schedule_id}", {"enabled": False}),
        ("POST", f"/schedules/{schedule_id}/run", None),
        ("DELETE", f"/schedules/{schedule_id}", None),
    ):
        response = await client.request(method, path, json=body, headers=BOB)
        _not_found_like_an_unknown_id(response, "schedule", schedule_id)
    bobs = (await client.get("/schedules", headers=BOB)).json()["items"]
    assert schedule_id not in {s["id"] for s in bobs}
    assert schedule_id not in str(await _graphql(client, "{ schedules { id } }", BOB))

    assert created.json()["principal"] == "jwt:alice"
    run = await client.post(f"/schedules/{schedule_id}/run", headers=ALICE)
    assert run.status_code == 202, run.text
    job_id = run.json()["id"]
    assert (await _done(client, job_id, ALICE))["principal"] == "jwt:alice"
    _not_found_like_an_unknown_id(await client.get(f"/exports/{job_id}", headers=BOB), "export job", job_id)
    detail = (await client.get(f"/schedules/{schedule_id}", headers=ALICE)).json()
    assert [j["id"] for j in detail["last_runs"]] == [job_id]
    patched = await client.patch(f"/schedules/{schedule_id}", json={"name": "mine"}, headers=ALICE)
    assert patched.status_code == 200 and patched.json()["principal"] == "jwt:alice"
    assert schedule_id in {s["id"] for s in (await _graphql(client, "{ schedules { id } }", ALICE))["schedules"]}

    for headers in (ADMIN, ROOT):
        assert schedule_id in {s["id"] for s in (await client.get("/schedules", headers=headers)).json()["items"]}
        assert job_id in await _listed(client, headers)
    assert (await client.delete(f"/schedules/{schedule_id}", headers=ROOT)).status_code == 204
    assert (await client.get(f"/schedules/{schedule_id}", headers=ALICE)).status_code == 404
