"""CLI commands that meet a busy data dir or an unreadable input stop with one line, exit 1.

Each runs in its own process: `serve` replaces its process with Granian, and chdb opens
one data path per process.
"""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import msgspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from arbitrage.simulator import Simulator
from arbitrage.storage import EmbeddedWarehouse
from tests.conftest import fresh_data_dir


def _run(
    *argv: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`arbitrage` in a subprocess, with none of this environment's settings, token or credentials."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith(("ARB_", "ARBITRAGE_", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-m", "arbitrage", *argv],
        cwd=cwd,
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The last stderr line, after checking it is the only output besides progress bars."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "tx/s]" not in line]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.anyio
async def test_serve_on_a_data_dir_in_use_stops_before_listening(warehouse: EmbeddedWarehouse, tmp_path: Path) -> None:
    result = _run("serve", "--port", str(_free_port()), "--data-dir", str(warehouse.data_dir), cwd=tmp_path)
    assert "Listening" not in result.stdout + result.stderr
    assert _one_error_line(result) == (
        f"arbitrage: the data directory {warehouse.data_dir} is in use by pid {os.getpid()}; "
        "the embedded warehouse allows one process (stop it, or use another storage.data_dir)"
    )


CLICKHOUSE = {"ARB_STORAGE__BACKEND": "clickhouse"}
AUTH_ON = {"ARB_AUTH__ENABLED": "true"}


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"ARB_AUTH__ADMIN_TOKEN": "changeme"}, "auth.admin_token"),
        ({"ARB_AUTH__JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----"}, "auth.jwt_audience"),
        ({"ARB_AUTH__JWT_PUBLIC_KEY": "garbage", "ARB_AUTH__JWT_AUDIENCE": "api"}, "auth.jwt_public_key"),
        (CLICKHOUSE, "storage.url"),
        (CLICKHOUSE | {"ARB_STORAGE__URL": "notaurl"}, "storage.url"),
        (
            CLICKHOUSE | {"ARB_STORAGE__URL": "clickhouse://127.0.0.1:9000/a", "ARB_STORAGE__HTTP_URL": "ftp://x"},
            "storage.http_url",
        ),
        (AUTH_ON | {"ARB_SERVER__HOST": "192.0.2.1"}, "server.host"),  # TEST-NET-1: no machine's address
    ],
)
def test_serve_with_settings_start_up_refuses_stops_with_exit_2_naming_the_key(
    tmp_path: Path, env: dict[str, str], key: str
) -> None:
    """Checked before Granian starts: in its worker the same error was a traceback and exit 1."""
    result = _run("serve", "--port", str(_free_port()), "--data-dir", str(tmp_path / "data"), cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Listening" not in result.stdout + result.stderr
    assert result.stderr.startswith(f"arbitrage: configuration error: {key}: "), result.stderr


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_a_data_dir_that_is_a_file_stops_with_exit_2_naming_the_key(tmp_path: Path, command: str) -> None:
    (tmp_path / "data").write_text("not a directory")
    port = ["--port", str(_free_port())] if command == "serve" else []
    result = _run(command, *port, "--data-dir", str(tmp_path / "data" / "inside"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(
        f"arbitrage: configuration error: storage.data_dir: {tmp_path / 'data' / 'inside'} cannot be the data directory"
    ), result.stderr


def test_serve_on_a_port_another_server_listens_on_stops_with_exit_2(tmp_path: Path) -> None:
    """Granian listens with SO_REUSEPORT: a second server started on the port and the kernel split
    connections between the two, so a client's answers came from two data dirs in turn."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as Granian listens
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        clean = {name: value for name, value in os.environ.items() if not name.startswith(("ARB_", "ARBITRAGE_"))}
        argv = [sys.executable, "-m", "arbitrage", "serve", "--port", str(port), "--data-dir", str(tmp_path / "data")]
        server = subprocess.Popen(
            argv, cwd=tmp_path, env=clean, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            _, stderr = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)  # the server we started, and its worker
            server.communicate()
            pytest.fail("serve started on a port in use")
    assert server.returncode == 2
    assert (
        stderr.strip()
        .splitlines()[-1]
        .startswith(f"arbitrage: configuration error: server.port: 127.0.0.1:{port} is in use")
    )


def test_ingest_of_a_file_that_does_not_decode_names_it(tmp_path: Path, migrated_template: Path) -> None:
    data = fresh_data_dir(migrated_template, tmp_path / "data")
    pq.write_table(pa.table({"signature": [str(n) for n in range(1000)]}), tmp_path / "whole.parquet")
    (tmp_path / "cut.parquet").write_bytes((tmp_path / "whole.parquet").read_bytes()[:600])
    (tmp_path / "cut.json").write_text('[{"signature": "a"}, {"signature": ')
    for name, reason in (("cut.parquet", "Parquet magic bytes not found"), ("cut.json", "truncated")):
        error = _one_error_line(_run("ingest", name, "--data-dir", str(data), cwd=tmp_path))
        assert error.startswith(f"arbitrage: {name}: ") and reason in error


def test_an_export_the_destination_refuses_is_one_line(tmp_path: Path, migrated_template: Path) -> None:
    data = fresh_data_dir(migrated_template, tmp_path / "data")
    no_credentials = {
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
    }
    argv = ("export", "csv", "--out", "s3://bucket/x/", "--data-dir", str(data), "--quiet")
    error = _one_error_line(_run(*argv, cwd=tmp_path, env=no_credentials))
    assert error == "arbitrage: export to s3://bucket/x/ failed: NoCredentialsError: Unable to locate credentials"


def test_ingest_of_parquet_keeps_a_file_whose_one_value_its_column_cannot_hold(
    tmp_path: Path, migrated_template: Path
) -> None:
    """Parquet goes in as columns; a negative fee rejects its record, named by its index in the file."""
    data = fresh_data_dir(migrated_template, tmp_path / "data")
    records = Simulator(seed=9).records(250)
    records[137]["fee_lamports"] = -1
    pl.DataFrame(records).write_parquet(tmp_path / "records.parquet")
    result = _run("ingest", "records.parquet", "--batch-size", "100", "--data-dir", str(data), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert msgspec.json.decode(result.stdout.strip().splitlines()[-1]) == {
        "accepted": 249,
        "duplicates": 0,
        "rejected": 1,
    }
    assert "records.parquet: record 137: fee_lamports: Expected `int` >= 0" in result.stderr


@pytest.mark.anyio
async def test_ingest_of_a_file_cut_short_keeps_what_was_read_and_says_where_it_stopped(
    tmp_path: Path, migrated_template: Path
) -> None:
    """A gzip file cut short (an interrupted download) stops the command, exit 1, at its end.
    The chunks read before were cancelled while in flight: stored or not, nothing said, and no
    totals. They are stored now, the line names the record to resume from, the totals follow."""
    data = fresh_data_dir(migrated_template, tmp_path / "data")
    records = Simulator(seed=12).records(3000)
    whole = gzip.compress(b"\n".join(msgspec.json.encode(r) for r in records) + b"\n")
    (tmp_path / "cut.ndjson.gz").write_bytes(whole[: len(whole) * 9 // 10])
    result = _run("ingest", "cut.ndjson.gz", "--batch-size", "500", "--data-dir", str(data), cwd=tmp_path)
    error = _one_error_line(result)
    assert error.startswith("arbitrage: cut.ndjson.gz: stopped at record 2500: "), error
    assert "Compressed file ended" in error
    assert msgspec.json.decode(result.stdout.strip().splitlines()[-1]) == {
        "accepted": 2500,
        "duplicates": 0,
        "rejected": 0,
    }
    warehouse = EmbeddedWarehouse(data)
    await warehouse.start()
    try:
        assert (await warehouse.query_arrow("SELECT count() AS n FROM arbitrage.transactions"))["n"][0].as_py() == 2500
    finally:
        await warehouse.close()
