"""This process's own positions, from `reserve` until their batch is handed on to the fan-out.

Batches of one process are stored in position order, but each is then rendered on its own
(in a worker thread) and published by its own ingest caller: a small batch is ready long
before a large one stored just before it. The hub waits only `reorder_timeout` for a missing
position and then moves past it for good, so a stored batch that took longer to render was
lost to every live client. Here a batch waits for the earlier batches of this process that
are being published, however long they take, and for earlier positions whose batch has not
reached `publish` yet, up to the timeout: those belong to a failed insert (never published;
ingest gives them up at once, `LiveFeed.abandon`) or to a caller still on its way
(milliseconds: the stored-batch listeners before the feed's).
The timeout is half the hub's, and every hub (through Redis, every process's) is told the
positions given up, so a failed insert holds the feed for half as long as a hub alone would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class _Range:
    first: int
    last: int
    entered: bool
    """Stored and being published (else only reserved)."""


class HandOff:
    """Orders the hand-off of this process's batches by position."""

    def __init__(self, timeout: float, gave_up: Callable[[int, int], None]) -> None:
        self.timeout = timeout
        self.gave_up = gave_up
        """Called with the first and last position given up on (the whole span, gaps included)."""
        self._ranges: list[_Range] = []
        """Positions reserved or being published and not handed on yet, in position order (a few at a time)."""
        self._changed = asyncio.Event()

    def reserved(self, first: int, last: int) -> None:
        """Positions handed out to this process's ingest: its batch is expected to be published."""
        if first <= last:
            self._ranges.append(_Range(first, last, entered=False))
            self._ranges.sort(key=lambda r: r.first)

    def enter(self, first: int, last: int) -> None:
        """A batch of these positions is stored and is being published."""
        self._replace(first, last, [_Range(first, last, entered=True)])

    def handed_on(self, first: int, last: int) -> None:
        """The batch is with the fan-out (or failed to get there): nothing waits for it any more."""
        self._replace(first, last, [])

    async def wait_before(self, first: int) -> bool:
        """Wait until every position of this process before `first` is handed on or given up; True if any was pending.

        A batch being published is waited for; positions whose batch has not come to `publish`
        within `timeout` are given up (a failed insert), as the hub gives up on a gap.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        waited = False
        while earlier := [r for r in self._ranges if r.first < first]:
            waited = True
            changed = self._changed
            if any(r.entered for r in earlier):
                await changed.wait()
                continue
            left = deadline - loop.time()
            if left <= 0:
                log.warning(
                    "live feed: positions %d-%d were reserved but not published within %g s; moving past them",
                    earlier[0].first,
                    earlier[-1].last,
                    self.timeout,
                )
                self._ranges = [r for r in self._ranges if r.first >= first]
                self.gave_up(earlier[0].first, earlier[-1].last)
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), left)
        return waited

    def _replace(self, first: int, last: int, inside: list[_Range]) -> None:
        """Put `inside` in place of positions `first`..`last`, keeping what lies around them."""
        kept: list[_Range] = []
        for r in self._ranges:
            if r.last < first or r.first > last:
                kept.append(r)
                continue
            if r.first < first:
                kept.append(_Range(r.first, first - 1, r.entered))
            if r.last > last:
                kept.append(_Range(last + 1, r.last, r.entered))
        kept += inside
        kept.sort(key=lambda r: r.first)
        self._ranges = kept
        self._changed.set()
        self._changed = asyncio.Event()
