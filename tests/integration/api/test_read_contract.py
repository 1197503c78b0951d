"""The read API as a client relies on it: time bounds to the millisecond, cursors, media types, and a schema
that a generated client can trust (every shape and status it will meet)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from tests.integration.api.test_openapi import _resolve

pytestmark = pytest.mark.anyio
Client = AsyncTestClient[Any]
NDJSON = "application/x-ndjson"


async def _ingest(client: Client, records: list[dict[str, Any]]) -> None:
    response = await client.post("/ingest", content=msgspec.json.encode(records))
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(records)


async def _historical(client: Client, start: str, end: str) -> list[str]:
    response = await client.get("/historical", params={"start": start, "end": end})
    assert response.status_code == 200, response.text
    return [row["signature"] for row in response.json()]


def _moment(millis: int) -> datetime:
    return datetime.fromtimestamp(millis / 1000, UTC)


async def test_a_bound_between_two_milliseconds_selects_only_the_rows_inside_it(
    client: Client, records: list[dict[str, Any]]
) -> None:
    """Stored times are whole milliseconds: a start at x.5 ms leaves out the row at x ms, as an end at x.5 keeps it."""
    await _ingest(client, records)
    row = records[0]
    at = _moment(row["block_time"])
    half = timedelta(microseconds=500)
    assert row["signature"] not in await _historical(client, (at + half).isoformat(), (at + half).isoformat())
    assert row["signature"] in await _historical(client, (at - half).isoformat(), (at + half).isoformat())
    assert row["signature"] not in await _historical(client, (at - half * 3).isoformat(), (at - half).isoformat())


async def test_an_end_date_means_its_whole_day_in_every_iso_form(client: Client, records: list[dict[str, Any]]) -> None:
    await _ingest(client, records)
    day = _moment(records[0]["block_time"]).date()
    whole_day = await _historical(client, day.isoformat(), day.isoformat())
    assert records[0]["signature"] in whole_day
    week, weekday = day.isocalendar()[1:]
    for form in (day.strftime("%Y%m%d"), f"{day.year}-W{week:02d}-{weekday}"):
        assert await _historical(client, form, form) == whole_day, form


async def test_rfc_3339_lowercase_t_and_z_and_naive_utc_times_are_the_same_bound(
    client: Client, records: list[dict[str, Any]]
) -> None:
    await _ingest(client, records)
    at = _moment(records[0]["block_time"]).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    expected = await _historical(client, at + "Z", at + "Z")
    assert expected == [records[0]["signature"]]
    assert await _historical(client, at.replace("T", "t") + "z", at.replace("T", "t") + "z") == expected
    assert await _historical(client, at, at) == expected
    assert await _historical(client, at + "+00:00", at + "+00:00") == expected


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        (NDJSON, NDJSON),
        ("application/json;q=0.1, application/x-ndjson", NDJSON),
        ("application/json, application/x-ndjson;q=0.1", "application/json"),
        ("application/json, application/x-ndjson;q=0", "application/json"),
    ],
)
async def test_historical_answers_ndjson_only_when_the_client_prefers_it(
    client: Client, records: list[dict[str, Any]], accept: str | None, media_type: str
) -> None:
    await _ingest(client, records[:3])
    headers = {"accept": accept} if accept else {}
    response = await client.get("/historical", params={"start": "2020-03-16", "end": "2100-01-01"}, headers=headers)
    assert response.headers["content-type"].split(";")[0] == media_type
    rows = (
        [msgspec.json.decode(line) for line in response.content.splitlines()]
        if media_type == NDJSON
        else response.json()
    )
    assert len(rows) == 3


def _cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "key",
    [
        "1:1",  # 1970 and no signature: decodes, but no row of ours has that key
        "1700000000000:not-a-signature",
        "1:" + "1" * 88,
        f"{int((datetime.now(UTC) + timedelta(days=365)).timestamp() * 1000)}:" + "1" * 88,
    ],
)
async def test_a_cursor_no_page_could_have_returned_is_400_not_an_empty_or_first_page(
    client: Client, records: list[dict[str, Any]], key: str
) -> None:
    await _ingest(client, records)
    for filters in ({}, {"signer": records[0]["signer"]}):
        response = await client.get("/transactions", params={"cursor": _cursor(key), **filters})
        assert response.status_code == 400, response.text[:200]
        assert response.json()["extra"]["field"] == "cursor"


async def test_pages_walk_every_row_once_with_equal_times_and_ingest_between_pages(
    client: Client, records: list[dict[str, Any]]
) -> None:
    """Rows sharing a block time and slot are ordered by signature; rows stored meanwhile are newer and shift nothing."""
    shared = records[:120]
    for index, record in enumerate(shared):
        record["block_time"] = shared[0]["block_time"] + index % 3
        record["slot"] = shared[0]["slot"]
    await _ingest(client, shared)
    newest_first = sorted(shared, key=lambda r: (r["block_time"], r["signature"]), reverse=True)
    assert [
        item["signature"] for item in (await client.get("/transactions", params={"limit": 1000})).json()["items"]
    ] == [r["signature"] for r in newest_first]
    later = records[120:]
    for index, record in enumerate(later):
        record["block_time"] = shared[0]["block_time"] + 1000 + index
    for filters in ({}, {"min_profit_sol": -1e9}, {"signer": shared[0]["signer"]}):
        whole = (await client.get("/transactions", params={"limit": 1000, **filters})).json()
        assert whole["next_cursor"] is None
        expected = [item["signature"] for item in whole["items"]]
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 7, **filters} | ({"cursor": cursor} if cursor else {})
            body = (await client.get("/transactions", params=params)).json()
            seen += [item["signature"] for item in body["items"]]
            await _ingest(client, [later.pop(0)])
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == expected, filters


READ_ROUTES = ["/transactions", "/transactions/{signature}", "/historical", "/stats", "/stats/daily"]
READ_ROUTES += ["/risk/{signature}", "/risk/summary"]


@pytest.fixture
async def schema(client: Client) -> dict[str, Any]:
    return (await client.get("/schema/openapi.json")).json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("path", READ_ROUTES)
async def test_routes_that_read_the_warehouse_declare_503_with_retry_after(schema: dict[str, Any], path: str) -> None:
    unavailable = schema["paths"][path]["get"]["responses"]["503"]
    assert "Retry-After" in unavailable["headers"]
    assert "detail" in _resolve(schema, unavailable["content"]["application/json"]["schema"])["properties"]


async def test_historical_declares_its_ndjson_answer(schema: dict[str, Any]) -> None:
    content = schema["paths"]["/historical"]["get"]["responses"]["200"]["content"]
    assert set(content) == {"application/json", NDJSON}
    parameters = {p["name"]: p for p in schema["paths"]["/historical"]["get"]["parameters"]}
    assert {"start", "end"} <= {name for name, p in parameters.items() if p.get("description")}


async def test_health_declares_its_503_with_the_same_body(schema: dict[str, Any]) -> None:
    responses = schema["paths"]["/health"]["get"]["responses"]
    assert responses["503"]["content"] == responses["200"]["content"]


@pytest.mark.parametrize(
    "path",
    ["/stats", "/stats/daily?days=3650", "/features", "/risk/summary?hours=8760", "/risk/{signature}", "/health"],
)
async def test_answers_have_the_shape_the_schema_declares(
    client: Client, schema: dict[str, Any], records: list[dict[str, Any]], path: str
) -> None:
    """A client generated from the schema reads every field it is served, and finds every field it was promised."""
    await _ingest(client, records)
    route = path.split("?")[0]
    body = (await client.get(path.replace("{signature}", records[0]["signature"]))).json()
    declared = schema["paths"][route]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator({**declared, "components": schema["components"]}).validate(body)
    shape = _resolve(schema, declared)
    assert set(body) == set(shape["properties"]), route
    for name, value in body.items():
        nested = _resolve(schema, shape["properties"][name])
        if isinstance(value, list) and value and isinstance(value[0], dict):
            assert set(value[0]) == set(_resolve(schema, nested["items"])["properties"]), (route, name)


@pytest.mark.parametrize("accept", ["application/json", NDJSON])
async def test_a_streamed_read_the_warehouse_cannot_answer_is_503_not_a_broken_200(
    client: Client, records: list[dict[str, Any]], accept: str
) -> None:
    await _ingest(client, records)
    params = {"start": "2020-03-16", "end": "2100-01-01", "limit": 20_000}
    client.app.state.services.warehouse.fail("disk on fire")
    failing = await client.get("/historical", params=params, headers={"accept": accept})
    assert (failing.status_code, failing.headers["retry-after"]) == (503, "5")
    client.app.state.services.warehouse.fail(None)
    served = await client.get("/historical", params=params, headers={"accept": accept})
    rows = served.content.splitlines() if accept == NDJSON else served.json()
    assert len(rows) == len(records)


async def test_stats_and_daily_stats_count_what_historical_serves_after_duplicates_were_posted(
    client: Client, records: list[dict[str, Any]]
) -> None:
    await _ingest(client, records)
    shifted = {**records[1], "block_time": records[1]["block_time"] - 5 * 60 * 1000}  # a collector's other clock
    for again in (records, [records[0]] * 3, [shifted]):
        response = await client.post("/ingest", content=msgspec.json.encode(again))
        assert response.json()["accepted"] == 0
    served = (await client.get("/historical", params={"start": "2020-03-16", "end": "2100-01-01"})).json()
    signatures = [row["signature"] for row in served]
    assert len(signatures) == len(set(signatures)) == len(records)
    stats = (await client.get("/stats")).json()
    days = (await client.get("/stats/daily", params={"days": 3650})).json()["days"]
    assert stats["transactions"] == sum(day["transactions"] for day in days) == len(signatures)
    profit = sum(row["net_profit_sol"] or 0.0 for row in served)
    assert stats["net_profit_sol"] == pytest.approx(profit) == sum(day["net_profit_sol"] for day in days)
    by_day: dict[str, int] = {}
    for row in served:
        by_day[row["block_time"][:10]] = by_day.get(row["block_time"][:10], 0) + 1
    assert {day["date"]: day["transactions"] for day in days} == by_day


async def test_a_range_across_month_partitions_takes_each_edge_once_oldest_first(
    client: Client, records: list[dict[str, Any]]
) -> None:
    edges = [
        "2026-01-31T23:59:59.999Z",
        "2026-02-01T00:00:00.000Z",
        "2026-02-28T23:59:59.999Z",
        "2026-03-01T00:00:00.000Z",
    ]
    placed = records[:4]
    for record, edge, slot in zip(placed, edges, range(4), strict=True):
        record["block_time"] = int(datetime.fromisoformat(edge.replace("Z", "+00:00")).timestamp() * 1000)
        record["slot"] = 300_000_000 + 10_000_000 * slot
    await _ingest(client, placed)
    times = [
        row["block_time"]
        for row in (await client.get("/historical", params={"start": "2026-01-31", "end": "2026-02-28"})).json()
    ]
    assert times == edges[:3]
    ndjson = await client.get(
        "/historical", params={"start": "2026-01-31T23:59:59.999Z", "end": "2026-03-01"}, headers={"accept": NDJSON}
    )
    assert [msgspec.json.decode(line)["block_time"] for line in ndjson.content.splitlines()] == edges
    assert await _historical(client, "2026-02-01", "2026-02-01") == [placed[1]["signature"]]
