"""The relay: derived records of transactions stored from the other sources (HTTP, files, replays, the demo).

The consumer produces the derived records of what it reads in the transaction that commits its
offsets. Rows stored another way come here after their insert (an `IngestService.on_stored`
listener); the relay produces their opportunities and risk metrics in a Kafka transaction of its
own, together with a progress record (`topic_relay_progress`, keyed by its transactional id):
every stream position up to `through`, and those in `also`, are published.

After a crash the next start (same transactional id) reads the record back and publishes, from
the warehouse, the rows stored after it, each once. Only with the embedded warehouse: on a shared
ClickHouse server other processes' rows lie in the same positions, and nothing says whose they
are (the log names the positions that may lack derived records).

While the broker is away stored batches wait in memory, up to `max_buffered_rows`; past that only
their positions are kept and their rows are read back from the warehouse when it returns.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import polars as pl
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from arbitrage.ingest import IngestService
from arbitrage.ingest.kafka import _metrics as m
from arbitrage.ingest.kafka._commit import produce_keyed
from arbitrage.ingest.kafka._options import KafkaOptions
from arbitrage.ingest.kafka._records import Keyed, opportunities, risk_metrics
from arbitrage.ingest.kafka._topics import ensure_topics
from arbitrage.stream import POSITION_COLUMN

log = logging.getLogger(__name__)

_TIMEOUT_S = 30.0
_CALL_TIMEOUT_S = 3.0
"""One attempt to reach the broker at start-up (retried): a stop cannot interrupt the worker thread."""
_PROGRESS_WINDOW = 1_000
"""Offsets of the progress topic read back per look for this relay's latest record (then 4× more)."""
_MAX_ALSO = 10_000
_RUNS_PER_READ = 200
"""Runs of positions one read-back query names at most (each is a `BETWEEN` in its WHERE)."""

Runs = list[tuple[int, int]]
"""Positions as runs of consecutive values, first and last."""


class RelayProgress(msgspec.Struct, frozen=True):
    """What a relay published: every position up to `through`, and the runs in `also` above it."""

    through: int
    also: Runs = msgspec.field(default_factory=list)


@dataclass(eq=False)
class _Waiting:
    """Stored rows whose derived records are not produced yet: the rows, or where to read them back."""

    runs: Runs
    frame: pl.DataFrame | None
    rows: int
    after: int = -1
    """Read back up to this position (rows without a frame are read a page at a time)."""
    skip: Runs = field(default_factory=list)
    """Positions inside `runs` already published (a predecessor's `also`)."""

    @property
    def first(self) -> int:
        return max(self.runs[0][0], self.after + 1)


class DerivedRelay:
    """Publishes the derived records of every stored batch that did not come from Kafka."""

    def __init__(
        self,
        ingest: IngestService,
        options: KafkaOptions,
        *,
        highest_position: Callable[[], int],
        recover: bool,
        max_buffered_rows: int = 100_000,
        page_rows: int = 20_000,
    ) -> None:
        self.ingest = ingest
        self.options = options
        self._highest = highest_position
        """The highest position this process knows was handed out (its own or, through Redis, any)."""
        self._recover = recover
        self.max_buffered_rows = max_buffered_rows
        self.page_rows = page_rows
        self._waiting: list[_Waiting] = []
        self._buffered = 0
        self._through = self._start_mark = highest_position()
        self._also: Runs = []
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        """Set while nothing waits."""
        self._drained.set()
        self._task: asyncio.Task[None] | None = None
        self._producer: Producer | None = None
        self.error: str | None = "connecting"
        """Why the relay is not publishing now (None while it keeps up)."""
        self.failure: str | None = None
        """Why it stopped for good (another instance took its transactional id)."""
        ingest.on_stored(self._stored)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kafka-relay")

    async def stop(self, timeout_s: float) -> None:
        """Publish what waits (up to `timeout_s`; the rest is read back after the next start), then close."""
        if self._task is None:
            return
        if self.error is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout_s)
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        self._task = None
        if self._waiting:
            log.warning(
                "Kafka relay stopped with %d rows unpublished; they are published after the next start", self._rows()
            )
        if self._producer is not None:
            with contextlib.suppress(KafkaException):
                await asyncio.to_thread(self._producer.flush, 5)

    async def health(self) -> dict[str, Any]:
        status = "unhealthy" if self.failure else "degraded" if self.error else "healthy"
        report: dict[str, Any] = {
            "status": status,
            "waiting_rows": self._rows(),
            "reading_back": any(w.frame is None for w in self._waiting),
            "published_through": self._through,
        }
        if self.failure or self.error:
            report["error"] = self.failure or self.error
        return report

    async def _stored(self, frame: pl.DataFrame) -> None:
        if POSITION_COLUMN not in frame.columns or self.failure:
            return
        if "kafka_partition" in frame.columns:
            frame = frame.filter(pl.col("kafka_partition").is_null())
        if frame.is_empty():
            return
        runs = _runs(frame.get_column(POSITION_COLUMN))
        if self._buffered + len(frame) <= self.max_buffered_rows:
            bisect.insort(self._waiting, _Waiting(runs, frame, len(frame)), key=lambda w: w.first)
            self._buffered += len(frame)
        else:
            self._wait_as_positions(runs, len(frame))
        m.RELAY_WAITING.set(self._rows())
        self._drained.clear()
        self._wake.set()

    def _wait_as_positions(self, runs: Runs, rows: int) -> None:
        """Past the memory bound: the batch's positions join the last such batch's when they follow it (a
        long broker outage keeps a few long lists of runs, not one entry per batch)."""
        last = self._waiting[-1] if self._waiting else None
        if last is None or last.frame is not None or last.skip or len(last.runs) >= _RUNS_PER_READ:
            bisect.insort(self._waiting, _Waiting(runs, None, rows), key=lambda w: w.first)
        elif runs[0][0] > last.runs[-1][1]:
            if runs[0][0] == last.runs[-1][1] + 1:
                last.runs[-1] = (last.runs[-1][0], runs[0][1])
                runs = runs[1:]
            last.runs.extend(runs)
            last.rows += rows
        else:
            bisect.insort(self._waiting, _Waiting(runs, None, rows), key=lambda w: w.first)

    def _rows(self) -> int:
        return sum(w.rows for w in self._waiting)

    async def _run(self) -> None:
        try:
            await self._connect()
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._waiting:
                    await self._publish_next()
                self._drained.set()
        except _Fenced as exc:
            self.failure = self.error = str(exc)
            log.error("Kafka relay stopped: %s", exc)

    async def _connect(self) -> None:
        o = self.options
        config = {"transaction.timeout.ms": 60_000, **o.producer_config()}
        if o.transactional:
            config["transactional.id"] = o.relay_id
        self._producer = Producer(config)
        if o.create_topics:  # before producing: a topic the producer auto-creates gets the broker's partition count
            await self._until_answered("list or create topics", lambda: ensure_topics(o))
        if o.transactional:
            await self._until_answered("initialise transactions", lambda: self._init_transactions())
        progress = await self._until_answered("read its progress", lambda: read_progress(o))
        self._resume_from(progress)
        if progress is None:  # so that what `arbitrage ingest` stores before the next start is read back then
            await self._commit(Keyed(), Keyed(), msgspec.json.encode(RelayProgress(self._through)))
        self.error = None

    def _init_transactions(self) -> None:
        assert self._producer is not None
        self._producer.init_transactions(_CALL_TIMEOUT_S)

    async def _until_answered(self, what: str, call: Callable[[], Any]) -> Any:
        delay = 0.5
        while True:
            try:
                return await asyncio.to_thread(call)
            except KafkaException as exc:
                self.error = f"could not {what}: {exc.args[0]}"
                log.warning("Kafka relay: could not %s (%s); retrying", what, exc.args[0])
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.options.retry_backoff_max_s)

    def _resume_from(self, progress: RelayProgress | None) -> None:
        """What the previous run of this relay left unpublished is published first (embedded warehouse only)."""
        if progress is None or progress.through >= self._start_mark:
            return  # a first run: what was stored before it is not its to publish
        missed = (progress.through + 1, self._start_mark)
        if not self._recover:
            log.warning(
                "Kafka relay: positions %d-%d were stored before this start and may lack derived records "
                "(not read back from a shared ClickHouse warehouse: other processes' rows lie there too)",
                *missed,
            )
            return
        self._through = progress.through
        skip = [run for run in progress.also if run[0] > progress.through]
        self._waiting.insert(0, _Waiting([missed], None, 0, skip=skip))
        self._drained.clear()
        log.info("Kafka relay: publishing the derived records of positions %d-%d, stored before this start", *missed)
        self._wake.set()

    async def _publish_next(self) -> None:
        """One transaction: the rows waiting in memory at the front (up to `page_rows`), or a page read back."""
        front = self._waiting[0]
        partly: _Waiting | None = None
        if front.frame is None:
            frame, read_to, exhausted = await self._read_back(front)
            taken, partly = ([front], None) if exhausted else ([], front)
            published = _runs(frame.get_column(POSITION_COLUMN)) if len(frame) else []
        else:
            taken = self._front_in_memory()
            frame = pl.concat([w.frame for w in taken if w.frame is not None], how="diagonal_relaxed")
            published, read_to = [run for w in taken for run in w.runs], -1
        omit = self.options.opportunity_omit
        offers, risk = await asyncio.to_thread(lambda: (opportunities(frame, omit), risk_metrics(frame)))
        through, also = self._marks(taken, partly, read_to, published)
        await self._commit(offers, risk, msgspec.json.encode(RelayProgress(through, also)))
        for waiting in taken:
            self._waiting.remove(waiting)
            self._buffered -= len(waiting.frame) if waiting.frame is not None else 0
        if partly is not None:
            partly.after = read_to
            partly.rows = max(0, partly.rows - len(frame))
        self._through, self._also = through, also
        m.RELAY_PRODUCED.labels("opportunity").inc(len(offers))
        m.RELAY_PRODUCED.labels("risk").inc(len(risk))
        m.RELAY_WAITING.set(self._rows())

    def _front_in_memory(self) -> list[_Waiting]:
        """The batches held in memory at the front, up to `page_rows` rows (at least one)."""
        taken: list[_Waiting] = []
        rows = 0
        for waiting in self._waiting:
            if waiting.frame is None or (taken and rows + waiting.rows > self.page_rows):
                break
            taken.append(waiting)
            rows += waiting.rows
        return taken

    def _marks(self, taken: list[_Waiting], partly: _Waiting | None, read_to: int, published: Runs) -> tuple[int, Runs]:
        """The progress once this transaction commits: `through` stays below every position still on its way."""
        firsts = [w.first for w in self._waiting if w not in taken and w is not partly]
        if partly is not None:
            firsts.append(read_to + 1)
        lowest_unpublished = self.ingest.unpublished.lowest()
        if lowest_unpublished is not None:
            firsts.append(lowest_unpublished)
        through = max(self._through, min([self._highest(), *(first - 1 for first in firsts)]))
        also = [(max(a, through + 1), b) for a, b in [*self._also, *published] if b > through]
        if len(also) > _MAX_ALSO:
            log.error(
                "Kafka relay: %d published runs above position %d; a restart may publish some again", len(also), through
            )
            also = also[-_MAX_ALSO:]
        return through, also

    async def _read_back(self, waiting: _Waiting) -> tuple[pl.DataFrame, int, bool]:
        """A page of the waiting rows from the warehouse after `waiting.after`, in position order: the rows,
        the last position read, and whether that was the last page."""
        warehouse = self.ingest.warehouse
        spans = " OR ".join(f"{POSITION_COLUMN} BETWEEN {int(a)} AND {int(b)}" for a, b in waiting.runs)
        sql = (
            f"SELECT * FROM {warehouse.database}.transactions WHERE ({spans}) AND {POSITION_COLUMN} > {int(waiting.after)} "
            f"AND kafka_partition IS NULL ORDER BY {POSITION_COLUMN} LIMIT {int(self.page_rows)}"
        )
        delay = 0.5
        while True:
            try:
                table = await warehouse.query_arrow(sql)
                break
            except Exception as exc:  # a failing warehouse is waited for, as the inserts wait for it
                self.error = f"could not read stored rows back: {exc}"[:300]
                log.warning("Kafka relay: %s; retrying", self.error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.options.retry_backoff_max_s)
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        if frame.is_empty():
            return frame, waiting.runs[-1][1], True
        read_to = int(frame.get_column(POSITION_COLUMN)[-1])
        exhausted = len(frame) < self.page_rows
        if waiting.skip:
            position = pl.col(POSITION_COLUMN)
            frame = frame.filter(~pl.any_horizontal([position.is_between(a, b) for a, b in waiting.skip]))
        return frame, (waiting.runs[-1][1] if exhausted else read_to), exhausted

    async def _commit(self, offers: Keyed, risk: Keyed, progress: bytes) -> None:
        """Produce the records and the progress record, retried with backoff until the broker takes them."""
        delay = 0.2
        while True:
            try:
                await asyncio.to_thread(self._produce, offers, risk, progress)
                self.error = None
                return
            except KafkaException as exc:
                error = exc.args[0]
                if isinstance(error, KafkaError) and (error.fatal() or error.code() in _FENCED_CODES):
                    raise _Fenced(f"the producer cannot publish any more: {error}") from exc
                self.error = f"could not publish derived records: {error}"
                log.warning("Kafka relay: %s; retrying", self.error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.options.retry_backoff_max_s)

    def _produce(self, offers: Keyed, risk: Keyed, progress: bytes) -> None:
        producer, o = self._producer, self.options
        assert producer is not None
        if o.transactional:
            producer.begin_transaction()
        try:
            produce_keyed(producer, o.topic_opportunities, offers)
            produce_keyed(producer, o.topic_risk, risk)
            producer.produce(o.topic_relay_progress, progress, o.relay_id.encode(), partition=0)
            if o.transactional:
                producer.commit_transaction(_TIMEOUT_S)
            elif producer.flush(_TIMEOUT_S):
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "derived records not delivered in time"))
        except KafkaException:
            if o.transactional:
                with contextlib.suppress(KafkaException):
                    producer.abort_transaction(_TIMEOUT_S)
            raise


class _Fenced(Exception):
    """Another instance took this relay's transactional id."""


_FENCED_CODES = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})


def _runs(positions: pl.Series) -> Runs:
    """Sorted positions as runs of consecutive values (a batch's are usually one run)."""
    ordered = positions.sort()
    starts = ordered.diff().fill_null(2) != 1
    frame = pl.DataFrame({"p": ordered, "run": starts.cum_sum()})
    grouped = frame.group_by("run", maintain_order=True).agg(
        pl.col("p").first().alias("a"), pl.col("p").last().alias("b")
    )
    return [(int(a), int(b)) for a, b in zip(grouped["a"], grouped["b"], strict=True)]


def read_progress(options: KafkaOptions) -> RelayProgress | None:
    """The latest committed progress record of this relay, None if it never published."""
    consumer = Consumer(
        {
            **options.client_config(),
            "group.id": f"{options.relay_id}-progress",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    try:
        partition = TopicPartition(options.topic_relay_progress, 0)
        try:
            low, high = consumer.get_watermark_offsets(partition, timeout=_CALL_TIMEOUT_S, cached=False)
        except KafkaException as exc:
            if exc.args[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION):
                return None
            raise
        key, end, window = options.relay_id.encode(), high, _PROGRESS_WINDOW
        while end > low:
            start = max(low, end - window)
            latest = _latest_value(consumer, TopicPartition(options.topic_relay_progress, 0, start), key)
            if latest is not None:
                return msgspec.json.decode(latest, type=RelayProgress)
            end, window = start, window * 4
        return None
    finally:
        consumer.close()


def _latest_value(consumer: Consumer, start: TopicPartition, key: bytes) -> bytes | None:
    """The value of the last record with `key` from `start` to the partition's end."""
    consumer.assign([start])
    deadline = time.monotonic() + _TIMEOUT_S
    latest: bytes | None = None
    while time.monotonic() < deadline:
        for message in consumer.consume(500, 0.5):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    return latest
                raise KafkaException(error)
            if message.key() == key:
                latest = message.value()
    raise KafkaException(
        KafkaError(KafkaError._TIMED_OUT, "the relay's progress topic was not read to its end in time")
    )
