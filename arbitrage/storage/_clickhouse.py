"""The server warehouse: a ClickHouse server or cluster, same SQL and migrations as embedded.

Two protocols, each for what it does best:
- the native protocol through an `asynch` connection pool (`pool_size`) for statements that
  return nothing (DDL, migrations, `INSERT … SELECT`, mutations) and for `ping`; asynch
  substitutes parameters on the client, so `{name:Type}` placeholders are rendered here as
  typed, escaped literals (`inline_params`) and asynch never sees a parameter;
- the HTTP interface for everything that moves data: query results come back as
  `ArrowStream` with the parameters bound on the server (`param_name`), bulk inserts go up as
  `INSERT … FORMAT ArrowStream`, and ingest dedup sends its candidate signatures as an
  external table. No row is encoded or decoded in Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx
import pyarrow as pa
import pyarrow.compute as pc
from asynch.pool import Pool
from opentelemetry import trace

from arbitrage.config import StorageSettings
from arbitrage.errors import ConfigError, WarehouseUnavailable
from arbitrage.storage._arrow_ipc import arrow_stream_bytes, read_arrow_stream
from arbitrage.storage._migrations import LOCAL_SUFFIX, REPLICA_NAME, Migration, apply_migrations
from arbitrage.storage._protocol import SignatureWindow
from arbitrage.storage._sql import INSERT_SETTINGS, TSV_ESCAPES, inline_params, param_text
from arbitrage.storage._threaded import ThreadedReader
from arbitrage.telemetry import METRICS

_tracer = trace.get_tracer("arbitrage.storage")

ARROW_OUTPUT_SETTINGS = {
    "output_format_arrow_string_as_string": "1",
    "output_format_arrow_low_cardinality_as_dictionary": "0",
    "output_format_arrow_fixed_string_as_fixed_byte_array": "1",
    "output_format_arrow_compression_method": "lz4_frame",
}
"""Arrow output settings of the server, matching chdb's defaults so both backends give one schema."""


class ClickHouseWarehouse:
    """A ClickHouse server (or the cluster behind it) as the `Warehouse`.

    With `settings.cluster` the migrations create replicated local tables ON CLUSTER behind
    Distributed tables, and inserts through a Distributed table are synchronous
    (`distributed_foreground_insert`), so a stored batch is readable when `insert_arrow` returns.
    """

    backend = "clickhouse"

    def __init__(self, settings: StorageSettings, *, migrations: Path | None = None) -> None:
        self.database = settings.database
        self.cluster = settings.cluster
        self._native_dsn, self._http_url, self._http_headers = server_endpoints(settings)
        self._pool_size = max(1, settings.pool_size)
        self._slots = asyncio.Semaphore(max(1, settings.max_concurrent_queries))
        self._migrations = migrations
        self._pool: Pool | None = None
        self._http: httpx.Client | None = None
        self._session_settings = {"distributed_foreground_insert": "1"} if self.cluster else {}

    async def start(self) -> None:
        """Connect, create the database and the migrations table, apply pending migrations."""
        try:
            self._http = httpx.Client(headers=self._http_headers, timeout=httpx.Timeout(30.0, read=300.0))
            pool = Pool(minsize=1, maxsize=self._pool_size, dsn=self._native_dsn)
            try:
                await pool.startup()
            except Exception as exc:
                raise WarehouseUnavailable(f"cannot connect to ClickHouse: {exc}") from exc
            self._pool = pool
            on_cluster = f" ON CLUSTER {self.cluster}" if self.cluster else ""
            await self.execute(f"CREATE DATABASE IF NOT EXISTS {self.database}{on_cluster}")
            await self.execute(self._migrations_table_ddl())
            await apply_migrations(
                self.execute,
                self._applied_versions,
                self._record_migration,
                database=self.database,
                cluster=self.cluster,
                directory=self._migrations,
            )
        except BaseException:
            await self.close()
            raise

    def _migrations_table_ddl(self) -> str:
        columns = "(version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3))"
        table = f"{self.database}.schema_migrations"
        if not self.cluster:
            return f"CREATE TABLE IF NOT EXISTS {table} {columns} ENGINE = ReplacingMergeTree ORDER BY version"
        # One copy on every node of every shard: any process, talking to any node, sees every record.
        return (
            f"CREATE TABLE IF NOT EXISTS {table} ON CLUSTER {self.cluster} {columns} "
            f"ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/{{database}}/{{table}}', "
            f"'{{shard}}-{REPLICA_NAME}') ORDER BY version"
        )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):  # a pool whose server went away still has to let go
                await pool.shutdown()
        http, self._http = self._http, None
        if http is not None:
            http.close()

    async def ping(self) -> float:
        started = time.perf_counter()
        await self.execute("SELECT 1")
        return (time.perf_counter() - started) * 1000

    async def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        text = inline_params(sql, params) if params else sql
        pool = self._checked_pool()
        with self._observe("execute"):
            async with self._slots:
                try:
                    async with pool.connection() as connection, connection.cursor() as cursor:
                        if self._session_settings:
                            cursor.set_settings(dict(self._session_settings))  # type: ignore[no-untyped-call]
                        await cursor.execute(text)
                except WarehouseUnavailable:
                    raise
                except Exception as exc:
                    raise WarehouseUnavailable(str(exc)) from exc

    async def query_arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        with self._observe("query"):
            async with self._slots:
                body = await asyncio.to_thread(self._post, sql, http_params(params), None)
        return read_arrow_stream(body)

    async def stream_arrow(
        self, sql: str, params: Mapping[str, Any] | None = None, batch_rows: int = 65_536
    ) -> AsyncIterator[pa.RecordBatch]:
        query = {**http_params(params), "max_block_size": str(batch_rows)}
        async with self._slots:
            stream = await asyncio.to_thread(self._open_stream, sql, query)
            reader: ThreadedReader[pa.RecordBatch] = ThreadedReader(stream, stream.close)
            try:
                while (batch := await reader.next()) is not None:
                    yield batch
            finally:
                await reader.close()

    def mutation_target(self, table: str) -> str:
        """On a cluster, the shards' local tables: ClickHouse refuses mutations of a Distributed table."""
        if self.cluster:
            return f"{self.database}.{table}{LOCAL_SUFFIX} ON CLUSTER {self.cluster}"
        return f"{self.database}.{table}"

    async def insert_arrow(self, table: str, data: pa.Table) -> None:
        columns = ", ".join(f"`{name}`" for name in data.column_names)
        sql = f"INSERT INTO {self.database}.{table} ({columns}) SETTINGS {INSERT_SETTINGS} FORMAT ArrowStream"
        with self._observe("insert"):
            payload = await asyncio.to_thread(arrow_stream_bytes, data)
            async with self._slots:
                await asyncio.to_thread(self._post, None, {"query": sql}, payload)

    async def known_signatures(self, signatures: pa.Array, window: SignatureWindow) -> set[str]:
        if len(signatures) == 0:
            return set()
        membership = "GLOBAL IN" if self.cluster else "IN"
        sql, params = window.stored_signatures(
            f"{self.database}.transactions", also=f" AND signature {membership} (SELECT signature FROM candidates)"
        )
        query = {
            "query": sql,
            **http_params(params),
            "candidates_structure": "signature String",
            "candidates_format": "TabSeparated",
        }
        with self._observe("dedup"):
            candidates = await asyncio.to_thread(tsv_column, signatures)
            async with self._slots:
                body = await asyncio.to_thread(self._post_form, query, {"candidates": candidates})
        return set(read_arrow_stream(body).column("signature").to_pylist()) if body else set()

    def _checked_pool(self) -> Pool:
        if self._pool is None:
            raise WarehouseUnavailable("the clickhouse warehouse is not open")
        return self._pool

    def _checked_http(self) -> httpx.Client:
        if self._http is None:
            raise WarehouseUnavailable("the clickhouse warehouse is not open")
        return self._http

    def _url_params(self, query: Mapping[str, str]) -> dict[str, str]:
        return {
            "database": self.database,
            "default_format": "ArrowStream",
            **ARROW_OUTPUT_SETTINGS,
            **self._session_settings,
            **query,
        }

    def _post(self, sql: str | None, query: Mapping[str, str], payload: bytes | None) -> bytes:
        """POST a query (SQL in the body) or an insert (SQL in `query`, data in the body)."""
        client = self._checked_http()
        content = payload if payload is not None else (sql or "").encode()
        try:
            response = client.post(self._http_url, params=self._url_params(query), content=content)
        except httpx.HTTPError as exc:
            raise WarehouseUnavailable(f"ClickHouse HTTP: {exc}") from exc
        _raise_for_clickhouse(response)
        return response.content

    def _post_form(self, query: Mapping[str, str], files: Mapping[str, bytes]) -> bytes:
        client = self._checked_http()
        try:
            response = client.post(
                self._http_url,
                params=self._url_params(query),
                files={name: (f"{name}.tsv", data) for name, data in files.items()},
            )
        except httpx.HTTPError as exc:
            raise WarehouseUnavailable(f"ClickHouse HTTP: {exc}") from exc
        _raise_for_clickhouse(response)
        return response.content

    def _open_stream(self, sql: str, query: Mapping[str, str]) -> _ArrowHttpStream:
        client = self._checked_http()
        request = client.build_request("POST", self._http_url, params=self._url_params(query), content=sql.encode())
        try:
            response = client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise WarehouseUnavailable(f"ClickHouse HTTP: {exc}") from exc
        if response.status_code != 200:
            response.read()
            response.close()
            _raise_for_clickhouse(response)
        return _ArrowHttpStream(response)

    async def _applied_versions(self) -> set[int]:
        table = await self.query_arrow(f"SELECT DISTINCT version FROM {self.database}.schema_migrations")
        return set(table.column("version").to_pylist()) if table.num_columns else set()

    async def _record_migration(self, migration: Migration) -> None:
        await self.execute(
            f"INSERT INTO {self.database}.schema_migrations (version, name, checksum) "
            "VALUES ({version:UInt32}, {name:String}, {checksum:String})",
            {"version": migration.version, "name": migration.name, "checksum": migration.checksum},
        )

    def _observe(self, operation: str) -> _Observed:
        return _Observed(operation)


class _Observed:
    """Times a warehouse call into `database_query_duration_seconds`, counts failures, traces it."""

    __slots__ = ("_operation", "_span", "_started")

    def __init__(self, operation: str) -> None:
        self._operation = operation

    def __enter__(self) -> None:
        self._started = time.perf_counter()
        self._span = _tracer.start_as_current_span(
            f"clickhouse.{self._operation}", attributes={"db.system": "clickhouse", "db.operation": self._operation}
        )
        self._span.__enter__()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        METRICS.query_seconds.labels(self._operation).observe(time.perf_counter() - self._started)
        if exc_type is not None:
            METRICS.warehouse_errors.labels(self._operation).inc()
        self._span.__exit__(exc_type, exc, tb)


class _ArrowHttpStream:
    """Record batches read from a streaming HTTP response as they arrive."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._reader: pa.RecordBatchStreamReader | None = None
        self._raw = _ResponseFile(response.iter_bytes())

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self

    def __next__(self) -> pa.RecordBatch:
        try:
            if self._reader is None:
                if not self._raw.peek():
                    raise StopIteration
                self._reader = pa.ipc.open_stream(self._raw)
            return self._reader.read_next_batch()
        except StopIteration:
            raise
        except (httpx.HTTPError, pa.ArrowInvalid, OSError) as exc:
            raise WarehouseUnavailable(f"ClickHouse result stream broke: {exc}") from exc

    def close(self) -> None:
        self._response.close()


class _ResponseFile(io.RawIOBase):
    """A readable file over an iterator of byte chunks (what pyarrow's stream reader wants)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def peek(self) -> bytes:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._pending = chunk
        return self._pending

    def read(self, size: int = -1) -> bytes:
        """Exactly `size` bytes unless the response ends first (pyarrow takes a short read as the end)."""
        parts: list[bytes] = []
        wanted = size if size >= 0 else None
        while wanted is None or wanted > 0:
            pending = self.peek()
            if not pending:
                break
            take = len(pending) if wanted is None else min(wanted, len(pending))
            parts.append(pending[:take])
            self._pending = pending[take:]
            if wanted is not None:
                wanted -= take
        return b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _raise_for_clickhouse(response: httpx.Response) -> None:
    if response.status_code == 200:
        return
    message = response.text.strip()[:2000] or f"HTTP {response.status_code}"
    raise WarehouseUnavailable(message)


def server_endpoints(settings: StorageSettings) -> tuple[str, str, dict[str, str]]:
    """The native DSN, the HTTP interface's URL and its auth headers; ConfigError naming the key that cannot give them."""
    if not settings.url:
        raise ConfigError("storage.url: the clickhouse backend needs a server URL (clickhouse://host:9000/db)")
    http_url, headers = http_endpoint(settings.url, settings.http_url)
    return native_dsn(settings.url), http_url, headers


def native_dsn(url: str) -> str:
    """The asynch DSN for `storage.url`, connected to `default` (our database may not exist yet)."""
    parts = urlsplit(url)
    if parts.scheme not in ("clickhouse", "clickhouses"):
        raise ConfigError(f"storage.url: expected clickhouse:// or clickhouses://, got {parts.scheme or 'no'} scheme")
    return urlunsplit((parts.scheme, parts.netloc, "/default", parts.query, ""))


def http_endpoint(url: str, http_url: str = "") -> tuple[str, dict[str, str]]:
    """The HTTP interface's URL and auth headers: `http_url`, else derived from `url` (8123/8443).

    Credentials travel in `X-ClickHouse-User`/`X-ClickHouse-Key` headers, never in the URL.
    """
    source = urlsplit(http_url or url)
    user = unquote(source.username or "") or unquote(urlsplit(url).username or "") or "default"
    password = unquote(source.password or "") if source.password is not None else unquote(urlsplit(url).password or "")
    if http_url:
        scheme = source.scheme
        if scheme not in ("http", "https"):
            raise ConfigError(f"storage.http_url: expected http:// or https://, got {scheme or 'no'} scheme")
        port = f":{source.port}" if source.port else ""
    else:
        scheme = "https" if source.scheme == "clickhouses" else "http"
        port = ":8443" if scheme == "https" else ":8123"
    host = source.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    headers = {"X-ClickHouse-User": user}
    if password:
        headers["X-ClickHouse-Key"] = password
    path = source.path if http_url and source.path not in ("", "/") else "/"
    return f"{scheme}://{host}{port}{path}", headers


def http_params(params: Mapping[str, Any] | None) -> dict[str, str]:
    """Query parameters for the HTTP interface (`param_name`, escaped text form), bound on the server."""
    if not params:
        return {}
    out = {}
    for name, value in params.items():
        text = param_text(value)
        if isinstance(value, (str, bytes)):
            text = "".join(TSV_ESCAPES.get(c, c) for c in text)
        out[f"param_{name}"] = text
    return out


def tsv_column(values: pa.Array) -> bytes:
    """One string column as TabSeparated bytes (escaped), for an external table."""
    strings = pc.cast(values, pa.large_string())
    for char, escaped in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n")):
        strings = pc.replace_substring(strings, char, escaped)
    return ("\n".join(strings.to_pylist()) + "\n").encode()
