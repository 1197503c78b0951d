"""Stream positions this process reserved whose rows have not reached the stored-batch listeners yet.

A listener that must never skip a stored row after a crash (the Kafka relay of other sources'
derived records) may only say "done up to P" while no position at or below P is still on its
way: reserved, being inserted, or stored and waiting for its caller to publish it.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass
class _Reservation:
    first: int
    last: int
    waiting: int
    """Rows of it not yet published (a group's rows are split among its callers' batches)."""


class UnpublishedPositions:
    """A few reservations at a time: one per group between its prepare and its callers' publishing."""

    def __init__(self) -> None:
        self._reservations: list[_Reservation] = []

    def reserved(self, first: int, last: int) -> None:
        if first <= last:
            self._reservations.append(_Reservation(first, last, last - first + 1))

    def published(self, positions: pl.Series) -> None:
        """A batch's rows reached the listeners (its positions need not be consecutive)."""
        if positions.is_empty():
            return
        low, high = positions.min(), positions.max()
        for reservation in self._reservations:
            if reservation.last < low or reservation.first > high:  # type: ignore[operator]
                continue
            reservation.waiting -= int(positions.is_between(reservation.first, reservation.last).sum())
        self._reservations = [r for r in self._reservations if r.waiting > 0]

    def abandoned(self, first: int, last: int) -> None:
        """Their insert failed: no row of these positions will be published."""
        self._reservations = [r for r in self._reservations if r.last < first or r.first > last]

    def lowest(self) -> int | None:
        """The lowest position that may still be published, if any may."""
        return min((r.first for r in self._reservations), default=None)
