"""Tracing, request ids and log lines, through the real app and the real ingest path."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from arbitrage.app import create_app
from arbitrage.config import Settings
from arbitrage.errors import ConfigError
from arbitrage.telemetry import (
    METRICS,
    configure_logging,
    configure_tracing,
    disable_tracing,
    flush_tracing,
    redact,
    span,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    configure_tracing("console", exporter=exporter)
    try:
        yield exporter
    finally:
        disable_tracing()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("INFO", "json")
    stream = io.StringIO()
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    try:
        yield stream
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


async def test_an_ingest_request_is_one_trace_with_a_span_per_stage(
    settings: Settings, records: list[dict[str, Any]]
) -> None:
    spans = InMemorySpanExporter()
    async with AsyncTestClient(create_app(settings)) as client:
        configure_tracing("console", exporter=spans)  # after the lifespan applied the settings (none)
        response = await client.post("/ingest", content=msgspec.json.encode(records[:50]))
        assert response.status_code == 200
        flush_tracing()
    finished = spans.get_finished_spans()
    names = {s.name for s in finished}
    assert {"POST /ingest", "ingest.batch", "ingest.decode", "ingest.derive", "ingest.dedup", "ingest.insert"} <= names
    assert "ingest.enrich" in names
    server = next(s for s in finished if s.name == "POST /ingest")
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["http.route"] == "/ingest"
    ingest_trace = {s.context.trace_id for s in finished if s.name.startswith("ingest.")}
    assert ingest_trace == {server.context.trace_id}


async def test_an_incoming_traceparent_continues_the_callers_trace(settings: Settings) -> None:
    spans = InMemorySpanExporter()
    async with AsyncTestClient(create_app(settings)) as client:
        configure_tracing("console", exporter=spans)
        caller = "0af7651916cd43dd8448eb211c80319c"
        await client.get("/health", headers={"traceparent": f"00-{caller}-b7ad6b7169203331-01"})
        flush_tracing()
    server = next(s for s in spans.get_finished_spans() if s.name == "GET /health")
    assert format(server.context.trace_id, "032x") == caller


async def test_every_response_carries_a_request_id_and_a_sane_client_id_is_kept(settings: Settings) -> None:
    async with AsyncTestClient(create_app(settings)) as client:
        generated = await client.get("/health")
        kept = await client.get("/health", headers={"X-Request-ID": "client-abc.123"})
        replaced = await client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert len(generated.headers["x-request-id"]) == 16
    assert kept.headers["x-request-id"] == "client-abc.123"
    assert replaced.headers["x-request-id"] != "bad id\twith spaces"


async def test_request_latency_is_recorded_by_route_template_not_by_path(settings: Settings) -> None:
    async with AsyncTestClient(create_app(settings)) as client:
        await client.get("/transactions/NotARealSignature1111111111111111111111111111111111111111111")
        text = (await client.get("/metrics")).text
    assert "NotARealSignature" not in text
    assert 'api_request_duration_seconds_count{method="GET",route="/transactions/{signature}"' in text


def test_log_lines_carry_trace_ids_inside_a_span_and_mask_credentials(
    spans: InMemorySpanExporter, log_lines: io.StringIO
) -> None:
    with span("work"):
        logging.getLogger("test").warning("connecting to clickhouse://app:hunter2@db:9000/x with token=abc123")
    entry = json.loads(log_lines.getvalue().splitlines()[-1])
    assert len(entry["trace_id"]) == 32
    assert len(entry["span_id"]) == 16
    assert "hunter2" not in entry["message"]
    assert "abc123" not in entry["message"]
    assert "clickhouse://app:***@db:9000/x" in entry["message"]


def test_the_app_keeps_the_configured_log_format_and_masking(settings: Settings, log_lines: io.StringIO) -> None:
    """`serve` configures logging, then builds the app: Litestar's own logging set-up replaced the
    handler, so a server logged plain lines with credentials in clear."""
    create_app(settings)
    logging.getLogger("arbitrage.test").warning("retrying with password=hunter2")
    entry = json.loads(log_lines.getvalue().splitlines()[-1])
    assert entry["message"] == "retrying with password=***"


def test_console_log_lines_name_the_trace(spans: InMemorySpanExporter) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO", "console")
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        with span("work") as current:
            logging.getLogger("test").info("hello")
        trace_id = format(current.get_span_context().trace_id, "032x")
        assert f"[trace={trace_id}]: hello" in stream.getvalue()
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("admin_token=s3cr3t&x=1", "admin_token=***&x=1"),
        ('{"password": "pw"}', '{"password": "***"}'),
        ("Authorization: Bearer eyJhbGciOi.x.y", "Authorization: Bearer ***"),
        ("redis://:pw@host:6379/0", "redis://:pw@host:6379/0"),  # no user: nothing to match, nothing leaked here
        ("tokens: 5, token_count=3", "tokens: 5, token_count=3"),
    ],
)
def test_redaction_masks_credentials_and_keeps_ordinary_words(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.fixture(autouse=True)
def tracing_off_afterwards() -> Iterator[None]:
    yield
    disable_tracing()


def test_tracing_off_records_nothing_and_unknown_modes_are_config_errors() -> None:
    disable_tracing()
    with span("ignored") as current:
        assert not current.is_recording()
    with pytest.raises(ConfigError, match=r"telemetry\.tracing"):
        configure_tracing("zipkin")


def test_otlp_without_its_exporter_package_is_a_config_error_naming_the_package() -> None:
    try:
        import opentelemetry.exporter.otlp.proto.http  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="opentelemetry-exporter-otlp-proto-http"):
            configure_tracing("otlp", otlp_endpoint="http://127.0.0.1:4318/v1/traces")
    else:
        configure_tracing("otlp", otlp_endpoint="http://127.0.0.1:4318/v1/traces")
        disable_tracing()


def test_process_and_build_metrics_are_exported() -> None:
    from prometheus_client import generate_latest

    text = generate_latest(METRICS.registry).decode()
    assert "process_cpu_seconds_total" in text
    assert 'arbitrage_build_info{python="' in text
    assert "arbitrage_profit_total_sol " in text
