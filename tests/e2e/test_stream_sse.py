"""`GET /sse/stream` against the real server: resume without gap or duplicate, filters, keep-alive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from arbitrage.simulator import Simulator
from tests.e2e.server import ServerProcess
from tests.e2e.stream_clients import SseReader

pytestmark = pytest.mark.e2e


def ingest(url: str, records: list[dict[str, Any]]) -> int:
    report = httpx.post(f"{url}/ingest", content=msgspec.json.encode(records), timeout=60).json()
    assert report["rejected"] == 0, report
    return int(report["accepted"])


def test_a_client_that_reconnects_with_last_event_id_gets_every_missed_event_exactly_once(tmp_path: Path) -> None:
    records = Simulator(seed=31).records(3000)
    env = {"ARB_STREAM__REPLAY_BUFFER": "400"}
    with ServerProcess(tmp_path / "data", env=env) as server:
        first = SseReader(f"{server.url}/sse/stream")
        first.wait_connected()
        ingest(server.url, records[:300])
        ingest(server.url, records[300:600])
        first.wait_for(lambda r: len(r.events) >= 600)
        first.close()
        seen = list(first.events)
        # Missed while away: more than the replay buffer holds, so part comes from the warehouse.
        ingest(server.url, records[600:1600])
        ingest(server.url, records[1600:2200])
        with SseReader(f"{server.url}/sse/stream", last_event_id=seen[-1].id) as second:
            ingest(server.url, records[2200:])
            second.wait_for(lambda r: len(r.events) >= 3000 - len(seen))
            events = seen + second.events
    ids = [e.id for e in events]
    assert ids == list(range(ids[0], ids[0] + 3000)), "positions must be consecutive: no gap, no duplicate"
    assert [e.data["signature"] for e in events] == [e.data["signature"] for e in events]
    assert {e.data["signature"] for e in events} == {r["signature"] for r in records}
    assert all(e.event == "transaction" and e.data["stream_position"] == e.id for e in events)


def test_filters_and_fields_select_events_and_keys_and_idle_streams_get_keep_alives(tmp_path: Path) -> None:
    records = Simulator(seed=32).records(500)
    env = {"ARB_STREAM__KEEPALIVE_SECONDS": "0.3"}
    with ServerProcess(tmp_path / "data", env=env) as server:
        profitable = SseReader(
            f"{server.url}/sse/stream", {"min_profit_sol": 0.0, "fields": "signature,net_profit_sol"}
        )
        everything = SseReader(f"{server.url}/sse/stream")
        with profitable, everything:
            profitable.wait_connected()
            everything.wait_connected()
            profitable.wait_for(lambda r: "keep-alive" in r.comments)
            ingest(server.url, records)
            everything.wait_for(lambda r: len(r.events) == 500)
            expected = [
                e.data["signature"]
                for e in everything.events
                if e.data["net_profit_sol"] is not None and e.data["net_profit_sol"] >= 0  # type: ignore[operator]
            ]
            assert 0 < len(expected) < 500
            profitable.wait_for(lambda r: len(r.events) >= len(expected))
            assert [e.data["signature"] for e in profitable.events] == expected
            assert all(set(e.data) == {"signature", "net_profit_sol"} for e in profitable.events)


def test_a_bad_filter_or_last_event_id_is_refused_with_the_field_named(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as server:
        response = httpx.get(f"{server.url}/sse/stream", headers={"Last-Event-ID": "abc"})
        assert response.status_code == 400
        assert response.json()["extra"]["field"] == "Last-Event-ID"
        response = httpx.get(f"{server.url}/sse/stream", params={"fields": "a,b-c"})
        assert response.status_code == 400
