"""The fetch stage: the confluent-kafka consumer, polled in its own thread.

The thread is the only one that calls `consume()`; rebalance callbacks run in it. It hands
chunks of messages to the event loop through a bounded channel. When the channel is full
it keeps the chunk, pauses every assigned partition (so memory stays bounded and the
consumer still polls, keeping its group membership) and resumes once there is room. Before
that, a `PartitionAligner` puts the partitions in step (message-time order), pausing any
partition that runs too far ahead of the others.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from arbitrage.ingest.kafka import _metrics as m
from arbitrage.ingest.kafka._align import PartitionAligner
from arbitrage.ingest.kafka._fetched import Fetched
from arbitrage.ingest.kafka._options import KafkaOptions

log = logging.getLogger(__name__)

PauseReason = Literal["admin", "backpressure", "alignment"]

_POLL_S = 0.1
_LAG_EVERY_S = 1.0
_WATERMARK_TIMEOUT_S = 0.5
"""How long the lag update waits for the broker's end of a partition it does not fetch."""
_CLOSE_TIMEOUT_S = 10.0
_HAND_BACK_S = 5.0
"""How long a closing consumer polls for its partitions' revoke before it closes anyway."""


def close_within(close: Callable[[], None], timeout: float) -> bool:
    """Run `close` for at most `timeout` seconds; False when it was still running then.

    librdkafka's consumer close can wait forever (a coordinator that stopped answering, an
    assignment arriving while it closes: confluentinc/librdkafka#3740, #4527). It then runs on
    in a daemon thread, which the process does not wait for at exit, where a worker thread of
    the event loop's executor is joined at shutdown and would hang it. An error it raises in
    time is raised here.
    """
    raised: list[BaseException] = []

    def run() -> None:
        try:
            close()
        except BaseException as exc:  # handed to the caller below
            raised.append(exc)

    closer = threading.Thread(target=run, name="kafka-consumer-close", daemon=True)
    closer.start()
    closer.join(timeout)
    if closer.is_alive():
        return False
    if raised:
        raise raised[0]
    return True


def _is_cooperative(config: dict[str, Any]) -> bool:
    """Whether the group rebalances incrementally: a cooperative assignor, or KIP-848's protocol."""
    strategy = str(config.get("partition.assignment.strategy", ""))
    return "cooperative" in strategy or str(config.get("group.protocol", "classic")) == "consumer"


@dataclass
class Chunk:
    """Messages fetched in one `consume()` call (or several, while the channel was full), in partition order."""

    fetched: Fetched
    generation: int
    """The fetcher's `generation` when they were fetched (see `Fetcher.stale`)."""


@dataclass
class Barrier:
    """Ask the pipeline to store and commit everything before it, then set `done`."""

    done: threading.Event = field(default_factory=threading.Event)


class Stop:
    """The last item: the pipeline flushes, commits and ends."""


Item = Chunk | Barrier | Stop


class Channel:
    """Thread → event loop hand-off holding at most `capacity` chunks (control items do not count)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, capacity: int) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        self._slots = threading.BoundedSemaphore(capacity)

    def offer(self, chunk: Chunk) -> bool:
        """From the fetch thread: hand over `chunk` if there is room."""
        if not self._slots.acquire(blocking=False):
            return False
        self._loop.call_soon_threadsafe(self._queue.put_nowait, chunk)
        return True

    def send_control(self, item: Barrier | Stop) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    async def get(self, wait_s: float | None) -> Item | None:
        """The next item, or None after `wait_s` seconds."""
        try:
            item = await asyncio.wait_for(self._queue.get(), wait_s)
        except TimeoutError:
            return None
        if isinstance(item, Chunk):
            self._slots.release()
        return item


class ConsumerStopped(RuntimeError):
    """The fetch thread has ended; consumer calls no longer go through it."""


class Fetcher:
    """Owns the consumer. Other threads may read its state; changes go through `_commands`."""

    def __init__(
        self,
        options: KafkaOptions,
        channel: Channel,
        *,
        on_assign: Callable[[list[int]], None],
        committed: Callable[[], dict[int, int]],
        revoke_timeout_s: float = 10.0,
    ) -> None:
        self.options = options
        self.topic = options.topic_transactions
        config = options.consumer_config()
        self.consumer = Consumer({**config, "error_cb": self._on_error})
        self._cooperative = _is_cooperative(config)
        self._channel = channel
        self._on_assign = on_assign
        self._committed = committed
        self._revoke_timeout_s = revoke_timeout_s
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._stopping = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="kafka-fetch", daemon=True)
        self._accepting = False
        self._accepting_lock = threading.Lock()
        self._held: Chunk | None = None
        self._aligner = (
            PartitionAligner(self.topic, idle_s=options.align_wait_ms / 1000) if options.align_wait_ms else None
        )
        self._paused: dict[int, list[PauseReason]] = {}
        """Each paused partition and what for; replaced whole, never changed in place (other threads read it)."""
        self.admin_paused: set[int] = set()
        self.assigned: list[int] = []
        self.revoking: frozenset[int] = frozenset()
        """Partitions being handed to another consumer: their batches' commits are not retried."""
        self.backpressure = False
        self.last_error: str | None = None
        self.lag: dict[int, int] = {}
        self._group_metadata: Any = None
        self.generation = 0
        """Counts the times partitions left this consumer (revoked or lost)."""
        self._left_at: dict[int, int] = {}

    def start(self) -> None:
        self.consumer.subscribe([self.topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost)
        self._accepting = True
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop fetching; messages fetched but not handed over are left to be fetched again."""
        self._stopping.set()
        self._thread.join(timeout)

    def close(self) -> None:
        """Leave the group (after the pipeline committed); blocking, for at most `_CLOSE_TIMEOUT_S` and `_HAND_BACK_S`."""
        self._closing = True
        self._hand_back()
        if not close_within(self.consumer.close, _CLOSE_TIMEOUT_S):
            log.warning(
                "the Kafka consumer did not leave its group within %.0f s; the group drops it when its session expires",
                _CLOSE_TIMEOUT_S,
            )

    def run_in_thread(self, action: Callable[[], Any], timeout: float) -> Any:
        """Blocking form of `call`, for worker threads; runs directly once the fetch thread is gone."""
        future = self.call(action)
        if future.done() and isinstance(future.exception(), ConsumerStopped):
            return action()
        return future.result(timeout)

    def call(self, action: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        """Run `action` in the fetch thread (seek, commit...); the future holds its result.

        A synchronous `commit()` from another thread blocks while this one sits in `consume()`,
        so every consumer call other than reads goes through here.
        """
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._accepting_lock:
            if self._accepting:
                self._commands.put((action, future))
                return future
        future.set_exception(ConsumerStopped("the Kafka consumer is not running"))
        return future

    def group_metadata(self, timeout: float) -> Any:
        """The consumer's group metadata for `send_offsets_to_transaction`, as of the last fetch.

        Kept fresh by the fetch thread, so a commit does not wait for it to finish a fetch.
        If a rebalance made it stale, the broker refuses the offsets (fenced) and the commit
        is retried with the new one.
        """
        if self._group_metadata is None:
            return self.run_in_thread(self.consumer.consumer_group_metadata, timeout)
        return self._group_metadata

    @property
    def paused(self) -> set[int]:
        return set(self._paused)

    def pause_reasons(self) -> dict[int, list[PauseReason]]:
        """What each paused partition is paused for. `admin`: an operator paused it;
        `backpressure`: the pipeline is full; `alignment`: it holds many messages stamped after
        what the other partitions have reached."""
        return {p: list(reasons) for p, reasons in self._paused.items()}

    def held(self) -> dict[int, int]:
        """In the fetch thread: messages each partition holds until the others reach their timestamps."""
        if self._aligner is None:
            return {}
        return {partition: self._aligner.held(partition) for partition in self.assigned}

    def stale(self, partitions: Iterable[int], generation: int) -> set[int]:
        """Those of `partitions` that left this consumer since `generation`.

        What was fetched from them before is no longer this consumer's to publish or commit:
        their next owner (or this consumer, assigned them again) reads on from the last commit.
        """
        if generation == self.generation:
            return set()
        return {p for p in partitions if self._left_at.get(p, 0) > generation}

    def _run(self) -> None:
        next_lag = 0.0
        while not self._stopping.is_set():
            try:
                self._run_commands()
                if self._held is not None and self._channel.offer(self._held):
                    self._held = None
                self.backpressure = self._held is not None
                self._reconcile_pause()
                messages = self.consumer.consume(min(self.options.batch_size, 5_000), _POLL_S)
                self._group_metadata = self.consumer.consumer_group_metadata()
                self._accept(messages)
                if self._aligner is not None:
                    self._hand_over(self._aligner.release(excluded=self.admin_paused, paused=self._paused.keys()))
                if time.monotonic() >= next_lag:
                    self._update_lag()
                    next_lag = time.monotonic() + _LAG_EVERY_S
            except Exception:
                log.exception("Kafka fetch loop error; continuing")
                self._stopping.wait(1.0)
        self._held = None
        if self._aligner is not None:
            self._aligner.forget(list(self.assigned))
        with self._accepting_lock:
            self._accepting = False
        self._run_commands()

    def _accept(self, messages: list[Message]) -> None:
        good: list[Message] = []
        for message in messages:
            error = message.error()
            if error is None:
                good.append(message)
            elif error.code() == KafkaError._PARTITION_EOF:
                partition = message.partition()
                if self._aligner is not None and partition is not None:
                    self._aligner.reached_end(partition)
            else:
                self.last_error = error.str()
                log.warning("Kafka consume error: %s", error.str())
        if not good:
            return
        m.MESSAGES.labels("consumed").inc(len(good))
        fetched = Fetched.of(self.topic, good)
        if self._aligner is None:
            self._hand_over(fetched)
            return
        self._aligner.add(fetched)
        for partition, next_offset in fetched.next_offsets().items():
            # librdkafka reports a partition's end only with the next fetch answer (after up to
            # fetch.wait.max.ms); its high watermark, from this answer, says so now. (A
            # transactional producer's commit marker follows its last message: that end waits.)
            try:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, partition), cached=True)
            except KafkaException:
                continue  # not known yet: the EOF event or `align_wait_ms` says when it ends
            if 0 <= high <= next_offset:
                self._aligner.reached_end(partition)

    def _hand_over(self, fetched: Fetched) -> None:
        """To the pipeline, or to the chunk kept while the channel is full."""
        if not fetched:
            return
        if self._held is not None:
            self._held.fetched.extend(fetched)
        elif not self._channel.offer(Chunk(fetched, self.generation)):
            self._held = Chunk(fetched, self.generation)

    def _hand_back(self) -> None:
        """Unsubscribe and serve the revoke in a poll of this thread, before `Consumer.close()`.

        Served inside the close, the revoke callback's call back into librdkafka (handing the
        partitions back, or confluent-kafka's own fallback) can wait for ever while librdkafka
        tears the group down (confluentinc/librdkafka#4041), holding the GIL: the whole process
        stopped so in a CI run's Kafka test teardown. What the polls fetch is dropped; the
        partitions' next owner reads it from the last commit.
        """
        try:
            self.consumer.unsubscribe()
            deadline = time.monotonic() + _HAND_BACK_S
            while self.consumer.assignment() and time.monotonic() < deadline:
                self.consumer.consume(1_000, 0.05)
        except (KafkaException, RuntimeError) as exc:
            log.warning("Kafka: could not hand the partitions back before closing (%s)", exc)

    def _run_commands(self) -> None:
        while True:
            try:
                action, future = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(action())
            except Exception as exc:
                future.set_exception(exc)

    def seek(self, partition: int, offset: int) -> None:
        """Read `partition` from `offset` on (in this thread); what is held of it was read from elsewhere."""
        self.consumer.seek(TopicPartition(self.topic, partition, offset))
        if self._aligner is not None:
            self._aligner.expect([partition])

    def _reconcile_pause(self) -> None:
        assigned = set(self.assigned)
        reasons: dict[PauseReason, set[int]] = {
            "admin": self.admin_paused & assigned,
            "backpressure": assigned if self.backpressure else set(),
        }
        if self._aligner is not None and self.assigned:
            # Ahead of the others by this much: fetch no more of it until they catch up.
            reasons["alignment"] = (
                self._aligner.over(max(1_000, 2 * self.options.batch_size // len(assigned))) & assigned
            )
        wanted = set().union(*reasons.values())
        to_pause, to_resume = wanted - self._paused.keys(), (self._paused.keys() - wanted) & assigned
        if to_pause:
            self.consumer.pause([TopicPartition(self.topic, p) for p in sorted(to_pause)])
        if to_resume:
            self.consumer.resume([TopicPartition(self.topic, p) for p in sorted(to_resume)])
        self._paused = {p: [why for why, ps in reasons.items() if p in ps] for p in sorted(wanted)}
        m.PAUSED.set(len(wanted))
        m.HELD.set(0 if self._aligner is None else len(self._aligner))

    def _update_lag(self) -> None:
        committed = self._committed()
        lag: dict[int, int] = {}
        for partition in self.assigned:
            tp = TopicPartition(self.topic, partition)
            try:
                high = self._high_watermark(tp, fetching=partition not in self._paused)
            except KafkaException:
                continue
            if high < 0:
                continue
            start = committed.get(partition)
            if start is None:
                position = self.consumer.position([tp])[0].offset
                start = position if position >= 0 else high
            lag[partition] = max(0, high - start)
            m.LAG.labels(str(partition)).set(lag[partition])
        self.lag = lag

    def _high_watermark(self, tp: TopicPartition, *, fetching: bool) -> int:
        """The partition's end: as the last fetch answer gave it while fetching; asked of the broker
        while paused (nothing is fetched, so the cached end stays put however far the partition
        grows: its lag read 0 as the backlog built up) or before its first fetch answer."""
        if fetching:
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                return int(high)
        _, high = self.consumer.get_watermark_offsets(tp, timeout=_WATERMARK_TIMEOUT_S, cached=False)
        return int(high)

    def _assigned(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        """Add `partitions`: with cooperative rebalancing they are an increment, the rest stays ours.

        They start fetching (`_forget` resumed any that left paused); eager rebalancing revoked all before.
        """
        m.REBALANCES.labels("assign").inc()
        if self._cooperative:
            self.consumer.incremental_assign(partitions)
        else:
            self.consumer.assign(partitions)
        added = sorted(p.partition for p in partitions)
        self.assigned = sorted(set(self.assigned) | set(added))
        if self._aligner is not None:
            self._aligner.expect(added)
        self._on_assign(added)
        log.info("Kafka partitions assigned: %s (now %s)", added, self.assigned)

    def _revoked(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        """Store and commit what was handed over while the partitions are still ours."""
        m.REBALANCES.labels("revoke").inc()
        self._drop_held({p.partition for p in partitions})
        self.revoking = frozenset(p.partition for p in partitions)
        try:
            if not self._closing and not self._stopping.is_set() and partitions:
                barrier = Barrier()
                self._channel.send_control(barrier)
                deadline = time.monotonic() + self._revoke_timeout_s
                while not barrier.done.wait(0.02) and time.monotonic() < deadline:
                    self._run_commands()
                if not barrier.done.is_set():
                    log.warning("revoked partitions before their batches were committed; the next owner re-reads them")
            self._forget([p.partition for p in partitions])
        finally:
            self._unassign(partitions)
            self.revoking = frozenset()

    def _lost(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        m.REBALANCES.labels("lost").inc()
        self._drop_held({p.partition for p in partitions})
        try:
            self._forget([p.partition for p in partitions])
        finally:
            self._unassign(partitions)

    def _drop_held(self, partitions: set[int]) -> None:
        """Forget the kept chunk's messages of partitions leaving; under cooperative rebalancing the
        others stay this consumer's, and their position is already past them."""
        if self._held is not None:
            self._held.fetched = self._held.fetched.without(partitions)
            if not self._held.fetched:
                self._held = None

    def _unassign(self, partitions: list[TopicPartition]) -> None:
        """Each rebalance callback hands the assignment back itself.

        Otherwise confluent-kafka does it after the callback, first asking librdkafka for the
        rebalance protocol while it holds the GIL; during a consumer close that question can
        go unanswered for ever (confluentinc/librdkafka#4041), and the whole process stops (a
        CI run hung so in a test's teardown, `close_within`'s timeout never getting the GIL).
        Handing back can hang there too, so a closing consumer is revoked before it closes (`_hand_back`).
        """
        if self._cooperative:
            self.consumer.incremental_unassign(partitions)
        else:
            self.consumer.unassign()

    def _forget(self, partitions: list[int]) -> None:
        """Drop partitions leaving this consumer, paused ones resumed first.

        librdkafka keeps a partition paused across revoke and re-assign; one assigned again must
        start fetching, as `_paused` (which no longer holds it) says.
        """
        self.assigned = [p for p in self.assigned if p not in partitions]
        if self._aligner is not None:
            self._aligner.forget(partitions)
        if partitions:
            self.generation += 1
            self._left_at.update(dict.fromkeys(partitions, self.generation))
        paused = sorted(self._paused.keys() & set(partitions))
        if paused:
            with contextlib.suppress(KafkaException):
                self.consumer.resume([TopicPartition(self.topic, p) for p in paused])
        self._paused = {p: reasons for p, reasons in self._paused.items() if p not in partitions}
        for partition in partitions:
            self.lag.pop(partition, None)
            with contextlib.suppress(KeyError):
                m.LAG.remove(str(partition))

    def _on_error(self, error: KafkaError) -> None:
        self.last_error = error.str()
        log.warning("Kafka client error: %s", error.str())
