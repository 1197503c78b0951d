"""Export fixtures: synthetic stored transactions, a real S3 endpoint (moto's server)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from litestar import Litestar
from litestar.datastructures import State
from litestar.testing import AsyncTestClient

from arbitrage.api._deps import DEPENDENCIES
from arbitrage.api._errors import EXCEPTION_HANDLERS
from arbitrage.api.exports import ExportController
from arbitrage.api.schedules import ScheduleController
from arbitrage.config import Settings
from arbitrage.export import ExportService
from arbitrage.model import STORED_SCHEMA
from arbitrage.schedule import ScheduleService
from arbitrage.services import Services
from arbitrage.storage import EmbeddedWarehouse

DEXES = ["raydium_amm", "orca_whirlpool", "meteora_dlmm", "phoenix"]
TOKENS = [f"Mint{i}" + "1" * 39 for i in range(1, 7)]  # base58: no 0, O, I or l
SIGNERS = [f"Signer{i}" + "2" * 37 for i in range(1, 5)]
BASE_TIME = datetime(2024, 3, 1, tzinfo=UTC)

MakeTransactions = Callable[..., pa.Table]


def transactions(
    n: int, *, seed: int = 1, start: datetime = BASE_TIME, ingested_at: datetime | None = None
) -> pa.Table:
    """`n` stored-shape transactions one minute apart (so 1440 per day), with nulls and variety."""
    rng = np.random.default_rng(seed)
    hops = rng.integers(1, 4, n)
    offsets = np.repeat(np.arange(n), hops)
    leg_count = int(hops.sum())
    dex = np.array(DEXES)[rng.integers(0, len(DEXES), leg_count)]
    tokens_in = np.array(TOKENS)[rng.integers(0, len(TOKENS), leg_count)]
    tokens_out = np.array(TOKENS)[rng.integers(0, len(TOKENS), leg_count)]
    reserve = rng.integers(1, 10**12, leg_count).astype(object)
    reserve[rng.random(leg_count) < 0.3] = None
    legs_flat = pl.DataFrame(
        {
            "row": offsets,
            "dex": dex,
            "pool": ["Pool" + "3" * 40] * leg_count,
            "token_in": tokens_in,
            "token_out": tokens_out,
            "amount_in": rng.integers(1, 2**62, leg_count, dtype=np.uint64),
            "amount_out": rng.integers(1, 2**62, leg_count, dtype=np.uint64),
            "decimals_in": rng.integers(5, 10, leg_count).astype(np.uint8),
            "decimals_out": rng.integers(5, 10, leg_count).astype(np.uint8),
            "reserve_in": pl.Series(list(reserve), dtype=pl.UInt64),
            "reserve_out": rng.integers(1, 10**12, leg_count, dtype=np.uint64),
            "price": rng.random(leg_count) * 100,
        }
    )
    grouped = (
        legs_flat.group_by("row", maintain_order=True)
        .agg(
            pl.struct(pl.exclude("row")).alias("legs"),
            pl.col("dex").alias("dexes"),
            pl.col("token_in").first().alias("first_in"),
            pl.col("token_out").alias("outs"),
        )
        .with_columns(route=pl.concat_list("first_in", "outs"))
    )
    times = [start + timedelta(minutes=i) for i in range(n)]
    ingested = ingested_at or datetime.now(UTC) - timedelta(seconds=30)
    nullable_float = rng.normal(0.01, 0.05, n)
    frame = pl.DataFrame(
        {
            "signature": [f"{seed:04d}{i:08d}" + "4" * 76 for i in range(n)],
            "slot": np.arange(n, dtype=np.uint64) + 250_000_000,
            "block_time": times,
            "signer": np.array(SIGNERS)[rng.integers(0, len(SIGNERS), n)],
            "success": rng.random(n) < 0.8,
            "fee_lamports": np.full(n, 5000, np.uint64),
            "priority_fee_lamports": rng.integers(0, 10**6, n, dtype=np.uint64),
            "jito_tip_lamports": rng.integers(0, 10**6, n, dtype=np.uint64),
            "other_cost_lamports": np.zeros(n, np.uint64),
            "compute_units_consumed": pl.Series(
                [None if i % 5 == 0 else 100_000 + i for i in range(n)], dtype=pl.UInt64
            ),
            "compute_unit_limit": pl.Series([200_000] * n, dtype=pl.UInt64),
            "bundle_id": [None if i % 3 else f"bundle{i}" for i in range(n)],
            "leader": [None] * n,
            "hops": hops.astype(np.uint8),
            "circular": rng.random(n) < 0.5,
            "gross_revenue": rng.random(n),
            "gross_revenue_sol": pl.Series([None if i % 7 == 0 else float(v) for i, v in enumerate(rng.random(n))]),
            "total_cost_lamports": rng.integers(5000, 10**6, n, dtype=np.uint64),
            "total_cost_sol": rng.random(n) / 1000,
            "net_profit_sol": pl.Series([None if i % 11 == 0 else float(v) for i, v in enumerate(nullable_float)]),
            "source": ["test"] * n,
            "kafka_partition": pl.Series([i % 10 if i % 2 else None for i in range(n)], dtype=pl.Int32),
            "kafka_offset": pl.Series([1_000 + i if i % 2 else None for i in range(n)], dtype=pl.Int64),
            "ingested_at": [ingested] * n,
        }
    ).with_columns(
        legs=grouped["legs"],
        dexes=grouped["dexes"],
        route=grouped["route"],
        start_token=grouped["route"].list.first(),
    )
    return frame.select(list(STORED_SCHEMA)).cast(STORED_SCHEMA).to_arrow()  # type: ignore[arg-type]


@pytest.fixture
def make_transactions() -> MakeTransactions:
    return transactions


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3-compatible HTTP endpoint on loopback (moto's server), stopped by its PID."""
    executable = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if executable is None:
        pytest.skip("moto_server is not installed")
    port = _free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    process = subprocess.Popen([executable, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def s3_options(s3_endpoint: str) -> dict[str, dict[str, object]]:
    """fsspec storage options for the endpoint, as the export settings would give them."""
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    return {
        "s3": {
            "key": "testing",
            "secret": "testing",
            "endpoint_url": s3_endpoint,
            "client_kwargs": {"region_name": "eu-west-1"},
        }
    }


@pytest.fixture
def s3_bucket(s3_options: dict[str, dict[str, object]]) -> str:
    """A fresh empty bucket name."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options["s3"])  # type: ignore[arg-type]
    name = f"exports-{os.urandom(4).hex()}"
    fs.mkdir(name)
    return name


@contextlib.asynccontextmanager
async def export_api(
    warehouse: EmbeddedWarehouse, settings: Settings, exports: ExportService
) -> AsyncIterator[AsyncTestClient[Any]]:
    """The export and schedule routes over the real services, without the rest of the app."""
    schedules = ScheduleService(warehouse, exports)
    await exports.start()
    await schedules.start(run_loop=False)
    services = Services(
        settings=settings,
        warehouse=warehouse,
        ingest=None,  # type: ignore[arg-type]
        reader=None,  # type: ignore[arg-type]
        recent=None,  # type: ignore[arg-type]
        extras={"exports": exports, "schedules": schedules},
    )
    app = Litestar(
        route_handlers=[ExportController, ScheduleController],
        dependencies=DEPENDENCIES,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        state=State({"services": services}),
    )
    try:
        async with AsyncTestClient(app) as client:
            yield client
            await _let_ended_jobs_be_stored(exports)
    finally:
        await schedules.close()
        await exports.close()


async def _let_ended_jobs_be_stored(exports: ExportService) -> None:
    """The client runs the app, and so the jobs it starts, on its own event loop, closed when the
    client exits; a job that ended but is still storing its row must finish there first."""
    for _ in range(200):
        if not any(active.job.finished_at is not None for active in exports._active.values()):
            return
        await asyncio.sleep(0.05)


async def wait_done(client: AsyncTestClient[Any], job_id: str) -> dict[str, Any]:
    """The export job once it has left `queued` and `running`."""
    for _ in range(600):
        job = (await client.get(f"/exports/{job_id}")).json()
        if job["state"] not in ("queued", "running"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"export {job_id} did not finish")
