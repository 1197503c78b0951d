"""Read bodies built ahead of requests: the same bytes however they are produced, never stale after an ingest."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from arbitrage.cache import HistoricalPages
from arbitrage.model import WSOL_MINT
from arbitrage.storage import TransactionFilter

pytestmark = pytest.mark.anyio
Client = AsyncTestClient[Any]
NDJSON = {"accept": "application/x-ndjson"}


async def _ingest(client: Client, records: list[dict[str, Any]]) -> None:
    response = await client.post("/ingest", content=msgspec.json.encode(records))
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(records)


def _pages(client: Client) -> HistoricalPages:
    pages = client.app.state.services.extras["historical"]
    assert isinstance(pages, HistoricalPages)
    return pages


def _iso(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat()


def _oldest_first(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: (r["block_time"], r["signature"]))


def _signatures(body: bytes) -> list[str]:
    return [row["signature"] for row in msgspec.json.decode(body)]


async def test_pages_and_streams_are_the_single_transaction_bodies_byte_for_byte(
    client: Client, records: list[dict[str, Any]]
) -> None:
    await _ingest(client, records)
    ordered = _oldest_first(records)
    rows = [(await client.get(f"/transactions/{r['signature']}")).content for r in ordered]
    params = {"start": _iso(ordered[0]["block_time"]), "end": _iso(ordered[-1]["block_time"])}
    for limit in (1000, 20_000):  # a rendered page, then a streamed read
        array = await client.get("/historical", params=params | {"limit": limit})
        ndjson = await client.get("/historical", params=params | {"limit": limit}, headers=NDJSON)
        assert array.content == b"[" + b",".join(rows) + b"]"
        assert ndjson.content == b"".join(row + b"\n" for row in rows)
        assert array.headers["content-type"].startswith("application/json")
        assert ndjson.headers["content-type"].startswith("application/x-ndjson")
        assert "Accept" in ndjson.headers["vary"].split(", "), "a cache must not give one's body for the other"


def _page(rows: list[bytes], cursor: str | None) -> bytes:
    return b'{"items":[' + b",".join(rows) + b'],"next_cursor":' + msgspec.json.encode(cursor) + b"}"


async def test_transaction_pages_from_memory_and_the_warehouse_are_the_same_bytes(
    client: Client, records: list[dict[str, Any]]
) -> None:
    await _ingest(client, records)
    newest = sorted(records, key=lambda r: (r["block_time"], r["signature"]), reverse=True)
    single = {r["signature"]: (await client.get(f"/transactions/{r['signature']}")).content for r in newest}

    page = await client.get("/transactions", params={"limit": 30})  # from memory
    assert page.content == _page([single[r["signature"]] for r in newest[:30]], page.json()["next_cursor"])
    assert (await client.get("/transactions", params={"limit": 30})).content == page.content
    assert page.headers["content-type"].startswith("application/json")

    with_wsol = [r for r in newest if any(WSOL_MINT in (leg["token_in"], leg["token_out"]) for leg in r["legs"])]
    assert 0 < len(with_wsol) < len(newest)
    filtered = await client.get("/transactions", params={"limit": 1000, "token": WSOL_MINT})  # from chdb
    assert filtered.content == _page([single[r["signature"]] for r in with_wsol], None)


async def test_a_memory_page_is_encoded_again_after_an_ingest(client: Client, records: list[dict[str, Any]]) -> None:
    ordered = _oldest_first(records)
    await _ingest(client, ordered[:100])
    first = await client.get("/transactions", params={"limit": 5})
    await _ingest(client, ordered[100:])
    again = await client.get("/transactions", params={"limit": 5})
    assert [i["signature"] for i in again.json()["items"]] == [r["signature"] for r in ordered[::-1][:5]]
    assert again.content != first.content


async def test_an_empty_range_is_an_empty_body(client: Client) -> None:
    params = {"start": "2021-01-01", "end": "2021-01-02"}
    assert (await client.get("/historical", params=params)).content == b"[]"
    assert (await client.get("/historical", params=params, headers=NDJSON)).content == b""


async def test_a_kept_page_is_replaced_only_when_ingest_stores_a_row_in_its_range(
    client: Client, records: list[dict[str, Any]]
) -> None:
    ordered = _oldest_first(records)
    start, end = ordered[0]["block_time"], ordered[119]["block_time"]
    await _ingest(client, ordered[:80] + ordered[120:160])
    params = {"start": _iso(start), "end": _iso(end)}

    first = await client.get("/historical", params=params)
    stored = ordered[:80] + ordered[120:160]
    assert _signatures(first.content) == [r["signature"] for r in _oldest_first(stored) if r["block_time"] <= end]
    assert len(_pages(client).cache or ()) == 2, "the page and its gzip (the test client accepts gzip)"

    later = [r for r in ordered[160:] if r["block_time"] > end]
    await _ingest(client, later)
    assert len(_pages(client).cache or ()) == 2, "a store outside the range keeps the page"
    assert (await client.get("/historical", params=params)).content == first.content

    await _ingest(client, ordered[80:120])
    refreshed = await client.get("/historical", params=params)
    assert _signatures(refreshed.content) == [r["signature"] for r in ordered if r["block_time"] <= end]


async def test_a_gzipped_page_is_the_page_compressed_and_follows_ingest(
    client: Client, records: list[dict[str, Any]]
) -> None:
    ordered = _oldest_first(records)
    await _ingest(client, ordered[:100])
    params = {"start": _iso(ordered[0]["block_time"]), "end": _iso(ordered[-1]["block_time"])}
    for accept in ({}, NDJSON):
        plain = await client.get("/historical", params=params, headers={"accept-encoding": "identity"} | accept)
        refused = await client.get("/historical", params=params, headers={"accept-encoding": "gzip;q=0"} | accept)
        zipped = await client.get("/historical", params=params, headers={"accept-encoding": "br, gzip"} | accept)
        assert "content-encoding" not in plain.headers and "content-encoding" not in refused.headers
        assert zipped.headers["content-encoding"] == "gzip" and zipped.headers["vary"] == "Accept, Accept-Encoding"
        assert int(zipped.headers["content-length"]) * 3 < len(plain.content)
        assert zipped.content == plain.content == refused.content  # httpx inflates what it receives
    await _ingest(client, ordered[100:])
    zipped = await client.get("/historical", params=params, headers={"accept-encoding": "gzip"})
    assert _signatures(zipped.content) == [r["signature"] for r in ordered]


async def test_a_page_asked_for_after_an_ingest_includes_it_even_while_an_older_read_runs(
    client: Client, records: list[dict[str, Any]]
) -> None:
    ordered = _oldest_first(records)
    await _ingest(client, ordered[:100])
    pages = _pages(client)
    filters = TransactionFilter(
        start=datetime.fromtimestamp(ordered[0]["block_time"] / 1000, UTC),
        end=datetime.fromtimestamp(ordered[-1]["block_time"] / 1000, UTC),
    )
    before = asyncio.create_task(pages.page(filters, 1000, ndjson=False))
    await asyncio.sleep(0)  # the older read has begun
    await _ingest(client, ordered[100:])
    after = await pages.page(filters, 1000, ndjson=False)
    assert _signatures(after) == [r["signature"] for r in ordered]
    assert len(_signatures(await before)) in (100, len(ordered))
    assert _signatures(await pages.page(filters, 1000, ndjson=False)) == [r["signature"] for r in ordered]
