"""Two server processes behind one real redis-server: one feed, one position sequence, and
service that keeps going (degraded) while Redis is down and recovers when it returns."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from arbitrage.simulator import Simulator
from tests.e2e.server import ServerProcess
from tests.e2e.stream_clients import SseReader
from tests.services.redis_server import RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(RedisServer.binary() is None, reason="redis-server not installed")]


def _ingest(url: str, records: list[dict[str, Any]]) -> None:
    report = httpx.post(f"{url}/ingest", content=msgspec.json.encode(records), timeout=60).json()
    assert report["accepted"] == len(records), report


def _redis_status(url: str) -> str:
    return str(httpx.get(f"{url}/health", timeout=10).json()["components"]["redis"]["status"])


def _until(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.1)


def test_events_ingested_through_either_process_reach_the_clients_of_both_and_survive_a_redis_restart(
    tmp_path: Path, redis: RedisServer
) -> None:
    records = Simulator(seed=51).records(900)
    env = {"ARB_REDIS__URL": redis.url}
    with (
        ServerProcess(tmp_path / "a" / "data", env=env) as a,
        ServerProcess(tmp_path / "b" / "data", env=env) as b,
        SseReader(f"{a.url}/sse/stream") as on_a,
        SseReader(f"{b.url}/sse/stream") as on_b,
    ):
        on_a.wait_connected()
        on_b.wait_connected()
        assert _redis_status(a.url) == _redis_status(b.url) == "healthy"
        _ingest(a.url, records[:300])
        _ingest(b.url, records[300:600])
        for reader in (on_a, on_b):
            reader.wait_for(lambda r: len(r.events) >= 600)
        assert [e.id for e in on_a.events] == [e.id for e in on_b.events], "one sequence, one order"
        assert [e.id for e in on_a.events] == list(range(1, 601))
        assert {e.data["signature"] for e in on_b.events} == {r["signature"] for r in records[:600]}

        redis.stop(signal.SIGKILL)
        _until(lambda: _redis_status(a.url) == "degraded")
        assert httpx.get(f"{a.url}/health").json()["status"] == "degraded"
        _ingest(a.url, records[600:700])  # still stored and served locally while Redis is away
        on_a.wait_for(lambda r: len(r.events) >= 700)

        redis.start()  # same port, empty: the sequence must continue above what was handed out
        _until(lambda: _redis_status(a.url) == _redis_status(b.url) == "healthy")
        _ingest(b.url, records[700:])
        on_a.wait_for(lambda r: len(r.events) >= 900)
        on_b.wait_for(lambda r: len(r.events) >= 800)
    after = [e for e in on_a.events if e.data["signature"] in {r["signature"] for r in records[700:]}]
    assert len(after) == 200
    assert [e.id for e in after] == [e.id for e in on_b.events[-200:]]
    assert after[0].id > max(e.id for e in on_a.events[:700])
