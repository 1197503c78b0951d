"""Export destinations over HTTP against a real S3 endpoint: what is checked is what is written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from arbitrage.config import load_settings
from arbitrage.errors import ValidationError
from arbitrage.export import ExportRequest, ExportService
from arbitrage.storage import EmbeddedWarehouse
from tests.integration.export.conftest import export_api, wait_done

pytestmark = pytest.mark.anyio


@pytest.fixture
async def s3_api(
    warehouse: EmbeddedWarehouse, make_transactions, tmp_path: Path, s3_options, s3_bucket: str
) -> AsyncIterator[AsyncTestClient[Any]]:
    """The export API writing to S3, with `s3://<bucket>/arb` as the one allowed root."""
    await warehouse.insert_arrow("transactions", make_transactions(50))
    export_dir = str(tmp_path / "exports")
    exports = ExportService(warehouse, export_dir=export_dir, storage_options=s3_options)
    settings = load_settings(
        env={}, overrides={"export.dir": export_dir, "auth.export_roots": [f"s3://{s3_bucket}/arb"]}
    )
    async with export_api(warehouse, settings, exports) as client:
        yield client


@pytest.fixture
def s3fs_client(s3_options):
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, **s3_options["s3"])


@pytest.mark.parametrize(
    "suffix",
    ["arb?x=1", "arb/x?x=1", "arb#frag", "arb//x", "arb/x//y", "arb/./x"],
)
async def test_a_non_canonical_destination_is_400_naming_it_and_nothing_is_written(
    s3_api, s3_bucket, s3fs_client, suffix
):
    response = await s3_api.post("/export/csv", json={"destination": f"s3://{s3_bucket}/{suffix}"})
    assert response.status_code == 400, response.text
    assert response.json()["extra"]["field"] == "destination"
    await asyncio.sleep(0.2)
    assert s3fs_client.find(s3_bucket) == []


async def test_an_uppercase_scheme_is_400_not_a_job_that_fails(s3_api, s3_bucket):
    response = await s3_api.post("/export/csv", json={"destination": f"S3://{s3_bucket}/arb/x"})
    assert response.status_code == 400, response.text
    assert response.json()["extra"]["field"] == "destination"


async def test_the_answer_shows_where_the_files_are_and_they_are_there(s3_api, s3_bucket, s3fs_client):
    response = await s3_api.post("/export/csv", json={"destination": f"s3://{s3_bucket}/arb/daily/"})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert response.json()["destination"] == f"s3://{s3_bucket}/arb/daily/{job_id}"
    job = await wait_done(s3_api, job_id)
    assert job["state"] == "done", job["error"]
    assert job["destination"] == f"s3://{s3_bucket}/arb/daily/{job_id}"
    written = s3fs_client.find(s3_bucket)
    assert written and all(key.startswith(f"{s3_bucket}/arb/daily/{job_id}/") for key in written)
    assert f"{s3_bucket}/arb/daily/{job_id}/manifest.json" in written
    download = await s3_api.get(f"/exports/{job_id}/download")
    assert download.status_code == 200 and download.content


@pytest.mark.parametrize("field", ["upload_to", "destination"])
async def test_a_schedule_upload_to_gets_the_same_check(s3_api, s3_bucket, field):
    body = {"name": "nightly", "format": "csv", "frequency": "daily"}
    for bad in (f"s3://{s3_bucket}/arb?x=1", f"s3://{s3_bucket}//arb/x", f"S3://{s3_bucket}/arb/x"):
        refused = await s3_api.post("/schedule/export", json={**body, field: bad})
        assert refused.status_code == 400, refused.text
        assert refused.json()["extra"]["field"] == field
    accepted = await s3_api.post("/schedule/export", json={**body, field: f"s3://{s3_bucket}/arb/nightly"})
    assert accepted.status_code == 201, accepted.text
    patched = await s3_api.patch(
        f"/schedules/{accepted.json()['id']}", json={"upload_to": f"s3://{s3_bucket}/arb/x?x=1"}
    )
    assert patched.status_code == 400, patched.text


async def test_the_service_refuses_a_destination_with_a_query_whoever_submits_it(warehouse, tmp_path, s3_bucket):
    exports = ExportService(warehouse, export_dir=str(tmp_path / "exports"))
    with pytest.raises(ValidationError) as caught:
        await exports.submit("csv", ExportRequest(destination=f"s3://{s3_bucket}/arb?x=1"))
    assert caught.value.field == "destination"


@pytest.mark.parametrize("chunk_rows", [None, 20], ids=["single-file", "zip"])
async def test_a_download_whose_files_are_gone_is_409_before_any_body(s3_api, s3_bucket, s3fs_client, chunk_rows):
    request: dict[str, Any] = {"destination": f"s3://{s3_bucket}/arb", "chunk_rows": chunk_rows}
    response = await s3_api.post("/export/csv", json=request)
    assert response.status_code == 202, response.text
    job = await wait_done(s3_api, response.json()["id"])
    assert job["state"] == "done", job["error"]
    assert (len(job["files"]) == 1) == (chunk_rows is None)
    s3fs_client.rm(f"{s3_bucket}/arb/{job['id']}", recursive=True)
    download = await s3_api.get(f"/exports/{job['id']}/download")
    assert download.status_code == 409, download.text
    assert job["id"] in download.json()["detail"]
