"""Every endpoint's happy path and its 4xx cases, through the real app on real chdb."""

from __future__ import annotations

import base64
import gzip
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from arbitrage.model import WSOL_MINT
from tests.integration.api.test_openapi import DOCUMENTED_FIELDS

pytestmark = pytest.mark.anyio
Client = AsyncTestClient[Any]


async def _ingest(client: Client, records: list[dict[str, Any]]) -> dict[str, Any]:
    response = await client.post(
        "/ingest", content=msgspec.json.encode(records), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    return response.json()


def _newest_first(records: list[dict[str, Any]]) -> list[str]:
    return [r["signature"] for r in sorted(records, key=lambda r: (r["block_time"], r["signature"]), reverse=True)]


async def test_ingest_reports_accepted_duplicates_and_field_errors(
    client: Client, records: list[dict[str, Any]]
) -> None:
    records[3]["fee_lamports"] = -1
    body = await _ingest(client, records)
    assert body == {
        "accepted": len(records) - 1,
        "duplicates": 0,
        "rejected": 1,
        "errors": [{"index": 3, "field": "fee_lamports", "reason": "Expected `int` >= 0"}],
    }
    again = await _ingest(client, records)
    assert (again["accepted"], again["duplicates"]) == (0, len(records) - 1)


async def test_ingest_takes_ndjson_and_msgpack(client: Client, records: list[dict[str, Any]]) -> None:
    ndjson = b"\n".join(msgspec.json.encode(r) for r in records[:50])
    first = await client.post("/ingest", content=ndjson, headers={"content-type": "application/x-ndjson"})
    second = await client.post(
        "/ingest", content=msgspec.msgpack.encode(records[50:]), headers={"content-type": "application/msgpack"}
    )
    assert first.json()["accepted"] == 50
    assert second.json()["accepted"] == len(records) - 50


async def test_ingest_answers_422_when_every_record_is_rejected(client: Client, records: list[dict[str, Any]]) -> None:
    response = await client.post("/ingest", content=msgspec.json.encode([{"signature": "x"}]))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "signature"


async def test_ingest_answers_400_for_a_body_that_is_not_json(client: Client) -> None:
    response = await client.post("/ingest", content=b"<xml/>", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["status_code"] == 400
    assert "Traceback" not in response.text


async def test_ingest_answers_413_above_the_body_limit(settings: Any) -> None:
    from arbitrage.app import create_app

    small = msgspec.structs.replace(settings, ingest=msgspec.structs.replace(settings.ingest, max_body_bytes=1000))
    async with AsyncTestClient(create_app(small)) as client:
        response = await client.post("/ingest", content=b"[" + b" " * 5000 + b"]")
    assert response.status_code == 413


@pytest.mark.parametrize("path", ["/ingest", "/ingest/solana"])
async def test_ingest_answers_413_above_the_record_limit_and_keeps_nothing(
    settings: Any, records: list[dict[str, Any]], path: str
) -> None:
    """A body of many tiny bad records would cost far more memory than its bytes: it is refused whole."""
    from arbitrage.app import create_app

    capped = msgspec.structs.replace(settings, ingest=msgspec.structs.replace(settings.ingest, max_records_per_body=40))
    async with AsyncTestClient(create_app(capped)) as client:
        refused = await client.post(path, content=b"{}\n" * 41, headers={"content-type": "application/x-ndjson"})
        admin = {"authorization": f"Bearer {(Path(capped.storage.data_dir) / 'admin_token').read_text().strip()}"}
        dead_letters = (await client.get("/admin/dead-letters", headers=admin)).json()["items"]
        within = await client.post("/ingest", content=msgspec.json.encode(records[:40]))
    assert refused.status_code == 413
    assert refused.json()["extra"] == {"max_records": 40}
    assert "at most 40 per request" in refused.json()["detail"]
    assert dead_letters == []
    assert within.json()["accepted"] == 40


@pytest.mark.parametrize(
    ("coding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("gzip", lambda data: gzip.compress(data[: len(data) // 2]) + gzip.compress(data[len(data) // 2 :])),
    ],
)
async def test_ingest_reads_a_compressed_body(
    client: Client, records: list[dict[str, Any]], coding: str, compress: Any
) -> None:
    body = compress(b"\n".join(msgspec.json.encode(r) for r in records))
    response = await client.post(
        "/ingest", content=body, headers={"content-type": "application/x-ndjson", "content-encoding": coding}
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(records)


async def test_a_compressed_body_is_refused_when_it_inflates_past_the_limit_or_is_not_what_it_says(
    settings: Any,
) -> None:
    from arbitrage.app import create_app

    small = msgspec.structs.replace(settings, ingest=msgspec.structs.replace(settings.ingest, max_body_bytes=10_000))
    async with AsyncTestClient(create_app(small)) as client:
        bomb = gzip.compress(b"[" + b" " * 50_000 + b"]")
        inflates = await client.post("/ingest", content=bomb, headers={"content-encoding": "gzip"})
        corrupt = await client.post("/ingest", content=b"\x1f\x8b not gzip", headers={"content-encoding": "gzip"})
        truncated = await client.post(
            "/ingest", content=gzip.compress(b"[]")[:-6], headers={"content-encoding": "gzip"}
        )
        unknown = await client.post("/ingest", content=b"[]", headers={"content-encoding": "br"})
    assert len(bomb) < 10_000 and inflates.status_code == 413
    assert (corrupt.status_code, corrupt.json()["extra"]["field"]) == (400, "$")
    assert truncated.status_code == 400
    assert unknown.status_code == 415 and "'br'" in unknown.json()["detail"]


async def test_transactions_pages_newest_first_with_a_cursor(client: Client, records: list[dict[str, Any]]) -> None:
    await _ingest(client, records)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 70} | ({"cursor": cursor} if cursor else {})
        body = (await client.get("/transactions", params=params)).json()
        seen += [item["signature"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == _newest_first(records)


async def test_transactions_have_the_documented_shape(client: Client, records: list[dict[str, Any]]) -> None:
    await _ingest(client, records)
    item = (await client.get("/transactions", params={"limit": 1})).json()["items"][0]
    assert set(DOCUMENTED_FIELDS) <= set(item)
    parsed = datetime.strptime(item["block_time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert int(parsed.timestamp() * 1000) in {r["block_time"] for r in records}


@pytest.mark.parametrize("limit", [0, 1001, -1])
async def test_transactions_limit_outside_1_to_1000_is_400(client: Client, limit: int) -> None:
    assert (await client.get("/transactions", params={"limit": limit})).status_code == 400


def _cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


FOREIGN_CURSORS = [
    "bm90LWEtY3Vyc29y",
    _cursor("99999999999999999999:x"),  # a time past what datetime holds
    _cursor("9" * 140 + ":x"),  # past what a float holds
    _cursor("-99999999999999999999:x"),
]


@pytest.mark.parametrize("cursor", FOREIGN_CURSORS)
async def test_a_foreign_cursor_is_400(client: Client, cursor: str) -> None:
    response = await client.get("/transactions", params={"cursor": cursor})
    assert response.status_code == 400
    assert response.json()["extra"]["field"] == "cursor"


async def test_transactions_filters_match_a_python_filter(client: Client, records: list[dict[str, Any]]) -> None:
    await _ingest(client, records)
    signer = records[0]["signer"]
    dex = records[0]["legs"][0]["dex"]
    cases = [
        ({"signer": signer}, lambda r: r["signer"] == signer),
        ({"dex": dex}, lambda r: any(leg["dex"] == dex for leg in r["legs"])),
        ({"token": WSOL_MINT}, lambda r: any(WSOL_MINT in (leg["token_in"], leg["token_out"]) for leg in r["legs"])),
    ]
    for params, keep in cases:
        items = (await client.get("/transactions", params={"limit": 1000, **params})).json()["items"]
        assert [i["signature"] for i in items] == _newest_first([r for r in records if keep(r)]), params
    profitable = (await client.get("/transactions", params={"limit": 1000, "min_profit_sol": 0.01})).json()["items"]
    assert profitable
    assert all(i["net_profit_sol"] >= 0.01 for i in profitable)


async def test_one_transaction_by_signature_or_404(client: Client, records: list[dict[str, Any]]) -> None:
    await _ingest(client, records)
    found = await client.get(f"/transactions/{records[5]['signature']}")
    assert found.json()["signature"] == records[5]["signature"]
    missing = await client.get("/transactions/" + "1" * 88)
    assert missing.status_code == 404


async def test_historical_streams_a_range_oldest_first(client: Client, records: list[dict[str, Any]]) -> None:
    await _ingest(client, records)
    times = sorted(r["block_time"] for r in records)
    start = datetime.fromtimestamp(times[20] / 1000, UTC).isoformat()
    end = datetime.fromtimestamp(times[60] / 1000, UTC).isoformat()
    expected = [
        r["signature"]
        for r in sorted(records, key=lambda r: (r["block_time"], r["signature"]))
        if times[20] <= r["block_time"] <= times[60]
    ]
    as_array = await client.get("/historical", params={"start": start, "end": end})
    assert [i["signature"] for i in as_array.json()] == expected
    as_ndjson = await client.get(
        "/historical", params={"start": start, "end": end}, headers={"accept": "application/x-ndjson"}
    )
    assert [msgspec.json.decode(line)["signature"] for line in as_ndjson.content.splitlines()] == expected


@pytest.mark.parametrize(
    ("params", "field"),
    [({"start": "2025-02-01", "end": "2025-01-01"}, "end"), ({"start": "yesterday", "end": "2025-01-01"}, "start")],
)
async def test_historical_rejects_bad_ranges(client: Client, params: dict[str, str], field: str) -> None:
    response = await client.get("/historical", params=params)
    assert response.status_code == 400
    assert response.json()["extra"]["field"] == field


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"),
        ("0001-01-01", "9999-12-31"),
        ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.999999-14:00"),
    ],
)
async def test_historical_takes_the_edges_of_the_date_range(
    client: Client, records: list[dict[str, Any]], start: str, end: str
) -> None:
    """Offsets that move a bound past year 1 or 9999 bound nothing: every row is inside."""
    await _ingest(client, records)
    response = await client.get("/historical", params={"start": start, "end": end})
    assert response.status_code == 200, response.text
    assert len(response.json()) == len(records)
    edge = "9999-12-31T23:59:59-01:00"
    nothing = await client.get("/historical", params={"start": edge, "end": edge})
    assert nothing.status_code == 200 and nothing.json() == []


async def test_stats_and_daily_stats_agree_with_the_records(client: Client, records: list[dict[str, Any]]) -> None:
    await _ingest(client, records)
    stats = (await client.get("/stats")).json()
    assert stats["transactions"] == len(records)
    assert stats["successful"] == sum(r["success"] for r in records)
    assert stats["top_tokens"][0]["token"] == WSOL_MINT
    days = (await client.get("/stats/daily", params={"days": 3650})).json()["days"]
    assert sum(d["transactions"] for d in days) == len(records)
    assert sum(d["net_profit_sol"] for d in days) == pytest.approx(stats["net_profit_sol"])
    assert (await client.get("/stats/daily", params={"days": 0})).status_code == 400


async def test_health_is_200_and_turns_503_when_the_warehouse_fails(client: Client) -> None:
    healthy = await client.get("/health")
    assert healthy.status_code == 200
    assert healthy.json()["components"]["warehouse"]["status"] == "healthy"
    client.app.state.services.warehouse.fail("cannot reach clickhouse://app:hunter2@db.internal:9000/arbitrage")
    failing = await client.get("/health")
    assert failing.status_code == 503
    assert failing.json()["status"] == "unhealthy"
    assert "hunter2" not in failing.text  # public: no credential an error quotes
    assert "clickhouse://app:***@db.internal" in failing.json()["components"]["warehouse"]["error"]
    client.app.state.services.warehouse.fail(None)
    assert (await client.get("/health")).status_code == 200


async def test_health_says_ingest_is_degraded_while_inserts_fail_and_reads_still_answer(
    client: Client, records: list[dict[str, Any]]
) -> None:
    """A full disk or too many parts refuse inserts only: /health must not call that healthy."""
    await _ingest(client, records[:10])
    warehouse = client.app.state.services.warehouse
    # ClickHouse's own refusal: an insert into a partition that has this many parts throws TOO_MANY_PARTS.
    await warehouse.execute(f"ALTER TABLE {warehouse.database}.transactions MODIFY SETTING parts_to_throw_insert = 1")
    try:
        refused = await client.post(
            "/ingest", content=msgspec.json.encode(records[10:20]), headers={"content-type": "application/json"}
        )
        assert refused.status_code == 503, refused.text
        assert (await _ingest(client, records[:10]))["duplicates"] == 10  # inserts nothing: proves nothing
        health = await client.get("/health")
        assert health.status_code == 200  # reads still answer
        body = health.json()
        assert body["status"] == "degraded"
        assert body["components"]["warehouse"]["status"] == "healthy"
        assert body["components"]["ingest"]["status"] == "degraded"
        assert "TOO_MANY_PARTS" in body["components"]["ingest"]["error"]
    finally:
        await warehouse.execute(f"ALTER TABLE {warehouse.database}.transactions RESET SETTING parts_to_throw_insert")
    assert (await _ingest(client, records[10:20]))["accepted"] == 10
    recovered = (await client.get("/health")).json()
    assert recovered["status"] == "healthy" and recovered["components"]["ingest"] == {
        "status": "healthy",
        "pending": 0,
        "latency_ms": recovered["components"]["ingest"]["latency_ms"],
    }


async def test_metrics_count_ingest_outcomes_and_request_latency(client: Client, records: list[dict[str, Any]]) -> None:
    records[0]["slot"] = 0
    await _ingest(client, records)
    text = (await client.get("/metrics")).text
    assert 'arbitrage_transactions_total{outcome="rejected",source="http"}' in text
    assert 'api_request_duration_seconds_count{method="POST",route="/ingest",status="200"}' in text
    assert "database_query_duration_seconds" in text


async def test_openapi_and_its_ui_assets_are_served_locally(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    assert "/transactions" in schema["paths"]
    page = await client.get("/schema/swagger")
    assert page.status_code == 200
    assert "cdn." not in page.text
    assert (await client.get("/schema/assets/swagger-ui-bundle.js")).status_code == 200
