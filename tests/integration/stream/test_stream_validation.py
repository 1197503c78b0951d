"""`/sse/stream` and `/ws/transactions` refuse what `/transactions` refuses, and a failing feed is not silent."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import msgspec
import pytest
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app
from arbitrage.config import load_settings
from tests.conftest import fresh_data_dir

pytestmark = pytest.mark.anyio
Client = AsyncTestClient[Any]

VALID_KEY = "So11111111111111111111111111111111111111112"

BAD_FILTERS = [
    ("dex", "' OR 1=1"),
    ("signer", "0OIl" * 10),
    ("token", "0OIl" * 10),
    ("signer", "1" * 45),
    ("min_profit_sol", "nan"),
    ("min_profit_sol", "inf"),
]


async def _ingest(client: Client, records: list[dict[str, Any]]) -> None:
    response = await client.post("/ingest", content=msgspec.json.encode(records))
    assert response.json()["accepted"] == len(records)


def _sse_head(client: Client, params: dict[str, str], headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Status and first body chunk of `GET /sse/stream`, leaving right after it (a 200 never ends)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/sse/stream",
        "raw_path": b"/sse/stream",
        "root_path": "",
        "query_string": urlencode(params).encode(),
        "headers": [(b"host", b"testserver"), *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())],
        "client": ("testclient", 50000),
        "server": ("testserver", 80),
    }

    async def run() -> tuple[int, bytes]:
        sent: list[dict[str, Any]] = []
        answered = anyio.Event()
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await answered.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body":
                answered.set()

        with anyio.fail_after(30):
            await client.app(scope, receive, send)  # type: ignore[arg-type]
        body = next(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return int(sent[0]["status"]), body

    return client.blocking_portal.call(run)


def _refusal(client: Client, params: dict[str, str], headers: dict[str, str] | None = None) -> dict[str, Any]:
    status, body = _sse_head(client, params, headers)
    assert status == 400, (params, headers, body[:200])
    refusal: dict[str, Any] = msgspec.json.decode(body)
    return refusal


async def test_a_valid_request_opens_the_stream(client: Client) -> None:
    params = {"dex": "raydium_amm", "signer": VALID_KEY, "min_profit_sol": "0.5", "fields": "signature,risk"}
    status, body = _sse_head(client, params, {"Last-Event-ID": "18446744073709551615"})
    assert status == 200 and body.startswith(b": connected position=")


@pytest.mark.parametrize(("name", "value"), BAD_FILTERS)
async def test_sse_refuses_the_filter_values_transactions_refuses(client: Client, name: str, value: str) -> None:
    transactions = await client.get("/transactions", params={name: value})
    assert transactions.status_code == 400
    refusal = _refusal(client, {name: value})
    assert refusal["extra"]["field"] == name


@pytest.mark.parametrize("fields", ["nonexistent", "signature,nonexistent"])
async def test_sse_refuses_fields_a_transaction_does_not_have(client: Client, fields: str) -> None:
    assert _refusal(client, {"fields": fields})["extra"]["field"] == "fields"


@pytest.mark.parametrize("value", ["\u00b2", "+1", "-1", "1.0", " 1", "1_0", "18446744073709551616", "9" * 4400])
async def test_sse_refuses_a_resume_position_that_is_not_a_uint64_in_ascii_digits(client: Client, value: str) -> None:
    assert _refusal(client, {}, {"Last-Event-ID": value})["extra"]["field"] == "Last-Event-ID"
    if len(value) <= 20:
        assert _refusal(client, {"last_event_id": value})["extra"]["field"] == "last_event_id"


def _subscribe(client_ws: Any, message: dict[str, Any]) -> dict[str, Any]:
    client_ws.send_json({"op": "subscribe", **message})
    answer: dict[str, Any] = client_ws.receive_json(timeout=10)
    return answer


@pytest.mark.parametrize(
    "message",
    [
        *({"filters": {name: float(value) if name == "min_profit_sol" else value}} for name, value in BAD_FILTERS[:4]),
        {"filters": {"signer": "1" * 100_000}},
        {"filters": {"min_profit_sol": 1e300}},
        {"fields": ["nonexistent"]},
        {"last_event_id": -1},
        {"last_event_id": 2**64},
        {"last_event_id": 10**100},
        {"last_event_id": 1.5},
        {"last_event_id": "5"},
    ],
)
async def test_websocket_answers_an_error_instead_of_subscribing(
    client: Client, records: list[dict[str, Any]], message: dict[str, Any]
) -> None:
    with await client.websocket_connect("/ws/transactions") as ws:
        answer = _subscribe(ws, message)
        assert answer["type"] == "error", answer
        # The socket still works, and a valid subscription after the refusal gets live events.
        assert _subscribe(ws, {"last_event_id": 0})["type"] == "subscribed"
        await _ingest(client, records[:10])
        assert len(ws.receive_json(timeout=30)["items"]) == 10


@pytest.fixture
async def small_replay_client(tmp_path: Path, migrated_template: Path) -> Any:
    """The app with a replay buffer of 10 events, so older positions are read from the warehouse."""
    settings = load_settings(
        env={},
        overrides={
            "storage.data_dir": str(fresh_data_dir(migrated_template, tmp_path / "data")),
            "stream.replay_buffer": 10,
        },
    )
    async with AsyncTestClient(create_app(settings)) as test_client:
        yield test_client


@contextlib.asynccontextmanager
async def _backlog_unreadable(client: Client, records: list[dict[str, Any]]) -> AsyncIterator[None]:
    """100 stored events (more than the replay buffer), then a warehouse that fails every read."""
    await _ingest(client, records[:50])
    await _ingest(client, records[50:100])
    client.app.state.services.warehouse.fail("disk on fire")
    try:
        yield
    finally:
        client.app.state.services.warehouse.fail(None)


async def test_a_websocket_whose_feed_fails_is_closed_with_1011_and_the_failure_is_logged(
    small_replay_client: Client, records: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    client = small_replay_client
    async with _backlog_unreadable(client, records):
        with await client.websocket_connect("/ws/transactions") as ws, caplog.at_level(logging.ERROR):
            assert _subscribe(ws, {"last_event_id": 1})["type"] == "subscribed"
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json(timeout=10)
    assert closed.value.code == 1011
    assert any("disk on fire" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


async def test_an_sse_client_whose_missed_events_cannot_be_read_is_told_to_reconnect(
    small_replay_client: Client, records: list[dict[str, Any]]
) -> None:
    async with _backlog_unreadable(small_replay_client, records):
        response = await small_replay_client.get("/sse/stream", params={"last_event_id": "1"})
    assert response.status_code == 200
    assert response.text.startswith(": connected")
    assert response.text.endswith(
        ": error: the missed events cannot be read now; reconnect with Last-Event-ID to resume\n\n"
    )
    assert "event: transaction" not in response.text  # no gap: nothing newer is sent before what was missed


async def test_subscriptions_a_websocket_replaces_or_ends_are_released(client: Client) -> None:
    """A subscribe replaced before its feed started to run must not stay in the hub, queueing events forever."""
    hub = client.app.state.services.feed.hub
    with await client.websocket_connect("/ws/transactions") as ws:
        for _ in range(20):
            ws.send_json({"op": "subscribe"})
        ws.send_json({"op": "unsubscribe"})
        assert [ws.receive_json(timeout=10)["type"] for _ in range(21)] == ["subscribed"] * 20 + ["unsubscribed"]
        assert hub.subscribers == 0
        assert _subscribe(ws, {"filters": {"dex": "raydium_amm"}})["type"] == "subscribed"
        assert hub.subscribers == 1


async def test_a_huge_control_message_is_refused_without_decoding_or_echoing_it(client: Client) -> None:
    with await client.websocket_connect("/ws/transactions") as ws:
        ws.send_text(msgspec.json.encode({"op": "subscribe", "fields": [f"f{i}" for i in range(100_000)]}).decode())
        answer = ws.receive_json(timeout=30)
        assert answer["type"] == "error" and answer["detail"].startswith("message: "), answer["detail"][:200]
        assert len(answer["detail"]) < 200
        assert _subscribe(ws, {"fields": ["signature"]})["type"] == "subscribed"


async def test_a_control_message_in_a_binary_frame_is_refused_saying_so(client: Client) -> None:
    """It was read as empty text and answered "Input data was truncated", which names nothing the client did."""
    with await client.websocket_connect("/ws/transactions") as ws:
        ws.send_bytes(msgspec.json.encode({"op": "subscribe"}))
        answer = ws.receive_json(timeout=10)
        assert answer["type"] == "error" and answer["detail"].startswith("message: "), answer
        assert "text frames" in answer["detail"]
        assert _subscribe(ws, {})["type"] == "subscribed"
