"""The HTTP skin of exports and schedules, over the real services and warehouse."""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from litestar.testing import AsyncTestClient

from arbitrage.config import load_settings
from arbitrage.export import ExportService
from arbitrage.storage import EmbeddedWarehouse
from tests.integration.export.conftest import export_api, wait_done

pytestmark = pytest.mark.anyio


@pytest.fixture
async def api(warehouse: EmbeddedWarehouse, make_transactions, tmp_path: Path) -> AsyncIterator[AsyncTestClient[Any]]:
    await warehouse.insert_arrow("transactions", make_transactions(120))
    exports = ExportService(warehouse, export_dir=str(tmp_path / "exports"))
    async with export_api(warehouse, load_settings(env={}), exports) as client:
        yield client


async def test_post_export_answers_202_with_an_id_and_the_job_can_be_followed_and_downloaded(api):
    response = await api.post("/export/parquet", json={"columns": ["signature", "net_profit_sol"]})
    assert response.status_code == 202
    accepted = response.json()
    assert accepted["state"] == "queued" and accepted["id"]
    job = await wait_done(api, accepted["id"])
    assert job["state"] == "done" and job["rows"] == 120 and job["progress"] == 1.0 and job["bytes"] > 0
    download = await api.get(f"/exports/{accepted['id']}/download")
    assert download.status_code == 200
    assert "attachment" in download.headers["content-disposition"]
    assert pq.read_table(io.BytesIO(download.content)).column_names == ["signature", "net_profit_sol"]
    listed = (await api.get("/exports")).json()["items"]
    assert [j["id"] for j in listed] == [accepted["id"]]


async def test_a_multi_file_export_downloads_as_a_zip(api):
    accepted = (await api.post("/export/csv", json={"chunk_rows": 50})).json()
    await wait_done(api, accepted["id"])
    download = await api.get(f"/exports/{accepted['id']}/download")
    assert download.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(download.content)).namelist()
    assert sorted(names) == ["manifest.json", "part-00000.csv", "part-00001.csv", "part-00002.csv"]


async def test_an_unknown_format_is_404_with_the_list_and_an_unknown_column_is_400_naming_it(api):
    response = await api.post("/export/xlsx", json={})
    assert response.status_code == 404
    assert "parquet" in response.json()["extra"]["formats"]
    response = await api.post("/export/csv", json={"columns": ["signature", "bogus"]})
    assert response.status_code == 400
    assert "bogus" in response.json()["detail"]
    response = await api.post("/export/csv", json={"compression": "snappy"})
    assert response.status_code == 400 and "snappy" in response.json()["detail"]
    assert (await api.get("/exports/nope")).status_code == 404


@pytest.mark.parametrize(
    "dates",
    [
        {"end_date": "9999-12-31"},
        {"start_date": "0001-01-01T00:00:00+01:00"},
        {"start_date": "0001-01-01", "end_date": "9999-12-31T23:59:59-01:00"},
    ],
)
async def test_dates_at_the_edges_of_the_calendar_export_every_row(api, dates):
    response = await api.post("/export/csv", json=dates)
    assert response.status_code == 202, response.text
    job = await wait_done(api, response.json()["id"])
    assert job["state"] == "done" and job["rows"] == 120


async def test_schedules_are_created_listed_patched_run_and_deleted(api):
    created = await api.post(
        "/schedule/export", json={"format": "json", "frequency": "daily", "name": "nightly", "success_only": True}
    )
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert schedule["cron"] == "0 0 * * *" and schedule["next_run_at"] and schedule["request"]["success_only"]
    listed = (await api.get("/schedules")).json()["items"]
    assert [s["id"] for s in listed] == [schedule["id"]]
    times = ("created_at", "updated_at", "next_run_at")
    assert [listed[0][t] for t in times] == [schedule[t] for t in times], "answered as stored, to the millisecond"
    patched = await api.patch(f"/schedules/{schedule['id']}", json={"frequency": "weekly"})
    assert patched.status_code == 200 and patched.json()["cron"] == "0 0 * * 1"
    run = await api.post(f"/schedules/{schedule['id']}/run")
    assert run.status_code == 202
    job = await wait_done(api, run.json()["id"])
    assert job["state"] == "done" and job["schedule_id"] == schedule["id"]
    for _ in range(100):
        detail = (await api.get(f"/schedules/{schedule['id']}")).json()
        if not detail["schedule"]["running"]:
            break
        await asyncio.sleep(0.05)
    assert [r["id"] for r in detail["last_runs"]] == [job["id"]]
    assert detail["schedule"]["watermark"] is not None
    bad = await api.post("/schedule/export", json={"format": "csv", "frequency": "sometimes"})
    assert bad.status_code == 400 and bad.json()["extra"]["field"] == "frequency"
    assert (await api.delete(f"/schedules/{schedule['id']}")).status_code == 204
    assert (await api.get(f"/schedules/{schedule['id']}")).status_code == 404


async def test_running_a_schedule_whose_format_is_no_longer_installed_is_409_not_500(warehouse, tmp_path):
    """A schedule stored while a plugin format was installed outlives the plugin."""
    await warehouse.execute(
        f"INSERT INTO {warehouse.database}.schedules (id, version, deleted, name, format, frequency, cron, "
        "request, upload_to, incremental, enabled, created_at, updated_at, last_job_id, last_error, "
        "consecutive_failures) SELECT 'sch-plugin', 1, false, '', 'plugin-tsv', 'daily', '0 0 * * *', "
        "'{}', '', true, true, now64(3), now64(3), '', '', 0"
    )
    exports = ExportService(warehouse, export_dir=str(tmp_path / "exports"))
    async with export_api(warehouse, load_settings(env={}), exports) as client:
        response = await client.post("/schedules/sch-plugin/run")
        assert response.status_code == 409, response.text
        assert "plugin-tsv" in response.json()["detail"] and "csv" in response.json()["extra"]["formats"]
        assert (await client.post("/schedules/sch-plugin/run")).status_code == 409  # not left busy
