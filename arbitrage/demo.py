"""`serve --demo`: feed simulated transactions into the running service."""

from __future__ import annotations

import asyncio
import logging

import msgspec

from arbitrage.ingest import IngestService
from arbitrage.simulator import Simulator

log = logging.getLogger(__name__)


TICK_SECONDS = 0.1


async def feed_demo(ingest: IngestService, rate: float) -> None:
    """Ingest `rate` simulated transactions per second, what is due every tenth of a second, until cancelled.

    Each tick sends what the rate made due since the last one, so an ingest slower than a tick
    does not slow the feed (a fixed tenth of the rate per tick delivered a quarter of it on a
    busy box); a backlog of over a second's worth is dropped rather than sent in one burst.
    """
    simulator = Simulator(seed=None, realtime=True)
    stream = simulator.stream()
    encoder = msgspec.json.Encoder()
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = 0
    log.info("demo feed on: %.0f simulated transactions/s", rate)
    while True:
        due = int((loop.time() - started + TICK_SECONDS) * rate) - sent
        count = min(due, max(1, int(rate)))
        sent += due
        if count > 0:
            records = [encoder.encode(next(stream)) for _ in range(count)]
            try:
                await ingest.ingest_records(records, source="demo")
            except Exception as exc:
                log.warning("demo batch not stored: %s", exc)
        await asyncio.sleep(TICK_SECONDS - (loop.time() - started) % TICK_SECONDS)
