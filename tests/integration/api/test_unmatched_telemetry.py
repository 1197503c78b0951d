"""Requests no route takes (404, 405, a bad Host) and bodies ingest cannot read: an operator must
see them in /metrics and a client must get a request id, as for any routed request."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from arbitrage.app import create_app
from arbitrage.config import Settings
from arbitrage.telemetry import configure_tracing, disable_tracing, flush_tracing

pytestmark = pytest.mark.anyio
Client = AsyncTestClient[Any]
LATENCY = "api_request_duration_seconds"


async def _samples(client: Client, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """The scrape's samples of `name` by label set (the registry is the process's: compare deltas)."""
    text = (await client.get("/metrics")).text
    return {
        frozenset(sample.labels.items()): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def _key(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


async def test_404_and_405_carry_a_request_id_and_are_counted_under_one_bounded_label(client: Client) -> None:
    before = await _samples(client, f"{LATENCY}_count")
    scans = [await client.get(f"/wp-admin/scan-{i}.php") for i in range(20)]
    kept = await client.get("/.env", headers={"X-Request-ID": "probe-42"})
    wrong_method = await client.delete("/health")
    odd_method = await client.request("PROPFINDX", "/ingest")
    after = await _samples(client, f"{LATENCY}_count")

    assert {r.status_code for r in [*scans, kept]} == {404}
    assert (wrong_method.status_code, odd_method.status_code) == (405, 405)
    assert all(len(r.headers["x-request-id"]) == 16 for r in [*scans, wrong_method, odd_method])
    assert kept.headers["x-request-id"] == "probe-42"

    def grew(key: frozenset[tuple[str, str]]) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert grew(_key(method="GET", route="unmatched", status="404")) == 21
    assert grew(_key(method="DELETE", route="unmatched", status="405")) == 1
    # Any token is a method to the router: a scanner must not mint label values that way either.
    assert grew(_key(method="OTHER", route="unmatched", status="405")) == 1
    routes = {dict(key)["route"] for key in after}
    assert not any("wp-admin" in r or ".env" in r for r in routes)
    assert not any(dict(key)["method"] == "PROPFINDX" for key in after)


async def test_an_error_raised_before_routing_carries_a_request_id_and_is_counted(client: Client) -> None:
    before = await _samples(client, f"{LATENCY}_count")
    refused = await client.get("/health", headers={"host": "bad host/\\"})
    after = await _samples(client, f"{LATENCY}_count")
    assert refused.status_code == 400, refused.text
    assert len(refused.headers["x-request-id"]) == 16
    key = _key(method="GET", route="unmatched", status="400")
    assert after.get(key, 0) - before.get(key, 0) == 1


async def test_routed_requests_keep_their_route_template_label(client: Client) -> None:
    """Dashboards query these values: moving the middleware must not rename them."""
    await client.get("/health")
    await client.get("/transactions/abc")
    routes = {dict(key)["route"] for key in await _samples(client, f"{LATENCY}_count")}
    assert {"/health", "/transactions/{signature}"} <= routes


async def test_an_unmatched_request_is_one_server_span_named_by_the_bounded_label(settings: Settings) -> None:
    spans = InMemorySpanExporter()
    async with AsyncTestClient(create_app(settings)) as client:
        configure_tracing("console", exporter=spans)  # after the lifespan applied the settings (none)
        try:
            await client.get("/wp-login.php")
            flush_tracing()
        finally:
            disable_tracing()
    finished = spans.get_finished_spans()
    servers = [s for s in finished if s.name == "GET unmatched"]
    assert len(servers) == 1, [s.name for s in finished]
    server = servers[0]
    assert server.attributes is not None
    assert server.attributes["http.route"] == "unmatched"
    assert server.attributes["http.response.status_code"] == 404


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"this is not json"),
        ("application/x-ndjson", b"neither {is} this\n"),
        ("application/msgpack", b"\xc1\xc1\xc1"),
        ("application/vnd.apache.arrow.stream", b"not an arrow stream"),
    ],
)
async def test_a_body_ingest_cannot_read_is_one_rejected_record_and_one_dead_letter(
    client: Client, content_type: str, body: bytes
) -> None:
    rejected = _key(source="http", outcome="rejected")
    dead = _key(source="http")
    before = await _samples(client, "arbitrage_transactions_total")
    letters_before = await _samples(client, "arbitrage_dead_letters_total")
    response = await client.post("/ingest", content=body, headers={"content-type": content_type})
    assert response.status_code == 400, response.text
    after = await _samples(client, "arbitrage_transactions_total")
    letters_after = await _samples(client, "arbitrage_dead_letters_total")
    assert after.get(rejected, 0) - before.get(rejected, 0) == 1
    assert letters_after.get(dead, 0) - letters_before.get(dead, 0) == 1
