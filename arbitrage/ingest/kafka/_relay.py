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
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import polars as pl
from confluent_kafka import KafkaError, KafkaException, Producer

from arbitrage.ingest import IngestService
from arbitrage.ingest.kafka import _metrics as m
from arbitrage.ingest.kafka._options import KafkaOptions
from arbitrage.ingest.kafka._producing import (
    BROKER_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    FENCED,
    Refusals,
    Transactions,
    produce_keyed,
    produce_one,
    until_answered,
)
from arbitrage.ingest.kafka._records import Keyed, opportunities, risk_metrics
from arbitrage.ingest.kafka._relay_progress import DataDirMarks, RelayProgress, Runs, read_progress
from arbitrage.ingest.kafka._topics import ensure_topics
from arbitrage.stream import POSITION_COLUMN

log = logging.getLogger(__name__)

_MAX_ALSO = 10_000
_RUNS_PER_READ = 200
"""Runs of positions one read-back query names at most (each is a `BETWEEN` in its WHERE)."""
_MAX_FRAMES = 2_000
"""Batches kept in memory at most, whatever their rows: a one-row frame of 150 columns costs ≈ 25 KB."""
_LATE_S = 5.0
"""Rows waiting longer than this make `/health` say the relay is behind (and a commit hanging this long
is not waited for at a stop)."""


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
    arrived: float = field(default_factory=time.monotonic)

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
        data_dir: Path | None,
        max_buffered_rows: int = 100_000,
        page_rows: int = 20_000,
    ) -> None:
        """`data_dir`: the embedded warehouse's, whose rows the relay reads back after a restart; None on a
        shared ClickHouse server, where it cannot tell its own rows from other processes'."""
        self.ingest = ingest
        self.options = options
        self._highest = highest_position
        """The highest position this process knows was handed out (its own or, through Redis, any)."""
        self.max_buffered_rows = max_buffered_rows
        self.page_rows = page_rows
        self._waiting: list[_Waiting] = []
        self._reading: _Waiting | None = None
        """The entry a read-back is under way for: later batches do not join it."""
        self._start_mark = highest_position()
        self._through = self._start_mark
        self._also: Runs = []
        self._marks_here = DataDirMarks(data_dir) if data_dir else None
        """This data dir's id and the relay's own account of its progress here (None: no read-back)."""
        self.relay_id = options.relay_id
        """Its transactional id and progress key: the data dir's (one owner at a time) when there is one."""
        if self._marks_here is not None:
            self.relay_id = f"{options.group_id}-relay-{self._marks_here.warehouse}"
            self._marks_here.through(self._start_mark)  # recorded now at a first start, in case no broker answers
        self._committing_since: float | None = None
        self._connected = False
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        """Set while nothing waits."""
        self._drained.set()
        self._task: asyncio.Task[None] | None = None
        self._producer = RelayProducer(options, self.relay_id)
        self.error: str | None = "connecting"
        """Why the relay is not publishing now (None while it keeps up)."""
        self.failure: str | None = None
        """Why it stopped for good (another instance took its transactional id)."""
        ingest.on_stored(self._stored)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kafka-relay")

    async def stop(self, timeout_s: float) -> None:
        """Publish what waits (up to `timeout_s`, not at all while a commit hangs), then close; what is left is
        read back after the next start."""
        if self._task is None:
            return
        hanging = self._committing_since is not None and time.monotonic() - self._committing_since > _LATE_S
        if self.error is None and not hanging:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout_s)
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        self._task = None
        if self._waiting:
            later = "they are published after the next start" if self._marks_here else "they may lack derived records"
            log.warning("Kafka relay stopped with %d rows unpublished; %s", self._rows(), later)
        await asyncio.to_thread(self._producer.close)

    async def health(self) -> dict[str, Any]:
        late = self._waiting and time.monotonic() - min(w.arrived for w in self._waiting) > _LATE_S
        error = self.failure or self.error
        if error is None and late:
            error = f"rows have waited over {_LATE_S:g} s for the broker to take their derived records"
        status = "unhealthy" if self.failure else "degraded" if error else "healthy"
        report: dict[str, Any] = {
            "status": status,
            "waiting_rows": self._rows(),
            "reading_back": any(w.frame is None for w in self._waiting),
            "published_through": self._through if self._connected else None,
        }
        if error:
            report["error"] = error
        return report

    async def _stored(self, frame: pl.DataFrame) -> None:
        if POSITION_COLUMN not in frame.columns or self.failure:
            return
        if "kafka_partition" in frame.columns:
            frame = frame.filter(pl.col("kafka_partition").is_null())
        if frame.is_empty():
            return
        runs = _runs(frame.get_column(POSITION_COLUMN))
        in_memory = [w.rows for w in self._waiting if w.frame is not None]
        if sum(in_memory) + len(frame) <= self.max_buffered_rows and len(in_memory) < _MAX_FRAMES:
            bisect.insort(self._waiting, _Waiting(runs, frame, len(frame)), key=lambda w: w.first)
        else:
            self._wait_as_positions(runs, len(frame))
        m.RELAY_WAITING.set(self._rows())
        self._drained.clear()
        self._wake.set()

    def _wait_as_positions(self, runs: Runs, rows: int) -> None:
        """Past the memory bound: the batch's positions join the last such batch's when they follow it (a
        long broker outage keeps a few long lists of runs, not one entry per batch)."""
        last = self._waiting[-1] if self._waiting else None
        joins = (
            last is not None
            and last is not self._reading
            and last.frame is None
            and not last.skip
            and len(last.runs) < _RUNS_PER_READ
            and runs[0][0] > last.runs[-1][1]
        )
        if not joins or last is None:
            bisect.insort(self._waiting, _Waiting(runs, None, rows), key=lambda w: w.first)
            return
        if runs[0][0] == last.runs[-1][1] + 1:
            last.runs[-1] = (last.runs[-1][0], runs[0][1])
            runs = runs[1:]
        last.runs.extend(runs)
        last.rows += rows

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
        if o.create_topics:  # before producing: a topic the producer auto-creates gets the broker's partition count
            await self._until_answered("list or create topics", lambda: ensure_topics(o))
        await self._until_answered("initialise transactions", self._producer.start)
        progress: RelayProgress | None = await self._until_answered(
            "read its progress", lambda: read_progress(o, self.relay_id)
        )
        if not self._resume_from(progress):  # so that what `arbitrage ingest` stores before the next start is read back
            await self._commit(Keyed(), Keyed(), self._progress(self._through, []))
            self._account(self._through)
        self._connected = True
        self.error = None

    async def _until_answered(self, what: str, call: Callable[[], Any]) -> Any:
        def failed(error: KafkaError) -> None:
            self.error = f"could not {what}: {error}"
            log.warning("Kafka relay: could not %s (%s); retrying", what, error)

        return await until_answered(call, backoff_max_s=self.options.retry_backoff_max_s, failed=failed)

    def _resume_from(self, progress: RelayProgress | None) -> bool:
        """Queue what the previous runs on this data dir stored and did not publish; False when `progress`
        is not this data dir's (or there is none), and a record of it is to be written."""
        if self._marks_here is None:
            if progress is not None and progress.through < self._start_mark:
                log.warning(
                    "Kafka relay: positions %d-%d were stored before this start and may lack derived records "
                    "(not read back from a shared ClickHouse warehouse: other processes' rows lie there too)",
                    progress.through + 1,
                    self._start_mark,
                )
            return progress is not None
        own_account = self._marks_here.through(self._start_mark)
        ours = progress is not None and progress.warehouse == self._marks_here.warehouse
        if progress is not None and not ours:
            log.warning(
                "Kafka relay: the progress under id %s is another data dir's (a copied one?); "
                "this one's rows are published from position %d on",
                self.relay_id,
                own_account + 1,
            )
        through, also = (progress.through, progress.also) if ours and progress else (own_account, [])
        if through < self._start_mark:
            self._through = through
            skip = [run for run in also if run[1] > through]
            missed = (through + 1, self._start_mark)
            self._waiting.insert(0, _Waiting([missed], None, 0, skip=skip))
            self._drained.clear()
            self._wake.set()
            log.info(
                "Kafka relay: publishing the derived records of positions %d-%d, stored before this start", *missed
            )
        return ours

    def _progress(self, through: int, also: Runs) -> bytes:
        warehouse = self._marks_here.warehouse if self._marks_here else ""
        return msgspec.json.encode(RelayProgress(through, also, warehouse))

    def _account(self, through: int) -> None:
        """Keep the data dir's own account up with a committed progress record."""
        if self._marks_here is not None:
            self._marks_here.record(through)

    async def _publish_next(self) -> None:
        """One transaction: the rows waiting in memory at the front (up to `page_rows`), or a page read back."""
        front = self._waiting[0]
        partly: _Waiting | None = None
        if front.frame is None:
            self._reading = front
            try:
                frame, read_to, exhausted = await self._read_back(front)
            finally:
                self._reading = None
            taken, partly = ([front], None) if exhausted else ([], front)
            published = _runs(frame.get_column(POSITION_COLUMN)) if len(frame) else []
        else:
            taken = self._front_in_memory()
            frame = pl.concat([w.frame for w in taken if w.frame is not None], how="diagonal_relaxed")
            published, read_to = [run for w in taken for run in w.runs], -1
        omit = self.options.opportunity_omit
        offers, risk = await asyncio.to_thread(lambda: (opportunities(frame, omit), risk_metrics(frame)))
        through, also = self._marks(taken, partly, read_to, published)
        await self._commit(offers, risk, self._progress(through, also))
        for waiting in taken:
            self._waiting.remove(waiting)
        if partly is not None:
            partly.after = read_to
            partly.rows = max(0, partly.rows - len(frame))
        if through != self._through:
            self._account(through)
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
        """The progress once this transaction commits: `through` stays below every position still on its way,
        and `also` names what is published above it (this run's, and what a predecessor published that a
        read-back still skips)."""
        rest = [w for w in self._waiting if w not in taken]
        firsts = [read_to + 1 if w is partly else w.first for w in rest]
        lowest_unpublished = self.ingest.unpublished.lowest()
        if lowest_unpublished is not None:
            firsts.append(lowest_unpublished)
        through = max(self._through, min([self._highest(), *(first - 1 for first in firsts)]))
        skipped = [run for w in rest for run in w.skip]
        also = sorted((max(a, through + 1), b) for a, b in {*self._also, *published, *skipped} if b > through)
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
        runs = list(waiting.runs)
        spans = " OR ".join(f"{POSITION_COLUMN} BETWEEN {int(a)} AND {int(b)}" for a, b in runs)
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
        exhausted = len(frame) < self.page_rows
        read_to = runs[-1][1] if exhausted else int(frame.get_column(POSITION_COLUMN)[-1])
        if waiting.skip and len(frame):
            position = pl.col(POSITION_COLUMN)
            frame = frame.filter(~pl.any_horizontal([position.is_between(a, b) for a, b in waiting.skip]))
        return frame, read_to, exhausted

    async def _commit(self, offers: Keyed, risk: Keyed, progress: bytes) -> None:
        """Produce the records and the progress record, retried with backoff until the broker takes them."""
        delay = 0.2
        while True:
            self._committing_since = time.monotonic()
            try:
                await _in_daemon_thread(lambda: self._producer.publish(offers, risk, progress))
                self.error = None
                return
            except KafkaException as exc:
                error = exc.args[0]
                if isinstance(error, KafkaError) and (error.fatal() or error.code() in FENCED):
                    raise _Fenced(f"the producer cannot publish any more: {error}") from exc
                self.error = f"could not publish derived records: {error}"
                log.warning("Kafka relay: %s; retrying", self.error)
            finally:
                self._committing_since = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.options.retry_backoff_max_s)


class RelayProducer:
    """The relay's producer: one transaction per call (or, without transactions, one flush that fails on any
    refused record). Blocking; called from a worker thread, one call at a time."""

    def __init__(self, options: KafkaOptions, relay_id: str) -> None:
        self.options = options
        self.relay_id = relay_id
        self._refusals = Refusals()
        config: dict[str, Any] = {"transaction.timeout.ms": 60_000, **options.producer_config()}
        self._transactions: Transactions | None = None
        if options.transactional:
            self._transactions = Transactions(config | {"transactional.id": relay_id})
            self._producer = self._transactions.producer
        else:
            self._producer = Producer(config | self._refusals.config())

    def start(self) -> None:
        if self._transactions is not None:
            self._producer.init_transactions(CONNECT_TIMEOUT_S)

    def publish(self, offers: Keyed, risk: Keyed, progress: bytes) -> None:
        transactions = self._transactions
        if transactions is None:
            self._refusals.clear()
            self._produce_all(offers, risk, progress)
            if self._producer.flush(BROKER_TIMEOUT_S):
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "derived records not delivered in time"))
            if refused := self._refusals.summary():
                raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, f"the broker refused {refused}"))
            return
        try:
            transactions.begin()
            self._producer = transactions.producer
            self._produce_all(offers, risk, progress)
            transactions.commit()
        except KafkaException:
            transactions.abort()
            raise

    def _produce_all(self, offers: Keyed, risk: Keyed, progress: bytes) -> None:
        o = self.options
        produce_keyed(self._producer, o.topic_opportunities, offers)
        produce_keyed(self._producer, o.topic_risk, risk)
        produce_one(self._producer, o.topic_relay_progress, self.relay_id.encode(), progress, partition=0)

    def close(self) -> None:
        with contextlib.suppress(KafkaException):  # a fenced producer refuses even this; it has nothing to deliver
            self._producer.flush(1)


_T = TypeVar("_T")


async def _in_daemon_thread(call: Callable[[], _T]) -> _T:
    """`call()` in a thread of its own that does not hold the process's exit: a commit against a stalled
    broker blocks for up to three times `BROKER_TIMEOUT_S`, longer than a stop may take (`asyncio.to_thread`'s
    workers are joined at exit)."""
    done: concurrent.futures.Future[_T] = concurrent.futures.Future()

    def run() -> None:
        try:
            done.set_result(call())
        except BaseException as exc:  # handed to the awaiting task
            done.set_exception(exc)

    threading.Thread(target=run, name="kafka-relay-publish", daemon=True).start()
    return await asyncio.wrap_future(done)


class _Fenced(Exception):
    """Another instance took this relay's transactional id."""


def _runs(positions: pl.Series) -> Runs:
    """Sorted positions as runs of consecutive values (a batch's are usually one run)."""
    ordered = positions.sort()
    starts = ordered.diff().fill_null(2) != 1
    frame = pl.DataFrame({"p": ordered, "run": starts.cum_sum()})
    grouped = frame.group_by("run", maintain_order=True).agg(
        pl.col("p").first().alias("a"), pl.col("p").last().alias("b")
    )
    return [(int(a), int(b)) for a, b in zip(grouped["a"], grouped["b"], strict=True)]
