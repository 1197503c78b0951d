"""`serve --demo`: feed simulated transactions into the running service."""

from __future__ import annotations

import asyncio
import logging

import msgspec

from arbitrage.ingest import IngestService
from arbitrage.simulator import Simulator

log = logging.getLogger(__name__)


async def feed_demo(ingest: IngestService, rate: float) -> None:
    """Ingest `rate` simulated transactions per second, in ten chunks a second, until cancelled."""
    simulator = Simulator(seed=None, realtime=True)
    stream = simulator.stream()
    encoder = msgspec.json.Encoder()
    chunk = max(1, int(rate / 10))
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    log.info("demo feed on: %.0f simulated transactions/s", rate)
    while True:
        records = [encoder.encode(next(stream)) for _ in range(chunk)]
        try:
            await ingest.ingest_records(records, source="demo")
        except Exception as exc:
            log.warning("demo batch not stored: %s", exc)
        next_at += chunk / rate
        await asyncio.sleep(max(0.0, next_at - loop.time()))
