"""`WS /ws/transactions` against the real server: subscribe with filters, ping, slow-client drop."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from arbitrage.simulator import Simulator
from tests.e2e.server import ServerProcess
from tests.e2e.stream_clients import WsClient, WsClosed

pytestmark = pytest.mark.e2e

SLOW_CONSUMER_CLOSE = 1013


def _items(client: WsClient, count: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while len(items) < count:
        message = client.recv()
        if message["type"] == "transactions":
            items.extend(message["items"])  # type: ignore[arg-type]
    return items


def _close_code(client: WsClient) -> int:
    """Read what was in flight for the client until its close frame; the close code."""
    while True:
        try:
            client.recv()
        except WsClosed as closed:
            return closed.code


def _ingest(url: str, records: list[dict[str, Any]]) -> None:
    httpx.post(f"{url}/ingest", content=msgspec.json.encode(records), timeout=60).raise_for_status()


def test_subscribers_get_only_what_their_filters_match_and_unsubscribe_stops_the_feed(tmp_path: Path) -> None:
    records = Simulator(seed=41).records(600)
    signer = records[0]["signer"]
    dex = records[0]["legs"][0]["dex"]
    expected_signer = [r["signature"] for r in records[:300] if r["signer"] == signer]
    expected_dex = [r["signature"] for r in records[:300] if any(leg["dex"] == dex for leg in r["legs"])]
    with (
        ServerProcess(tmp_path / "data") as server,
        WsClient(f"{server.url}/ws/transactions") as by_signer,
        WsClient(f"{server.url}/ws/transactions") as by_dex,
    ):
        by_signer.send({"op": "subscribe", "filters": {"signer": signer}, "fields": ["signature", "signer"]})
        by_dex.send({"op": "subscribe", "filters": {"dex": dex}})
        assert by_signer.recv()["type"] == "subscribed"
        assert by_dex.recv()["type"] == "subscribed"
        by_dex.send({"op": "ping"})
        assert by_dex.recv()["type"] == "pong"

        _ingest(server.url, records[:300])
        got_signer = _items(by_signer, len(expected_signer))
        got_dex = _items(by_dex, len(expected_dex))
        assert [i["transaction"]["signature"] for i in got_signer] == expected_signer
        assert all(set(i["transaction"]) == {"signature", "signer"} for i in got_signer)
        assert [i["transaction"]["signature"] for i in got_dex] == expected_dex

        by_dex.send({"op": "unsubscribe"})
        assert by_dex.recv_until(lambda m: m["type"] != "transactions")["type"] == "unsubscribed"
        _ingest(server.url, records[300:])
        by_dex.send({"op": "ping"})
        assert by_dex.recv()["type"] == "pong", "no events after unsubscribe"
        by_dex.send({"op": "subscribe", "filters": {"nope": 1}})
        assert by_dex.recv()["type"] == "error"


def test_a_client_that_does_not_read_is_closed_with_1013_while_a_reading_client_gets_everything(
    tmp_path: Path,
) -> None:
    simulator = Simulator(seed=42)
    env = {"ARB_STREAM__CLIENT_QUEUE_EVENTS": "500"}
    with (
        ServerProcess(tmp_path / "data", env=env) as server,
        WsClient(f"{server.url}/ws/transactions", receive_buffer=4096) as slow,
        WsClient(f"{server.url}/ws/transactions") as fast,
    ):
        for client in (slow, fast):
            client.send({"op": "subscribe"})
            assert client.recv()["type"] == "subscribed"
        received: list[dict[str, Any]] = []
        reader = threading.Thread(target=lambda: received.extend(_items(fast, 20_000)), daemon=True)
        reader.start()
        for _ in range(20):
            httpx.post(f"{server.url}/ingest", content=simulator.ndjson(1000), timeout=120).raise_for_status()
        reader.join(120)
        assert len(received) == 20_000
        ids = [int(i["id"]) for i in received]
        assert ids == list(range(ids[0], ids[0] + 20_000)), "the reading client misses nothing"
        assert _close_code(slow) == SLOW_CONSUMER_CLOSE
