"""The ingest pipeline every source shares: decode → derive → dedup → enrich → store → publish.

Stages that only read their batch (decode, derive) run in worker threads in parallel;
stages that depend on order or on what is stored (dedup, features, insert) run under
one writer lock, so a signature is stored once and features see batches in order.
Only after the insert returns does a caller get its report (HTTP answer, Kafka commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast, runtime_checkable

import msgspec
import polars as pl
import pyarrow as pa

from arbitrage.clock import utc_now
from arbitrage.errors import Saturated, ValidationError, WarehouseUnavailable
from arbitrage.ingest._decode import (
    DecodedBatch,
    KafkaOrigins,
    Reject,
    decode_body,
    decode_records,
    decode_table,
    encoding_for,
    reject_older,
)
from arbitrage.ingest._derive import derive, ingested_at_column
from arbitrage.ingest._unpublished import UnpublishedPositions
from arbitrage.storage import SignatureWindow, Warehouse
from arbitrage.stream import POSITION_COLUMN, RecentTransactions
from arbitrage.telemetry import METRICS, span, traced

log = logging.getLogger(__name__)

_DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("received_at", pa.timestamp("ms", "UTC")),
        ("source", pa.string()),
        ("record_index", pa.uint32()),
        ("field", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.binary()),
        ("digest", pa.binary(16)),
    ]
)
_DIGESTS_PER_QUERY = 1_000
"""Digests inlined per look-up of stored dead letters (≈ 35 KB, below ClickHouse's `max_query_size`)."""


Enricher = Callable[[pl.DataFrame], pl.DataFrame]
"""A stage that adds columns to a batch, called in order and one batch at a time (features, then risk)."""


@runtime_checkable
class Stateful(Protocol):
    """An enricher that remembers the rows it saw (the feature engine): what it learnt from rows
    that were then not stored (a later enricher failed, or their insert) is taken back, or a
    batch sent again would count twice in every later row's windows."""

    def checkpoint(self) -> object: ...

    def restore(self, checkpoint: object) -> None: ...


class RecordError(msgspec.Struct):
    index: int
    field: str
    reason: str


class IngestReport(msgspec.Struct):
    """What happened to a batch; the `POST /ingest` response body."""

    accepted: int
    duplicates: int
    rejected: int
    errors: list[RecordError]


_BATCH = "__batch"

StoredListener = Callable[[pl.DataFrame], Awaitable[None]]

PositionSource = Callable[[int], Awaitable[int]]
"""Given a row count, the first of that many consecutive live-stream positions (`LiveFeed.reserve`)."""

PositionsAbandoned = Callable[[int, int], None]
"""Told the first and last position of rows that will not be stored (`LiveFeed.abandon`)."""


class IngestService:
    """Owns the writer lock and the admission bound shared by every source."""

    def __init__(
        self,
        warehouse: Warehouse,
        recent: RecentTransactions,
        *,
        enrichers: Sequence[Enricher] = (),
        max_pending_batches: int = 16,
        max_records_per_body: int | None = None,
        max_group_rows: int = 200_000,
        insert_min_rows: int = 1,
        insert_linger_seconds: float = 0.0,
        position_source: PositionSource | None = None,
        positions_abandoned: PositionsAbandoned | None = None,
        retention_days: int = 0,
    ) -> None:
        self.warehouse = warehouse
        self.retention_days = retention_days
        """`storage.retention_days`: older transactions are refused (0: none)."""
        self.recent = recent
        self.enrichers = list(enrichers)
        self._stateful = [cast(Stateful, e) for e in self.enrichers if isinstance(e, Stateful)]
        self.max_pending_batches = max_pending_batches
        self.max_records_per_body = max_records_per_body
        self.max_group_rows = max_group_rows
        self.insert_min_rows = insert_min_rows
        self.insert_linger_seconds = insert_linger_seconds
        self.position_source = position_source
        self.positions_abandoned = positions_abandoned
        self._writer = asyncio.Lock()
        # Decoding and deriving run mostly in Arrow and polars, off the GIL: two at a time keep
        # both cores busy; more would only hold more bodies in memory at once.
        self._decoders = asyncio.Semaphore(2)
        self._queued: list[_Queued] = []
        self._prepared: list[tuple[_Prepared, list[asyncio.Future[pl.DataFrame]]]] = []
        """Groups ready to insert, in order; whatever waits when an insert starts goes into it."""
        self._inserting: asyncio.Task[None] | None = None
        self._finishing: set[asyncio.Task[pl.DataFrame]] = set()
        """Queued batches being stored and published (`_store_grouped`)."""
        self._in_flight: dict[int, pl.Series] = {}
        """Signatures of prepared groups whose insert has not returned yet, by group token."""
        self._group_tokens = itertools.count()
        self._rollback: tuple[int, list[object]] | None = None
        """(group token, checkpoints of the stateful enrichers before it): the state to return to
        before the next enrichment, because that group's rows and those of every group enriched
        after it were not stored."""
        self._failed_inserts: set[int] = set()
        """Tokens of groups whose insert failed (or that were failed for skipping such a group's
        signatures) since the last prepare began: that prepare may have skipped them too."""
        self._pending = 0
        self._arriving = 0
        """Batches admitted that have not reached `_prepared` (decoding, deriving, waiting to prepare)."""
        self._arrived = asyncio.Event()
        self._turns = _Turns()
        self._listeners: list[StoredListener] = []
        self.unpublished = UnpublishedPositions()
        """Positions reserved whose rows the listeners have not had yet (the Kafka relay reads `lowest()`)."""
        self.insert_error: str | None = None
        """Why the last insert (of rows or dead letters) failed; None once an insert of rows succeeds."""
        self._stamp_in_flight: datetime | None = None
        self._dead_letter_lock = asyncio.Lock()
        """Held from the look-up of a batch's rejects among the stored letters to their insert."""
        self.replay_lock = asyncio.Lock()
        """One dead-letter replay at a time: each tells its still-rejected letters by its own time."""

    @property
    def pending(self) -> int:
        return self._pending

    def unsettled_since(self) -> datetime | None:
        """The `ingested_at` (whole ms) of the insert that has not returned yet, or None.

        Its rows are not visible until it returns, however long it waits for a thread or for
        the warehouse: an incremental export must not move its watermark up to it.
        """
        return self._stamp_in_flight

    async def health(self) -> dict[str, Any]:
        """`degraded` while inserts fail (a full disk, too many parts): reads still answer, so the
        warehouse's own check stays healthy, but every batch gets 503 until an insert passes."""
        report: dict[str, Any] = {"status": "degraded" if self.insert_error else "healthy", "pending": self._pending}
        if self.insert_error:
            report["error"] = self.insert_error
        return report

    def on_stored(self, listener: StoredListener) -> None:
        """Call `listener(stored_batch)` after each successful insert (Kafka producers, ...)."""
        self._listeners.append(listener)

    def admit(self) -> None:
        """Raise Saturated when more batches wait than the bound allows."""
        if self._pending >= self.max_pending_batches:
            METRICS.ingest_saturated.inc()
            raise Saturated(retry_after=1)

    @traced("ingest.batch")
    async def ingest_body(self, body: bytes, content_type: str | None, *, source: str) -> IngestReport:
        """Decode and store a request body. ValidationError when no record can be read at all.

        TooManyRecords (nothing stored, no dead letter: like a body over the size limit) when it
        holds more than `max_records_per_body`.
        """
        self.admit()
        with self._admitted() as arrival:
            encoding = encoding_for(content_type, body)
            try:
                decoded = await self._decoded(
                    functools.partial(decode_body, body, encoding, max_records=self.max_records_per_body)
                )
            except ValidationError as exc:
                await self._dead_letters([Reject(0, exc.field, exc.reason, body)], source)
                # Kept as one dead letter, so counted as one rejected record: the dashboards' reject
                # panels then show a client sending garbage. Only once kept, as in `_store`: a body
                # answered 503 is sent again.
                METRICS.transactions.labels(source, "rejected").inc()
                raise
            return await self._store(decoded, source, arrival)

    @traced("ingest.batch")
    async def ingest_records(
        self,
        records: Sequence[bytes],
        *,
        source: str,
        origins: KafkaOrigins | None = None,
        keep_rejects: bool = True,
    ) -> IngestReport:
        """Store one JSON record per element (Kafka messages, file lines); waits instead of refusing.

        `origins` (Kafka) are stored with the rows: where each record was read. Without
        `keep_rejects` no dead letter is written: a dead-letter replay updates the letters it read.
        """
        with self._admitted() as arrival:
            decoded = await self._decoded(functools.partial(decode_records, records, origins=origins))
            return await self._store(decoded, source, arrival, keep_rejects=keep_rejects)

    @traced("ingest.batch")
    async def ingest_table(self, table: pa.Table, *, source: str) -> IngestReport:
        """Store records given as columns (Parquet files); waits instead of refusing."""
        with self._admitted() as arrival:
            decoded = await self._decoded(functools.partial(decode_table, table))
            return await self._store(decoded, source, arrival)

    async def _decoded(self, decode: Callable[[], DecodedBatch]) -> DecodedBatch:
        """Run a decoder off the event loop, at most `decoders` at once."""
        started = time.perf_counter()
        with span("ingest.decode"):
            async with self._decoders:
                decoded = await asyncio.to_thread(decode)
        METRICS.ingest_batch_seconds.labels("decode").observe(time.perf_counter() - started)
        return decoded

    @traced("ingest.batch")
    async def ingest_decoded(self, decoded: DecodedBatch, *, source: str) -> IngestReport:
        """Store a batch another decoder produced (Solana, files)."""
        with self._admitted(counted=False) as arrival:
            return await self._store(decoded, source, arrival)

    @contextlib.contextmanager
    def _admitted(self, *, counted: bool = True) -> Iterator[_Arrival]:
        """A batch on its way in: `pending` (the admission bound) when `counted`, arriving until grouped."""
        if counted:
            self._pending += 1
            METRICS.ingest_pending.set(self._pending)
        arrival = _Arrival(self)
        try:
            yield arrival
        finally:
            arrival.done()
            if counted:
                self._pending -= 1
                METRICS.ingest_pending.set(self._pending)

    async def _store(
        self, decoded: DecodedBatch, source: str, arrival: _Arrival, *, keep_rejects: bool = True
    ) -> IngestReport:
        if self.retention_days:
            # Stored, such a row would be dropped by the next TTL merge, and counted in its day's
            # aggregates a second time if its first copy was counted before it expired.
            decoded = reject_older(
                decoded,
                datetime.now(UTC) - timedelta(days=self.retention_days),
                f"older than the retention ({self.retention_days} days, storage.retention_days)",
            )
        if decoded.rejects and keep_rejects:
            await self._dead_letters(decoded.rejects, source)
        errors = [RecordError(r.index, r.field, r.reason) for r in decoded.rejects]
        METRICS.transactions.labels(source, "rejected").inc(len(errors))
        if decoded.frame.is_empty():
            return IngestReport(0, 0, len(errors), errors)
        started = time.perf_counter()
        with span("ingest.derive", source=source):
            async with self._decoders:
                frame = await asyncio.to_thread(_derive_unique, decoded.frame, source)
        in_batch_duplicates = len(decoded.frame) - len(frame)
        METRICS.ingest_batch_seconds.labels("derive").observe(time.perf_counter() - started)
        stored = await self._store_grouped(frame, arrival, source, in_batch_duplicates)
        duplicates = in_batch_duplicates + len(frame) - len(stored)
        return IngestReport(len(stored), duplicates, len(errors), errors)

    async def _store_grouped(
        self, frame: pl.DataFrame, arrival: _Arrival, source: str, in_batch_duplicates: int
    ) -> pl.DataFrame:
        """Queue a batch for an insert; once queued it is stored, counted and published by a task of
        its own, whatever becomes of the caller: cancelled (a client that hung up, a stopping Kafka
        consumer), it left rows stored that no live client, cache or newest-rows buffer heard of."""
        done: asyncio.Future[pl.DataFrame] = asyncio.get_running_loop().create_future()
        await self._turns.wait(arrival.ticket)
        self._queued.append((frame, done, arrival))
        self._turns.leave(arrival.ticket)
        finishing = asyncio.create_task(self._finish_queued(done, source, len(frame) + in_batch_duplicates))
        self._finishing.add(finishing)
        finishing.add_done_callback(self._finished)
        return await asyncio.shield(finishing)

    def _finished(self, task: asyncio.Task[pl.DataFrame]) -> None:
        self._finishing.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that went away no longer awaits it

    async def _finish_queued(self, done: asyncio.Future[pl.DataFrame], source: str, records: int) -> pl.DataFrame:
        stored = await self._grouped_insert(done)
        METRICS.transactions.labels(source, "stored").inc(len(stored))
        METRICS.transactions.labels(source, "duplicate").inc(records - len(stored))
        if len(stored):
            profit = stored["net_profit_sol"].filter(stored["net_profit_sol"] > 0).sum()  # per row: any batching
            if profit:
                METRICS.profit.inc(float(profit))
            if "late" in stored.columns:
                METRICS.late_transactions.labels(source).inc(int(stored["late"].sum()))
            await self._publish(stored)
        return stored

    async def _grouped_insert(self, done: asyncio.Future[pl.DataFrame]) -> pl.DataFrame:
        """Store a batch, sharing one insert with every batch that queued meanwhile.

        Callers queue their batch, then take the writer lock; whoever gets it prepares all
        queued batches in arrival order as one group (dedup, features, positions: the steps
        that depend on order) and hands it to the insert task, so the next group is prepared
        while this one is written. Preparing is quicker than inserting, so groups wait for
        the insert in flight; the next insert takes all of them at once (an insert's cost is
        mostly per insert at these sizes). Each caller gets its own stored rows once the
        insert holding its group returned.
        """
        async with self._writer:
            if not done.done() and self._queued:  # else an earlier holder took this batch into its group
                group, self._queued = self._take_group()
                try:
                    await self._prepare_for_insert(group)
                finally:
                    for _, _, grouped in group:
                        grouped.done()
        return await done

    async def _prepare_for_insert(self, group: list[_Queued]) -> None:
        """Prepare `group` as one and hand it to the insert task.

        When that fails for a reason other than the warehouse (an enricher some record trips),
        each batch is prepared alone, in order: one caller's bad batch must fail only that
        caller, not the batches that happened to queue beside it (a Kafka consumer then splits
        its own batch until the record at fault stands alone).
        """
        futures = [future for _, future, _ in group]
        try:
            prepared = await self._prepare([f for f, _, _ in group])
        except BaseException as exc:
            if len(group) > 1 and isinstance(exc, Exception) and not isinstance(exc, WarehouseUnavailable):
                for batch in group:
                    await self._prepare_for_insert([batch])
            else:
                _fail(futures, exc)
        else:
            self._prepared.append((prepared, futures))
            if self._failed_inserts:  # an insert failed while this group was prepared
                self._fail_dependents()
            if self._prepared and (self._inserting is None or self._inserting.done()):
                self._inserting = asyncio.create_task(self._insert_prepared())
        finally:
            self._failed_inserts.clear()  # no group prepared from now on saw them in flight

    def _take_group(self) -> tuple[list[_Queued], list[_Queued]]:
        taken = _leading_within([len(frame) for frame, _, _ in self._queued], self.max_group_rows)
        return self._queued[:taken], self._queued[taken:]

    async def _prepare(self, frames: list[pl.DataFrame]) -> _Prepared:
        """Dedup (against the warehouse and the groups still being inserted) and enrich, in order."""
        # Frames of 100+ columns: whole-frame polars work runs in worker threads, off the
        # event loop that also serves the live streams.
        started = time.perf_counter()
        combined = await asyncio.to_thread(_combined, frames)
        # Taken before the look-up: an insert that returns while the look-up runs leaves
        # `_in_flight`, and the look-up may have read the table before those rows were in it.
        in_flight = dict(self._in_flight)
        with span("ingest.dedup"):
            known = await self.warehouse.known_signatures(combined["signature"].to_arrow(), _window_of(combined))
        skipped = [pl.Series(list(known), dtype=pl.String)] if known else []
        skipped += in_flight.values()
        if skipped:
            combined = await asyncio.to_thread(_without, combined, skipped)
        METRICS.ingest_batch_seconds.labels("dedup").observe(time.perf_counter() - started)
        token, saw = next(self._group_tokens), frozenset(in_flight)
        if combined.is_empty():
            return _Prepared(combined.drop(_BATCH), combined[_BATCH], len(frames), token, saw)
        started = time.perf_counter()
        batch_ids = combined[_BATCH]
        checkpoints = self._checkpoints()
        try:
            enriched = await asyncio.to_thread(self._enrich, combined.drop(_BATCH))
            METRICS.ingest_batch_seconds.labels("enrich").observe(time.perf_counter() - started)
            if self.position_source is not None:
                enriched = await self._with_positions(enriched)
        except BaseException:
            self._roll_back_to(token, checkpoints)
            raise
        prepared = _Prepared(enriched, batch_ids, len(frames), token, saw, checkpoints)
        self._in_flight[token] = enriched["signature"]
        return prepared

    async def _insert_prepared(self) -> None:
        """Insert the prepared groups in order, each insert taking every group that waits for it."""
        try:
            while self._prepared:
                await self._linger()
                taken = _leading_within([len(prepared.rows) for prepared, _ in self._prepared], self.max_group_rows)
                groups, self._prepared = self._prepared[:taken], self._prepared[taken:]
                await self._insert_groups(groups)
        except BaseException as exc:  # cancelled at shutdown: nobody is left waiting forever
            for prepared, futures in self._prepared:
                _fail(futures, exc)
                self._in_flight.pop(prepared.token, None)
                self._not_stored(prepared)
            self._prepared = []
            raise

    async def _linger(self) -> None:
        """Under load, wait for batches already on their way, so that they share this insert.

        An insert has a large fixed cost in the warehouse, and every part it writes is merged
        again later: with 50k-row inserts the whole pipeline takes a sixth less CPU per row than
        with 10k-row ones. The wait lasts while more admitted batches are still on their way
        than are ready (those are prepared during this insert, for the next one), and ends at
        `insert_min_rows` or after `insert_linger_seconds`. A lone batch is inserted at once.
        """
        deadline = asyncio.get_running_loop().time() + self.insert_linger_seconds
        while (
            self._arriving > sum(len(futures) for _, futures in self._prepared)
            and sum(len(p.rows) for p, _ in self._prepared) < self.insert_min_rows
        ):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    async def _insert_groups(self, groups: list[tuple[_Prepared, list[asyncio.Future[pl.DataFrame]]]]) -> None:
        futures = [future for _, group_futures in groups for future in group_futures]
        prepared_groups = [prepared for prepared, _ in groups]
        inserting = any(len(prepared.rows) for prepared in prepared_groups)
        try:
            if inserting:
                self._stamp_in_flight = utc_now()
                try:
                    rows = await asyncio.to_thread(_stamped_rows, prepared_groups, self._stamp_in_flight)
                    started = time.perf_counter()
                    with span("ingest.insert"):
                        await self.warehouse.insert_arrow("transactions", rows)
                finally:
                    self._stamp_in_flight = None
                METRICS.ingest_batch_seconds.labels("insert").observe(time.perf_counter() - started)
                METRICS.ingest_insert_rows.observe(rows.num_rows)
            per_batch = await asyncio.to_thread(lambda: [prepared.per_batch() for prepared, _ in groups])
        except BaseException as exc:
            _fail(futures, exc)
            if not isinstance(exc, Exception):
                raise
            self.insert_error = f"{type(exc).__name__}: {exc}"[:300]
            self._failed_inserts.update(prepared.token for prepared in prepared_groups)
            for prepared in prepared_groups:
                self._not_stored(prepared)
            self._fail_dependents()
        else:
            if inserting:  # a group of duplicates only inserted nothing: it proves nothing about inserts
                self.insert_error = None
            for (_, group_futures), stored_per_batch in zip(groups, per_batch, strict=True):
                for future, stored in zip(group_futures, stored_per_batch, strict=True):
                    if not future.done():
                        future.set_result(stored)
        finally:
            for prepared, _ in groups:
                self._in_flight.pop(prepared.token, None)

    def _fail_dependents(self) -> None:
        """Fail the prepared groups that skipped signatures of `_failed_inserts` as in flight, and theirs in turn.

        Their callers are told to send them again (503, or a Kafka retry): stored as they are,
        they would have reported as duplicates rows that the warehouse never took.
        """
        kept: list[tuple[_Prepared, list[asyncio.Future[pl.DataFrame]]]] = []
        for prepared, futures in self._prepared:  # in prepare order: a dependent's dependents come after it
            if prepared.saw & self._failed_inserts:
                self._failed_inserts.add(prepared.token)
                self._in_flight.pop(prepared.token, None)
                self._not_stored(prepared)
                _fail(futures, _deduplicated_against_a_failure())
            else:
                kept.append((prepared, futures))
        self._prepared = kept

    async def drain(self) -> None:
        """Wait for the inserts in flight and their batches' publishing (at shutdown, so no accepted
        batch is left half-done)."""
        if self._finishing:
            await asyncio.wait(list(self._finishing))
        if self._inserting is not None:
            await asyncio.wait([self._inserting])

    async def _with_positions(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Stream positions are stored with the rows, so a resuming client can read them back."""
        assert self.position_source is not None
        first = await self.position_source(len(frame))
        self.unpublished.reserved(first, first + len(frame) - 1)
        return frame.with_columns(pl.int_range(first, first + len(frame), dtype=pl.UInt64).alias("stream_position"))

    def _not_stored(self, prepared: _Prepared) -> None:
        """A prepared group's rows will not be stored: the enrichers forget them (every group enriched
        after it fails too, and the earliest group's state is the one returned to), and the live feed
        need not wait for their positions."""
        self._roll_back_to(prepared.token, prepared.checkpoints)
        rows = prepared.rows
        if POSITION_COLUMN in rows.columns and len(rows):
            positions = rows.get_column(POSITION_COLUMN)  # consecutive, in row order (`_with_positions`)
            self.unpublished.abandoned(positions[0], positions[-1])
            if self.positions_abandoned is not None:
                self.positions_abandoned(positions[0], positions[-1])

    def _checkpoints(self) -> list[object] | None:
        """The stateful enrichers' state before a group, once an earlier rollback is applied."""
        if self._rollback is not None:
            for enricher, checkpoint in zip(self._stateful, self._rollback[1], strict=True):
                enricher.restore(checkpoint)
            self._rollback = None
        return [e.checkpoint() for e in self._stateful] if self._stateful else None

    def _roll_back_to(self, token: int, checkpoints: list[object] | None) -> None:
        """Applied before the next enrichment: one may be running now (in a thread, for a group that fails too)."""
        if checkpoints is not None and (self._rollback is None or token < self._rollback[0]):
            self._rollback = (token, checkpoints)

    def _enrich(self, frame: pl.DataFrame) -> pl.DataFrame:
        for enricher in self.enrichers:
            with span("ingest.enrich", enricher=getattr(enricher, "__qualname__", type(enricher).__qualname__)):
                frame = enricher(frame)
        return frame

    async def _publish(self, stored: pl.DataFrame) -> None:
        self.recent.add(stored)
        for listener in self._listeners:
            try:
                await listener(stored)
            except Exception:
                log.exception("a stored-batch listener failed; the batch is stored")
        if POSITION_COLUMN in stored.columns:
            self.unpublished.published(stored.get_column(POSITION_COLUMN))

    async def record_rejects(self, rejects: Sequence[Reject], source: str) -> None:
        """Keep records another decoder refused as dead letters and count them."""
        METRICS.transactions.labels(source, "rejected").inc(len(rejects))
        await self._dead_letters(rejects, source)

    async def _dead_letters(self, rejects: Sequence[Reject], source: str) -> None:
        """Insert the rejects that are not an unreplayed letter of `source` already.

        A batch sent again (a client's retry, Kafka re-reading uncommitted offsets, a store
        retried after its rows failed to insert) must not multiply its letters.
        """
        try:
            async with self._dead_letter_lock:
                fresh = await self._unknown_rejects(rejects, source)
                if not fresh:
                    return
                now = datetime.now(UTC)
                table = pa.Table.from_pydict(
                    {
                        "received_at": [now] * len(fresh),
                        "source": [source] * len(fresh),
                        "record_index": [r.index for r, _ in fresh],
                        "field": [r.field for r, _ in fresh],
                        "reason": [r.reason for r, _ in fresh],
                        "raw": [r.raw for r, _ in fresh],
                        "digest": [digest for _, digest in fresh],
                    },
                    schema=_DEAD_LETTER_SCHEMA,
                )
                await self.warehouse.insert_arrow("dead_letters", table)
            METRICS.dead_letters.labels(source).inc(len(fresh))
        except Exception as exc:
            log.exception("could not store %d dead letters from %s", len(rejects), source)
            # The batch gets 503 for it: `health` must say why, as for a failed insert of rows.
            self.insert_error = f"{type(exc).__name__}: {exc}"[:300]
            raise

    async def _unknown_rejects(self, rejects: Sequence[Reject], source: str) -> list[tuple[Reject, bytes]]:
        """The first reject of each distinct raw record that `source` has no unreplayed letter of."""
        by_digest: dict[bytes, Reject] = {}
        for reject in rejects:
            by_digest.setdefault(hashlib.md5(reject.raw, usedforsecurity=False).digest(), reject)
        digests = list(by_digest)
        known: set[str] = set()
        for start in range(0, len(digests), _DIGESTS_PER_QUERY):
            found = await self.warehouse.query_arrow(
                f"SELECT DISTINCT lower(hex(digest)) AS known FROM {self.warehouse.database}.dead_letters "
                "WHERE NOT replayed AND source = {source:String} AND has({digests:Array(String)}, lower(hex(digest)))",
                {"source": source, "digests": [d.hex() for d in digests[start : start + _DIGESTS_PER_QUERY]]},
            )
            known.update(found.column("known").cast(pa.string()).to_pylist())
        return [(reject, digest) for digest, reject in by_digest.items() if digest.hex() not in known]


class _Arrival:
    """Counts a batch in `IngestService._arriving` until it is grouped for an insert or leaves.

    Its `ticket` is its place in admission order, which it keeps on its way to the writer.
    """

    def __init__(self, service: IngestService) -> None:
        self._service: IngestService | None = service
        self.ticket = service._turns.take()
        service._arriving += 1

    def done(self) -> None:
        service, self._service = self._service, None
        if service is not None:
            service._arriving -= 1
            service._arrived.set()
            service._turns.leave(self.ticket)


class _Turns:
    """Batches reach the writer in the order they were admitted.

    Two decode at once, and a small batch can finish before a big one admitted earlier: stored
    first, it would make the big one's rows late (the feature engine then computes them against
    later rows). A batch queues once every batch admitted before it has queued or left.
    """

    def __init__(self) -> None:
        self._issued = 0
        self._front = 0
        """The oldest ticket that has neither queued nor left."""
        self._passed: set[int] = set()
        self._moved = asyncio.Event()

    def take(self) -> int:
        self._issued += 1
        return self._issued - 1

    async def wait(self, ticket: int) -> None:
        while self._front < ticket:
            moved = self._moved
            await moved.wait()

    def leave(self, ticket: int) -> None:
        """`ticket` has queued, or left without queueing (idempotent)."""
        if ticket < self._front:
            return
        self._passed.add(ticket)
        while self._front in self._passed:
            self._passed.remove(self._front)
            self._front += 1
        self._moved.set()
        self._moved = asyncio.Event()


_Queued = tuple[pl.DataFrame, asyncio.Future[pl.DataFrame], _Arrival]
"""A derived batch waiting for the writer lock: its rows, its caller's result, its arrival."""


class _Prepared:
    """A group ready to insert: its rows, and which caller's batch each row came from.

    `saw`: the tokens of the groups in flight when it was de-duplicated (their signatures were skipped).
    """

    def __init__(
        self,
        rows: pl.DataFrame,
        batch_ids: pl.Series,
        batches: int,
        token: int,
        saw: frozenset[int],
        checkpoints: list[object] | None = None,
    ) -> None:
        self.rows = rows
        self.batch_ids = batch_ids
        self.batches = batches
        self.token = token
        self.saw = saw
        self.checkpoints = checkpoints
        """The stateful enrichers' state before this group was enriched (None: nothing enriched it)."""

    def per_batch(self) -> list[pl.DataFrame]:
        return [self.rows.filter(self.batch_ids == i) for i in range(self.batches)]


def _deduplicated_against_a_failure() -> WarehouseUnavailable:
    return WarehouseUnavailable(
        "not stored: rows of this batch were left out as already being inserted, and that insert failed; send it again"
    )


def _fail(futures: Sequence[asyncio.Future[pl.DataFrame]], exc: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(exc)


def _leading_within(sizes: list[int], max_rows: int) -> int:
    """How many of the first `sizes` fit in `max_rows` together (at least one)."""
    taken, rows = 0, 0
    for size in sizes:
        if taken and rows + size > max_rows:
            break
        taken += 1
        rows += size
    return taken


def _combined(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """The group's batches as one frame, first of each signature kept, tagged with its batch.

    Each batch holds a signature once already (`_derive_unique`): a group of one is left as it is.
    """
    tagged = [f.with_columns(pl.lit(i, pl.UInt32).alias(_BATCH)) for i, f in enumerate(frames)]
    if len(tagged) == 1:
        return tagged[0]
    return _first_of_each_signature(pl.concat(tagged, how="vertical"))


def _window_of(frame: pl.DataFrame) -> SignatureWindow:
    bounds = frame.select(
        start=pl.col("block_time").min(),
        end=pl.col("block_time").max(),
        first_slot=pl.col("slot").min(),
        last_slot=pl.col("slot").max(),
    ).row(0, named=True)
    return SignatureWindow(**bounds)


def _without(frame: pl.DataFrame, signatures: list[pl.Series]) -> pl.DataFrame:
    return frame.filter(~pl.col("signature").is_in(pl.concat(signatures).implode()))


def _stamped_rows(groups: list[_Prepared], moment: datetime) -> pa.Table:
    """The groups' rows as one insert, their `ingested_at` set to `moment`, just before it.

    Rows become visible when the insert returns. Stamped when derived, they could wait seconds
    (queues, the linger, the insert before) and then appear behind an incremental export's
    watermark (`now - schedule.watermark_lag_seconds`), never to be exported.
    """
    for prepared in groups:
        prepared.rows = prepared.rows.with_columns(ingested_at_column(moment))
    frames = [prepared.rows for prepared in groups if len(prepared.rows)]
    rows = frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed")
    # Strings stay polars' views: converting them to large strings copied every string, 43 ms of
    # a 55k-row insert in the serial insert loop; chdb reads views as they are (the ClickHouse
    # backend converts its IPC copy itself).
    return rows.to_arrow(compat_level=pl.CompatLevel.newest())


def _derive_unique(raw: pl.DataFrame, source: str) -> pl.DataFrame:
    """Derived columns, keeping the first of any signature repeated inside the batch."""
    return derive(_first_of_each_signature(raw), source=source)


def _first_of_each_signature(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame less later rows of a signature it holds already, in order.

    Repeats are rare: counting distinct signatures first leaves the frame as it is without
    gathering its 100+ columns (`unique` always gathers them: 24 ms for a 50k-row group).
    """
    signatures = frame.get_column("signature")
    if signatures.n_unique() == len(signatures):
        return frame
    return frame.filter(signatures.is_first_distinct())
