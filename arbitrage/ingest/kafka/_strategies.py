"""The processing stages between fetch and commit: batch, then decode + validate + store.

Decoding, validation, dedup and the insert are the shared `IngestService` path (the same
code as `POST /ingest`). A batch is retried with backoff until the warehouse takes it;
meanwhile nothing upstream is read, so the fetch stage fills up and pauses the partitions.
A failure that is not the warehouse's is one the data causes: the batch is split until the
records at fault stand alone, and those become dead letters (a poison message never blocks
its partition).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TypeVar

import polars as pl
import pyarrow as pa

from arbitrage.errors import Saturated, WarehouseUnavailable
from arbitrage.ingest import IngestReport, IngestService, KafkaOrigins, RecordError, Reject
from arbitrage.ingest.kafka import _metrics as m
from arbitrage.ingest.kafka._fetched import Fetched
from arbitrage.ingest.kafka._records import Keyed, OutRecord, dead_letter, opportunities, risk_metrics
from arbitrage.model import SIGNATURE_MAX_CHARS

log = logging.getLogger(__name__)

SOURCE = "kafka"
"""The `source` column of rows this consumer stores."""

_TRANSIENT = (WarehouseUnavailable, Saturated, OSError, TimeoutError)
"""Failures of the warehouse or the machine, not of the records: retried until they pass."""

_SIGNATURES_PER_LOOKUP = 1_000
"""Signatures per query when looking up stored rows: the list is inlined into the SQL, and 1,000
signatures (≈ 92 KB) stay well below ClickHouse's `max_query_size` (256 KiB by default)."""

_T = TypeVar("_T")

_stored_frames: ContextVar[list[pl.DataFrame] | None] = ContextVar("kafka_stored_frames", default=None)


async def collect_stored(frame: pl.DataFrame) -> None:
    """`IngestService.on_stored` listener: hand a Kafka batch's stored rows back to its store step.

    The listener runs in the task that called `ingest_records`, so the context variable set
    by that task tells whose rows these are; other sources' batches are ignored.
    """
    bucket = _stored_frames.get()
    if bucket is not None:
        bucket.append(frame)


class Batcher:
    """Accumulates messages until `size` of them or `timeout_s` after the first."""

    def __init__(self, size: int, timeout_s: float) -> None:
        self.size = size
        self.timeout_s = timeout_s
        self._fetched = Fetched()
        self._deadline = 0.0
        self.generation = 0
        """The fetch generation of the messages held; a batch never spans two."""

    def add(self, fetched: Fetched, generation: int) -> None:
        if self._fetched:
            self._fetched.extend(fetched)
            return
        self._deadline = time.monotonic() + self.timeout_s
        self.generation = generation
        self._fetched = fetched  # the chunk's lists become the batch's: nothing else holds them

    def holds_older(self, generation: int) -> bool:
        """Whether messages of another fetch generation must be flushed before these are added."""
        return bool(self._fetched) and generation != self.generation

    @property
    def full(self) -> bool:
        return len(self._fetched) >= self.size

    def time_left(self) -> float | None:
        """Seconds until the partial batch is due; None when empty."""
        return max(0.0, self._deadline - time.monotonic()) if self._fetched else None

    def take(self) -> Fetched:
        taken, self._fetched = self._fetched, Fetched()
        return taken


Suspects = dict[int, tuple[int, int]]
"""Partition → the range of offsets (first, end) a crashed predecessor may have stored uncommitted."""


class RecoveryWindow:
    """The first offsets of each newly assigned partition, which a crashed owner may have stored uncommitted.

    A duplicate found there whose stored row came from that very message (same partition and
    offset) was stored by Kafka ingest without its offset being committed, so its derived
    records are produced again (the aborted transaction lost them). A duplicate of a row stored
    from another message (upstream sent the signature twice) is not.
    """

    def __init__(self, span: int) -> None:
        self.span = span
        self._horizon: dict[int, int | None] = {}

    def reset(self, partitions: list[int]) -> None:
        for partition in partitions:
            self._horizon[partition] = None

    def close(self, partition: int) -> None:
        """Nothing more of this partition is suspect (an admin replay re-reads committed work)."""
        self._horizon.pop(partition, None)

    def suspects(self, fetched: Fetched) -> Suspects:
        """The suspect offsets of each partition of `fetched` inside the window; call in fetch order.

        Ranges, not messages: the keys are read only for a batch that turns out to hold duplicates.
        """
        if not self._horizon:
            return {}  # every partition is past its window: the steady state costs nothing per message
        # Offsets grow within a partition: its first message here is the last one seen backwards.
        first = dict(zip(reversed(fetched.partitions), reversed(fetched.offsets), strict=True))
        last = dict(zip(fetched.partitions, fetched.offsets, strict=True))
        ranges: Suspects = {}
        for partition, start in first.items():
            if partition not in self._horizon:
                continue
            horizon = self._horizon[partition]
            if horizon is None:
                horizon = self._horizon[partition] = start + self.span
            if start < horizon:
                ranges[partition] = (start, horizon)
            if last[partition] >= horizon - 1:
                del self._horizon[partition]
        return ranges


def suspect_keys(fetched: Fetched, ranges: Suspects) -> dict[str, tuple[int, int]]:
    """Keys (signatures) of the messages inside `ranges`, with their partition and offset (the first of each key)."""
    keys: dict[str, tuple[int, int]] = {}
    for key, partition, offset in zip(fetched.keys, fetched.partitions, fetched.offsets, strict=True):
        window = ranges.get(partition)
        if key and window is not None and window[0] <= offset < window[1]:
            keys.setdefault(key.decode(errors="replace"), (partition, offset))
    return keys


@dataclass
class StoredBatch:
    """A batch the warehouse holds; what its commit must produce, and the offsets it covers."""

    offsets: dict[int, int]
    """Partition → next offset to read."""
    generation: int = 0
    """The fetch generation of its messages: its partitions must not have left since."""
    opportunities: Keyed = field(default_factory=Keyed)
    risk: Keyed = field(default_factory=Keyed)
    dead_letters: list[OutRecord] = field(default_factory=list)
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0

    def without(self, partitions: set[int]) -> StoredBatch:
        """What is left to publish and commit once `partitions` left this consumer: the rest stays ours."""
        return StoredBatch(
            {p: o for p, o in self.offsets.items() if p not in partitions},
            self.generation,
            self.opportunities.without(partitions),
            self.risk.without(partitions),
            [record for record in self.dead_letters if record.partition not in partitions],
            self.stored,
            self.duplicates,
            self.rejected,
        )


class StoreStep:
    """Decode, validate and store one batch through the ingest service, retrying until it lands."""

    def __init__(self, ingest: IngestService, *, backoff_max_s: float, opportunity_omit: tuple[str, ...]) -> None:
        self.ingest = ingest
        self.backoff_max_s = backoff_max_s
        self.opportunity_omit = opportunity_omit
        self.failing: str | None = None
        """The last store error while a batch is being retried; None once it landed."""

    async def __call__(self, fetched: Fetched, suspects: Suspects) -> StoredBatch:
        started = time.perf_counter()
        bucket: list[pl.DataFrame] = []
        token = _stored_frames.set(bucket)
        try:
            report = await self._store(fetched.values, KafkaOrigins(fetched.partitions, fetched.offsets))
        finally:
            _stored_frames.reset(token)
        self.failing = None
        m.BATCH_SECONDS.observe(time.perf_counter() - started)
        stored = pl.concat(bucket, how="diagonal_relaxed") if bucket else pl.DataFrame()
        batch = StoredBatch(
            fetched.next_offsets(), stored=report.accepted, duplicates=report.duplicates, rejected=report.rejected
        )
        batch.dead_letters = [dead_letter(fetched, e.index, e.field, e.reason) for e in report.errors]
        if suspects and report.duplicates:
            new = set(stored["signature"].to_list()) if len(stored) else set()
            rejected_keys = {(fetched.keys[e.index] or b"").decode(errors="replace") for e in report.errors}
            recovered = await self._stored_by_kafka(
                {
                    key: origin
                    for key, origin in suspect_keys(fetched, suspects).items()
                    if key not in new and key not in rejected_keys
                }
            )
            if len(recovered):
                log.info("re-publishing derived records of %d transactions stored before a restart", len(recovered))
                stored = pl.concat([stored, recovered], how="diagonal_relaxed") if len(stored) else recovered
        if len(stored):
            batch.opportunities, batch.risk = await asyncio.to_thread(_derived, stored, self.opportunity_omit)
        m.MESSAGES.labels("stored").inc(report.accepted)
        m.MESSAGES.labels("duplicate").inc(report.duplicates)
        m.MESSAGES.labels("rejected").inc(report.rejected)
        return batch

    async def _store(self, values: list[bytes], origins: KafkaOrigins) -> IngestReport:
        """Store `values`; error indexes in the report are positions in `values`."""
        try:
            return await self._retried(
                f"storing a Kafka batch of {len(values)}",
                lambda: self.ingest.ingest_records(values, source=SOURCE, origins=origins),
            )
        except Exception as exc:
            if len(values) > 1:
                return await self._store_halves(values, origins)
            log.exception("a Kafka record cannot be stored; it goes to the dead letters")
            reason = f"cannot be stored: {type(exc).__name__}: {exc}"[:500]
            await self.ingest.record_rejects([Reject(0, "$", reason, values[0])], SOURCE)
            return IngestReport(0, 0, 1, [RecordError(0, "$", reason)])

    async def _retried(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """`call()` until it passes, with backoff while the warehouse or the machine fails; other errors raise."""
        delay = 0.1
        while True:
            try:
                return await call()
            except _TRANSIENT as exc:
                self.failing = str(exc)[:200]
                m.STORE_RETRIES.inc()
                log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max_s)

    async def _store_halves(self, values: list[bytes], origins: KafkaOrigins) -> IngestReport:
        half = len(values) // 2
        first = await self._store(values[:half], origins.part(0, half))
        second = await self._store(values[half:], origins.part(half, len(values)))
        shifted = [RecordError(e.index + half, e.field, e.reason) for e in second.errors]
        return IngestReport(
            first.accepted + second.accepted,
            first.duplicates + second.duplicates,
            first.rejected + second.rejected,
            [*first.errors, *shifted],
        )

    async def _stored_by_kafka(self, suspects: dict[str, tuple[int, int]]) -> pl.DataFrame:
        """Stored rows of `suspects` that Kafka ingest stored from the suspect message itself.

        A row without an origin was stored before migration 009 and is taken too, as before it.
        """
        # A key longer than any signature names no stored row; leaving it out keeps the lookups small.
        signatures = sorted(key for key in suspects if len(key) <= SIGNATURE_MAX_CHARS)
        tables = [
            await self._stored_rows(signatures[start : start + _SIGNATURES_PER_LOOKUP])
            for start in range(0, len(signatures), _SIGNATURES_PER_LOOKUP)
        ]
        if not tables:
            return pl.DataFrame()
        frame = pl.from_arrow(pa.concat_tables(tables))
        assert isinstance(frame, pl.DataFrame)
        if frame.is_empty():
            return frame
        origins = pl.DataFrame(
            [(key, partition, offset) for key, (partition, offset) in suspects.items()],
            schema={"signature": pl.String, "_partition": pl.Int32, "_offset": pl.Int64},
            orient="row",
        )
        same_message = (pl.col("kafka_partition") == pl.col("_partition")) & (
            pl.col("kafka_offset") == pl.col("_offset")
        )
        republish = (
            frame.join(origins, on="signature")
            .filter(pl.col("kafka_offset").is_null() | same_message)
            .with_columns(pl.col("kafka_partition").fill_null(pl.col("_partition")))
            .drop("_partition", "_offset")
        )
        return republish.unique(subset="signature", keep="first", maintain_order=True)

    async def _stored_rows(self, signatures: list[str]) -> pa.Table:
        """Rows Kafka ingest stored with these signatures, retried while the warehouse fails (as the store is)."""
        warehouse = self.ingest.warehouse
        return await self._retried(
            f"looking up {len(signatures)} stored signatures",
            lambda: warehouse.query_arrow(
                f"SELECT * FROM {warehouse.database}.transactions "
                "WHERE signature IN {signatures:Array(String)} AND source = {source:String}",
                {"signatures": signatures, "source": SOURCE},
            ),
        )


def _derived(stored: pl.DataFrame, opportunity_omit: tuple[str, ...]) -> tuple[Keyed, Keyed]:
    """Render in a worker thread: it is per-row work the event loop must not do."""
    return opportunities(stored, opportunity_omit), risk_metrics(stored)
