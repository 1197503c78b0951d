"""KafkaIngest: fetch thread → batch → store (IngestService) → commit, with back-pressure end to end.

The event loop runs the pipeline and only awaits: `consume()` lives in the fetch thread,
decode/insert in the ingest service's worker threads, and the blocking producer and
commit calls in a worker thread. Batches are stored up to `max_inflight_batches` at once
(the next decodes while the previous inserts) and committed strictly in fetch order, each
commit beside the storing of the batches after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from arbitrage.errors import ValidationError
from arbitrage.ingest import IngestService
from arbitrage.ingest.kafka import _metrics as m
from arbitrage.ingest.kafka._commit import CommitFailed, Committer, PlainCommitter, TransactionalCommitter
from arbitrage.ingest.kafka._fetch import Barrier, Channel, Chunk, Fetcher, PauseReason, Stop
from arbitrage.ingest.kafka._fetched import Fetched
from arbitrage.ingest.kafka._offsets import BrokerOffsets
from arbitrage.ingest.kafka._options import KafkaOptions
from arbitrage.ingest.kafka._producing import until_answered
from arbitrage.ingest.kafka._strategies import (
    Batcher,
    RecoveryWindow,
    StoredBatch,
    StoreStep,
    Suspects,
    collect_stored,
)
from arbitrage.ingest.kafka._topics import ensure_topics

log = logging.getLogger(__name__)

_IDLE_S = 0.25
_COMMIT_RETRY_MAX_S = 30.0
_listening: weakref.WeakSet[IngestService] = weakref.WeakSet()


class KafkaNotConnected(RuntimeError):
    """An operation needs the consumer, which is still connecting (or never connected)."""


class PartitionState(msgspec.Struct):
    partition: int
    position: int | None
    """Next offset the consumer will fetch."""
    committed: int | None
    """Next offset after the last stored-and-committed message."""
    low_watermark: int | None
    high_watermark: int | None
    lag: int | None
    """Messages not yet stored and committed."""
    paused: bool
    paused_for: list[PauseReason]
    """Why it is paused: `admin` (`POST /admin/kafka/pause`), `backpressure` (the pipeline is
    full), `alignment` (it holds many messages stamped after what the other partitions reached)."""
    held: int
    """Messages fetched and held until every partition reaches their timestamps (`align_wait_ms`)."""


class _LocalState(NamedTuple):
    positions: dict[int, int]
    paused_for: dict[int, list[PauseReason]]
    held: dict[int, int]


class KafkaStatus(msgspec.Struct):
    topic: str
    group_id: str
    running: bool
    transactional: bool
    backpressure: bool
    """True while the pipeline is full and every partition is paused."""
    store_error: str | None
    """Why the batch in flight is being retried, if it is."""
    last_client_error: str | None
    partitions: list[PartitionState]


class KafkaIngest:
    """One consumer of `topic_transactions` in the group, feeding the shared ingest service."""

    def __init__(self, ingest: IngestService, options: KafkaOptions) -> None:
        self.ingest = ingest
        self.options = options
        self._store_step = StoreStep(
            ingest, backoff_max_s=options.retry_backoff_max_s, opportunity_omit=options.opportunity_omit
        )
        # Stored but uncommitted: the batches in flight and the one committing, twice over for safety.
        self._recovery = RecoveryWindow(span=2 * (options.max_inflight_batches + 1) * options.batch_size)
        self._inflight: deque[asyncio.Task[StoredBatch]] = deque()
        self._committing: asyncio.Task[None] | None = None
        self.commit_error: str | None = None
        """Why the oldest stored batch is not committed yet, while its commit is retried."""
        """The commit of the newest stored batch; it runs while the next batches are stored."""
        self._committed: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._fetcher: Fetcher | None = None
        self._committer: Committer | None = None
        self._channel: Channel | None = None
        self.failure: str | None = None
        """Why the pipeline stopped, if it stopped on an error (shown by /health)."""
        self._connect_error: str | None = "connecting"
        self._offsets: BrokerOffsets | None = None

    async def start(self) -> None:
        """Start the pipeline task; it connects in the background, so a slow or absent broker never blocks start-up."""
        self._task = asyncio.create_task(self._connect_and_run(), name="kafka-ingest")

    async def _until_connected(self, what: str, call: Callable[[], Any]) -> None:
        """`call()` until the broker answers it; `/health` says why meanwhile."""

        def failed(error: KafkaError) -> None:
            self._connect_error = str(error)
            log.warning("Kafka: could not %s (%s); retrying", what, error)

        await until_answered(call, backoff_max_s=self.options.retry_backoff_max_s, failed=failed)

    async def _connect_and_run(self) -> None:
        try:
            await self._connect()
            await self._run()
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"[:300]
            log.exception("Kafka ingest stopped; what it fetched and did not commit is consumed again after a restart")
            raise

    async def _connect(self) -> None:
        """Create missing topics, fence a predecessor's transaction (retrying until the broker answers), start fetching."""
        loop = asyncio.get_running_loop()
        if self.options.create_topics:
            await self._until_connected("list or create topics", lambda: ensure_topics(self.options))
        self._channel = Channel(loop, self.options.fetch_queue_chunks)
        self._fetcher = Fetcher(
            self.options,
            self._channel,
            on_assign=lambda partitions: self._on_assigned(loop, partitions),
            committed=lambda: dict(self._committed),
            revoke_timeout_s=self.options.revoke_timeout_s,
        )
        committer_type = TransactionalCommitter if self.options.transactional else PlainCommitter
        self._committer = committer_type(self.options, self._fetcher)
        await self._until_connected("initialise transactions", self._committer.start)
        self._connect_error = None
        if self.ingest not in _listening:
            self.ingest.on_stored(collect_stored)
            _listening.add(self.ingest)
        self._fetcher.start()

    def _on_assigned(self, loop: asyncio.AbstractEventLoop, partitions: list[int]) -> None:
        """From the fetch thread; runs before any chunk of these partitions reaches the pipeline."""
        loop.call_soon_threadsafe(self._assigned_anew, partitions)

    def _assigned_anew(self, partitions: list[int]) -> None:
        """What this consumer committed before a partition moved away is stale: its other owner went on."""
        self._recovery.reset(partitions)
        for partition in partitions:
            self._committed.pop(partition, None)

    async def stop(self) -> None:
        """Stop fetching, store and commit what was fetched, leave the group. Bounded in time."""
        if self._task is None:
            return
        if self._fetcher is None or self._channel is None or self._connect_error is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
            if self._fetcher is not None:  # never subscribed: closing is quick, and stops its reconnecting
                with contextlib.suppress(KafkaException):
                    await asyncio.to_thread(self._fetcher.close)
            self._fetcher = self._committer = None  # the producer's client goes with its last reference
            return
        await asyncio.to_thread(self._fetcher.stop, 5.0)
        self._channel.send_control(Stop())
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.options.stop_timeout_s)
        except TimeoutError:
            log.warning("Kafka ingest did not finish its batches in time; they will be consumed again")
        except Exception:
            pass  # logged when it stopped; /health has shown it since
        tasks = [t for t in (self._task, *self._inflight, self._committing) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._inflight.clear()
        self._committing = None
        if self._committer is not None:
            await asyncio.to_thread(self._committer.close)
        await asyncio.to_thread(self._fetcher.close)
        self._task = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        assert self._channel is not None
        batcher = Batcher(self.options.batch_size, self.options.batch_timeout_ms / 1000)
        while True:
            await self._commit_ready()
            left = batcher.time_left()
            item = await self._channel.get(_IDLE_S if left is None else min(left, _IDLE_S))
            if isinstance(item, Chunk):
                if batcher.holds_older(item.generation):
                    await self._flush(batcher.take(), batcher.generation)
                batcher.add(item.fetched, item.generation)
            if batcher.full or batcher.time_left() == 0 or isinstance(item, Barrier | Stop):
                await self._flush(batcher.take(), batcher.generation)
            if isinstance(item, Barrier | Stop):
                while self._inflight:
                    await self._commit_oldest()
                await self._commits_done()
                if isinstance(item, Stop):
                    return
                item.done.set()

    async def _flush(self, fetched: Fetched, generation: int) -> None:
        if not fetched:
            return
        while len(self._inflight) >= self.options.max_inflight_batches:
            await self._commit_oldest()
        assert self._fetcher is not None
        stale = self._fetcher.stale(set(fetched.partitions), generation)
        if stale:  # fetched before their partitions were revoked, while earlier batches kept the pipeline full
            fetched = fetched.without(stale)
            if not fetched:
                return
        suspects = self._recovery.suspects(fetched)
        self._inflight.append(asyncio.create_task(self._stored(fetched, suspects, generation)))

    async def _stored(self, fetched: Fetched, suspects: Suspects, generation: int) -> StoredBatch:
        batch = await self._store_step(fetched, suspects)
        batch.generation = generation
        return batch

    async def _commit_ready(self) -> None:
        if self._committing is not None and self._committing.done():
            await self._commits_done()  # raises when the producer failed for good, even with nothing more to store
        while self._inflight and self._inflight[0].done():
            await self._commit_oldest()

    async def _commit_oldest(self) -> None:
        """Hand the oldest batch, once stored, to the commit stage; commits stay in fetch order.

        The commit (derived records, offsets: one transaction) runs while the next batches are
        stored; only one runs at a time, so at most one stored batch waits beyond those in flight.
        """
        batch = await self._inflight.popleft()
        await self._commits_done()
        self._committing = asyncio.create_task(self._commit(batch))

    async def _commits_done(self) -> None:
        if self._committing is not None:
            await self._committing
            self._committing = None

    async def _commit(self, batch: StoredBatch) -> None:
        """Commit, retrying until it goes through: a later batch's offsets must never pass this one's.

        Meanwhile the pipeline stops at its in-flight limit, fetching pauses, and /health says
        why. What belongs to partitions that left or are being handed over is dropped, not
        retried (their next owner reads from the last commit); the rest is still this consumer's
        to publish and commit (cooperative rebalancing keeps some partitions). A producer that can
        never commit again (fenced by a newer instance) stops the pipeline; its batches are
        consumed again by the next owner.
        """
        assert self._committer is not None and self._fetcher is not None
        delay = 1.0
        while True:
            batch = _without(
                batch,
                self._fetcher.stale(batch.offsets, batch.generation),
                "were revoked while the batch was stored; whoever owns them now reads them again",
            )
            if not batch.offsets:
                self.commit_error = None
                return
            try:
                with m.COMMIT_SECONDS.time():
                    await asyncio.to_thread(self._committer.commit, batch)
            except CommitFailed as exc:
                if exc.fatal:
                    self.commit_error = f"the Kafka producer failed for good: {exc}"
                    log.error(
                        "%s; offsets %s stay uncommitted and the pipeline stops", self.commit_error, batch.offsets
                    )
                    raise
                self._commit_failed(batch, exc, delay)
            except Exception as exc:  # a broker call that timed out
                self._commit_failed(batch, exc, delay)
            else:
                self.commit_error = None
                self._committed.update(batch.offsets)
                return
            batch = _without(batch, self._moving(batch), "moved; the next owner reads them")
            if not batch.offsets:
                self.commit_error = None
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, _COMMIT_RETRY_MAX_S)

    def _moving(self, batch: StoredBatch) -> set[int]:
        """The batch's partitions that are no longer ours, or are being handed over."""
        fetcher = self._fetcher
        ours = set(fetcher.assigned) - fetcher.revoking if fetcher is not None else set()
        return set(batch.offsets) - ours

    def _commit_failed(self, batch: StoredBatch, exc: BaseException, delay: float) -> None:
        self.commit_error = str(exc)[:200]
        log.warning(
            "offsets %s were not committed (%s); retrying in %.0f s, later batches wait", batch.offsets, exc, delay
        )

    # Operations (admin endpoints, /health) ------------------------------------------------

    async def status(self) -> KafkaStatus:
        """Assignment, positions, committed offsets, watermarks, lag and paused state per partition."""
        fetcher = self._fetcher if self._connect_error is None else None
        if fetcher is None:
            return KafkaStatus(
                topic=self.options.topic_transactions,
                group_id=self.options.group_id,
                running=self.running,
                transactional=self.options.transactional,
                backpressure=False,
                store_error=None,
                last_client_error=self._connect_error,
                partitions=[],
            )
        local = await asyncio.wrap_future(fetcher.call(lambda: self._local_state(fetcher)))
        partitions = await asyncio.to_thread(self._partition_states, local)
        return KafkaStatus(
            topic=self.options.topic_transactions,
            group_id=self.options.group_id,
            running=self.running,
            transactional=self.options.transactional,
            backpressure=fetcher.backpressure,
            store_error=self._store_step.failing,
            last_client_error=fetcher.last_error,
            partitions=partitions,
        )

    def _local_state(self, fetcher: Fetcher) -> _LocalState:
        """In the fetch thread (local answers): per assigned partition, the next offset to fetch,
        why it is paused, and what the aligner holds of it."""
        topic = self.options.topic_transactions
        assigned = [TopicPartition(topic, p) for p in fetcher.assigned]
        positions = {tp.partition: tp.offset for tp in fetcher.consumer.position(assigned)} if assigned else {}
        return _LocalState(positions, fetcher.pause_reasons(), fetcher.held())

    def _partition_states(self, local: _LocalState) -> list[PartitionState]:
        """In a worker thread: the broker's answers come through `BrokerOffsets`, never the consumer."""
        offsets = self._broker_offsets()
        positions = local.positions
        assigned = sorted(positions)
        watermarks = offsets.watermarks(assigned)
        # What this consumer committed itself is known here; the broker is asked for the rest.
        committed = offsets.committed([p for p in assigned if p not in self._committed])
        states = []
        for partition in assigned:
            low, high = watermarks.get(partition, (-1, -1))
            done = self._committed.get(partition, committed.get(partition, -1))
            states.append(
                PartitionState(
                    partition=partition,
                    position=_offset(positions.get(partition)),
                    committed=_offset(done),
                    low_watermark=_offset(low),
                    high_watermark=_offset(high),
                    lag=max(0, high - (done if done >= 0 else low)) if high >= 0 else None,
                    paused=partition in local.paused_for,
                    paused_for=local.paused_for.get(partition, []),
                    held=local.held.get(partition, 0),
                )
            )
        return states

    def _broker_offsets(self) -> BrokerOffsets:
        if self._offsets is None:
            self._offsets = BrokerOffsets(self.options)
        return self._offsets

    async def health(self) -> dict[str, Any]:
        """The `/health` component: connected, assigned partitions, lag; degraded while paused."""
        fetcher = self._fetcher if self._connect_error is None else None
        if fetcher is None:
            return {"status": "unhealthy", "connected": False, "assigned_partitions": [], "error": self._connect_error}
        connected = await asyncio.to_thread(self._broker_offsets().reachable, 1.5)
        lag = sum(fetcher.lag.values())
        if not self.running or not connected:
            status = "unhealthy"
        elif fetcher.backpressure or self._store_step.failing or self.commit_error:
            status = "degraded"
        else:
            status = "healthy"
        report: dict[str, Any] = {
            "status": status,
            "connected": connected,
            "assigned_partitions": list(fetcher.assigned),
            "lag": lag,
            "paused_partitions": sorted(fetcher.paused),
        }
        error = self.failure or self._store_step.failing or self.commit_error
        if error:
            report["error"] = error
        return report

    async def pause(self, partitions: list[int] | None = None) -> list[int]:
        """Stop fetching these partitions (all assigned when None) until `resume`; returns the paused set.

        A partition another consumer holds now stays paused here if a rebalance brings it over.
        """
        fetcher = self._require_fetcher()
        if partitions is not None:
            await self._check_partitions(partitions)
        fetcher.admin_paused = fetcher.admin_paused | set(fetcher.assigned if partitions is None else partitions)
        return sorted(fetcher.admin_paused)

    async def resume(self, partitions: list[int] | None = None) -> list[int]:
        fetcher = self._require_fetcher()
        if partitions is not None:
            await self._check_partitions(partitions)
        fetcher.admin_paused = set() if partitions is None else fetcher.admin_paused - set(partitions)
        return sorted(fetcher.admin_paused)

    async def _check_partitions(self, partitions: list[int]) -> None:
        """A partition the topic does not have is a typo to name, not a pause that never applies."""
        try:
            count = await asyncio.to_thread(self._broker_offsets().partition_count)
        except KafkaException as exc:
            raise KafkaNotConnected(f"the broker did not say how many partitions it has: {exc}") from exc
        unknown = sorted(p for p in partitions if not 0 <= p < count)
        if unknown:
            topic = self.options.topic_transactions
            raise ValidationError("partitions", f"{topic} has partitions 0 to {count - 1}; no partition {unknown}")

    async def replay(self, partition: int, *, offset: int | None = None, timestamp_ms: int | None = None) -> int:
        """Seek an assigned partition back to an offset or to the first message at/after a time.

        Replayed messages go through the same pipeline, so transactions stored already are
        recognised by signature and not stored twice. Returns the offset sought to.
        """
        if (offset is None) == (timestamp_ms is None):
            raise ValidationError("offset", "give exactly one of offset and timestamp")
        fetcher = self._require_fetcher()
        topic = self.options.topic_transactions

        def seek() -> int:
            if partition not in fetcher.assigned:
                raise ValidationError("partition", f"partition {partition} is not assigned to this consumer")
            low, high = fetcher.consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            target = offset
            if timestamp_ms is not None:
                found = fetcher.consumer.offsets_for_times(
                    [TopicPartition(topic, partition, timestamp_ms)], timeout=10
                )[0]
                target = found.offset if found.offset >= 0 else high
            assert target is not None
            if not low <= target <= high:
                raise ValidationError("offset", f"partition {partition} holds offsets {low} to {high}; got {target}")
            fetcher.seek(partition, target)
            return target

        target = int(await asyncio.wrap_future(fetcher.call(seek)))
        # What a replay reads again was stored and committed: none of it is a predecessor's
        # uncommitted work, whose derived records would be produced a second time.
        self._recovery.close(partition)
        return target

    def _require_fetcher(self) -> Fetcher:
        if self._fetcher is None or self._connect_error is not None:
            raise KafkaNotConnected(f"Kafka ingest is not connected yet ({self._connect_error})")
        return self._fetcher


def _offset(value: int | None) -> int | None:
    return value if value is not None and value >= 0 else None


def _without(batch: StoredBatch, gone: set[int], why: str) -> StoredBatch:
    """The batch less the partitions that left this consumer (the kept ones, under cooperative
    rebalancing, are still its to publish and commit)."""
    if not gone:
        return batch
    log.warning(
        "offsets %s were not committed nor their derived records published: their partitions %s",
        {p: o for p, o in batch.offsets.items() if p in gone},
        why,
    )
    return batch.without(gone)
