"""The embedded warehouse: ClickHouse in-process through chdb, data under `data_dir`."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import chdb
import chdb.state.sqlitelike
import pyarrow as pa
import pyarrow.compute as pc
from chdb import session as chdb_session

from arbitrage.errors import ConfigError, WarehouseLocked, WarehouseUnavailable
from arbitrage.storage._migrations import Migration, apply_migrations
from arbitrage.storage._protocol import SignatureWindow
from arbitrage.storage._sql import INSERT_SETTINGS, inline_params
from arbitrage.storage._threaded import ThreadedReader
from arbitrage.telemetry import METRICS

log = logging.getLogger(__name__)

_LOCK_NAME = ".owner.lock"


class _Stream:
    """A streamed result and the connection it owns."""

    def __init__(self, connection: chdb.state.sqlitelike.Connection, reader: pa.RecordBatchReader) -> None:
        self.connection = connection
        self.reader = reader

    def close(self) -> None:
        self.reader.close()
        self.connection.close()


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Take the data dir's owner lock (held while the file stays open), or raise WarehouseLocked naming the owner."""
    lock_file = (data_dir / _LOCK_NAME).open("a+")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.seek(0)
        owner = lock_file.read().strip() or "another process"
        lock_file.close()
        raise WarehouseLocked(
            f"the data directory {data_dir} is in use by {owner}; "
            "the embedded warehouse allows one process (stop it, or use another storage.data_dir)"
        ) from None
    return lock_file


def check_data_dir_free(data_dir: Path) -> None:
    """Raise WarehouseLocked when another process owns `data_dir`, which is created when missing; take no lock
    (for checks before a fork)."""
    make_data_dir(data_dir)
    if (data_dir / _LOCK_NAME).exists():
        lock_data_dir(data_dir).close()


def make_data_dir(data_dir: Path) -> None:
    """Create `data_dir` when missing, or raise ConfigError naming `storage.data_dir` when it cannot be one."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"storage.data_dir: {data_dir} cannot be the data directory ({exc.strerror})") from None
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"storage.data_dir: {data_dir} is not writable by this user")


CLOSE_WAIT_SECONDS = 30.0
"""How long `close` waits for queries still running before it lets go of the data dir anyway."""


class EmbeddedWarehouse:
    """chdb on a directory this process owns (an exclusive file lock guards it).

    Every chdb call runs in a worker thread (chdb releases the GIL), so the event loop only
    awaits. Queries take a connection from a pool of `max_concurrent_queries`, one query per
    connection at a time (chdb keeps per-query state on the connection); each streamed
    result gets a connection of its own, since a connection streams one result at a time.
    """

    backend = "embedded"

    def __init__(
        self,
        data_dir: str | Path,
        *,
        database: str = "arbitrage",
        max_concurrent_queries: int = 4,
        migrations: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self._chdb_path = self.data_dir / "chdb"
        self._migrations = migrations
        self.database = database
        self._pool_size = max_concurrent_queries
        self.dedup_scan_rows = 50_000
        """Ingest dedup reads every signature of a window holding fewer stored rows than this."""
        self._pool: queue.Queue[chdb.state.sqlitelike.Connection] = queue.Queue()
        # chdb finds a `Python(name)` table by looking the name up in Python frames, which is
        # not safe across threads: queries that read a Python table run one at a time.
        self._python_tables = threading.Lock()
        self._session: chdb_session.Session | None = None
        self._lock_file: IO[str] | None = None
        self._failed_reason: str | None = None
        self._connections = 0
        """Pooled connections open, in the pool or out in a query."""
        self._closing = False

    async def start(self) -> None:
        """Open and migrate; on failure release everything (chdb allows one data path per process)."""
        try:
            await asyncio.to_thread(self._open)
            await self._migrate()
        except BaseException:
            await self.close()
            raise

    def _close_connections(self) -> None:
        deadline = time.monotonic() + CLOSE_WAIT_SECONDS
        while self._connections:
            try:
                connection = self._pool.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                log.warning("closing the warehouse with %d queries still running", self._connections)
                return
            connection.close()
            self._connections -= 1

    async def _migrate(self) -> None:
        await apply_migrations(
            self.execute,
            self._applied_versions,
            self._record_migration,
            database=self.database,
            directory=self._migrations,
            bundled_engine=True,
        )

    async def close(self) -> None:
        """Refuse new queries, wait for those running, then release chdb and the data dir.

        A connection still out in a query would keep chdb open on this path after the lock is
        released (another process could then open the data dir), and keep this process from
        opening any other path.
        """
        self._closing = True
        await asyncio.to_thread(self._close_connections)
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def fail(self, reason: str | None) -> None:
        """Make every call raise WarehouseUnavailable (None restores); for drills and tests."""
        self._failed_reason = reason

    async def ping(self) -> float:
        started = time.perf_counter()
        await self.query_arrow("SELECT 1")
        return (time.perf_counter() - started) * 1000

    async def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        await asyncio.to_thread(self._run, sql, params, "Null")

    async def query_arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        result = await asyncio.to_thread(self._run, sql, params, "ArrowTable")
        assert isinstance(result, pa.Table)
        return result

    async def stream_arrow(
        self, sql: str, params: Mapping[str, Any] | None = None, batch_rows: int = 65_536
    ) -> AsyncIterator[pa.RecordBatch]:
        stream = await asyncio.to_thread(self._open_stream, sql, params, batch_rows)
        reader: ThreadedReader[pa.RecordBatch] = ThreadedReader(stream.reader, stream.close)
        try:
            while (batch := await reader.next()) is not None:
                yield batch
        finally:
            await reader.close()

    def mutation_target(self, table: str) -> str:
        return f"{self.database}.{table}"

    async def insert_arrow(self, table: str, data: pa.Table) -> None:
        await asyncio.to_thread(self._insert, table, data)

    async def known_signatures(self, signatures: pa.Array, window: SignatureWindow) -> set[str]:
        return await asyncio.to_thread(self._known_signatures, signatures, window)

    def _open(self) -> None:
        self._closing = False
        make_data_dir(self.data_dir)
        lock_file = lock_data_dir(self.data_dir)
        lock_file.truncate(0)
        lock_file.write(f"pid {os.getpid()}\n")
        lock_file.flush()
        self._lock_file = lock_file
        self._session = chdb_session.Session(str(self._chdb_path))
        for _ in range(self._pool_size):
            self._pool.put(chdb.connect(str(self._chdb_path)))
            self._connections += 1
        self._session.query(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        self._session.query(
            f"CREATE TABLE IF NOT EXISTS {self.database}.schema_migrations "
            "(version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
            "ENGINE = MergeTree ORDER BY version"
        )

    def _check_open(self) -> None:
        if self._failed_reason is not None:
            raise WarehouseUnavailable(self._failed_reason)
        if self._session is None or self._closing:
            raise WarehouseUnavailable("the embedded warehouse is not open")

    @contextlib.contextmanager
    def _connection(self, operation: str) -> Iterator[chdb.state.sqlitelike.Connection]:
        """A pooled connection for one query, timed by `operation`; chdb errors become WarehouseUnavailable."""
        self._check_open()
        connection = self._pool.get()
        started = time.perf_counter()
        try:
            yield connection
        except WarehouseUnavailable:
            METRICS.warehouse_errors.labels(operation).inc()
            raise
        except Exception as exc:
            METRICS.warehouse_errors.labels(operation).inc()
            raise WarehouseUnavailable(str(exc)) from exc
        finally:
            self._pool.put(connection)
            METRICS.query_seconds.labels(operation).observe(time.perf_counter() - started)

    def _run(self, sql: str, params: Mapping[str, Any] | None, fmt: str) -> Any:
        with self._connection("query" if fmt == "ArrowTable" else "execute") as connection:
            return connection.query(inline_params(sql, params), fmt)

    def _open_stream(self, sql: str, params: Mapping[str, Any] | None, batch_rows: int) -> _Stream:
        self._check_open()
        connection = chdb.connect(str(self._chdb_path))
        try:
            # A streamed result is read by one thread in small blocks: each extra thread read
            # ahead blocks of its own (with two, a 1M-row export held ~450 MB more than a
            # 100k-row one), and a FINAL read in key order holds a block of every part it
            # merges (small blocks: 1.2 GB instead of 1.7 GB over 20 parts). Just as fast here.
            for setting in ("max_threads = 1", "max_block_size = 4096", "preferred_block_size_bytes = 262144"):
                connection.query(f"SET {setting}")
            result = connection.send_query(inline_params(sql, params), "Arrow")
            return _Stream(connection, result.record_batch(rows_per_batch=batch_rows))
        except Exception as exc:
            connection.close()
            raise WarehouseUnavailable(str(exc)) from exc

    def _known_signatures(self, signatures: pa.Array, signature_window: SignatureWindow) -> set[str]:
        # A live batch spans seconds of block time, which hold few stored rows: reading all
        # their signatures needs no Python table, so it never waits for the insert in flight
        # (which holds the Python-table lock). Only a window denser than that is probed.
        limit = max(self.dedup_scan_rows, 4 * len(signatures))
        table = f"{self.database}.transactions"
        window, params = signature_window.stored_signatures(table)
        with self._connection("dedup") as connection:
            stored = connection.query(inline_params(f"SELECT * FROM ({window}) LIMIT {limit}", params), "ArrowTable")
        if stored.num_rows < limit:
            in_window = stored.column("signature").combine_chunks().cast(signatures.type)
            return set(signatures.filter(pc.is_in(signatures, value_set=in_window)).to_pylist())
        candidates = pa.table({"signature": signatures})  # noqa: F841 (read by chdb as Python(candidates))
        probe, params = signature_window.stored_signatures(
            table, also=" AND signature IN (SELECT signature FROM Python(candidates))"
        )
        with self._python_tables, self._connection("dedup") as connection:
            found = connection.query(inline_params(probe, params), "ArrowTable")
        return set(found.column("signature").to_pylist())

    def _insert(self, table: str, arrow_data: pa.Table) -> None:
        """Always as a `Python()` table: chdb's streamed insert (`send_insert`, ≈ 8 ms cheaper for a
        small insert) reports success when ClickHouse refuses the rows (too many parts, a full
        disk), and the rows are lost (chdb 4.4.0; `tests/integration/storage/test_warehouse.py`)."""
        columns = ", ".join(f"`{name}`" for name in arrow_data.column_names)
        insert = f"INSERT INTO {self.database}.{table} ({columns}) SETTINGS {INSERT_SETTINGS}"
        with self._python_tables, self._connection("insert") as connection:
            # chdb resolves Python(arrow_data) to this frame's local variable.
            connection.query(f"{insert} SELECT {columns} FROM Python(arrow_data)")

    async def _applied_versions(self) -> set[int]:
        table = await self.query_arrow(f"SELECT version FROM {self.database}.schema_migrations")
        return set(table.column("version").to_pylist())

    async def _record_migration(self, migration: Migration) -> None:
        await self.execute(
            f"INSERT INTO {self.database}.schema_migrations (version, name, checksum) "
            "VALUES ({version:UInt32}, {name:String}, {checksum:String})",
            {"version": migration.version, "name": migration.name, "checksum": migration.checksum},
        )
