"""`arbitrage ingest --url` and `simulate --url` against the real server process: exit code 0
only when every record was stored, known already or reported rejected.

Each command runs in its own process, as a user runs it; the server is `arbitrage serve` on a
free loopback port, stopped by its PID.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import msgspec
import pytest

from arbitrage.simulator import Simulator
from tests.conftest import fresh_data_dir
from tests.e2e.server import ServerProcess
from tests.integration.test_cli import _run

pytestmark = pytest.mark.e2e


def _totals(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    totals: dict[str, int] = msgspec.json.decode(result.stdout.strip().splitlines()[-1])
    return totals


def _stored(server: ServerProcess) -> int:
    count: int = httpx.get(f"{server.url}/stats", timeout=30).json()["transactions"]
    return count


def test_ingest_url_rejects_a_chunk_of_unreadable_lines_and_keeps_the_rest(
    tmp_path: Path, migrated_template: Path
) -> None:
    """A chunk with no JSON line in it (a garbage block, a file cut mid-record) is answered 400
    as a whole by the server; it was fatal: exit 1 naming neither file nor record, no totals,
    and nothing after it sent. As without --url, its lines are rejected records, named."""
    lines = [msgspec.json.encode(record) for record in Simulator(seed=41).records(7)]
    body = [*lines[:4], b"\x00\x01 not json", b"<html>", *lines[4:6], lines[6][:40]]
    (tmp_path / "cut.ndjson").write_bytes(b"\n".join(body) + b"\n")
    with ServerProcess(fresh_data_dir(migrated_template, tmp_path / "data")) as server:
        result = _run("ingest", "cut.ndjson", "--url", f"{server.url}/ingest", "--batch-size", "2", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert _totals(result) == {"accepted": 6, "duplicates": 0, "rejected": 3}
        for index in (4, 5, 8):
            assert f"cut.ndjson: record {index}: $: not JSON" in result.stderr
        assert _stored(server) == 6


def test_ingest_url_waits_for_a_server_that_restarts_mid_file(tmp_path: Path, migrated_template: Path) -> None:
    """Once the server has answered, a refused connection is a server on its way back (a
    restart, a deploy): the chunk is resent as after a dropped connection. It stopped the
    command at once, as for a wrong URL, though part of the file was stored."""
    records = Simulator(seed=42).records(3000)
    (tmp_path / "big.ndjson").write_bytes(b"\n".join(msgspec.json.encode(r) for r in records) + b"\n")
    data = fresh_data_dir(migrated_template, tmp_path / "data")
    server = ServerProcess(data).start()
    try:
        command = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "arbitrage",
                "ingest",
                "big.ndjson",
                "--batch-size",
                "50",
                "--url",
                server.url + "/ingest",
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while _stored(server) < 100:  # part of the file is in
                assert command.poll() is None and time.monotonic() < deadline, command.communicate()
                time.sleep(0.1)
            server.stop()
            assert command.poll() is None, "the file was loaded before the server stopped: make it bigger"
            server = ServerProcess(data, port=server.port).start()
            stdout, stderr = command.communicate(timeout=240)
        finally:
            if command.poll() is None:
                command.kill()
                command.wait()
        assert command.returncode == 0, stderr
        totals = msgspec.json.decode(stdout.strip().splitlines()[-1])
        assert totals["rejected"] == 0 and totals["accepted"] + totals["duplicates"] == 3000
        assert _stored(server) == 3000
    finally:
        server.stop()


def test_simulate_url_waits_out_a_busy_server(tmp_path: Path, migrated_template: Path) -> None:
    """503 + Retry-After is the server asking to be asked again later; `simulate --url` stopped
    with exit 1 at the first one, where `ingest --url` waits. Both wait now, and report totals."""
    env = {"ARB_INGEST__MAX_PENDING_BATCHES": "1"}
    other = Simulator(seed=43, start=Simulator.start_for(40_000)).ndjson(20_000)
    with ServerProcess(fresh_data_dir(migrated_template, tmp_path / "data"), env=env) as server:
        busy_until = time.monotonic() + 8
        answers: list[int] = []

        def keep_busy() -> None:
            """Another loader holds the one admitted batch almost all the time (its repeats are duplicates)."""
            with httpx.Client(timeout=120) as other_client:
                while time.monotonic() < busy_until:
                    sent = other_client.post(
                        f"{server.url}/ingest", content=other, headers={"content-type": "application/x-ndjson"}
                    )
                    answers.append(sent.status_code)

        loader = threading.Thread(target=keep_busy)
        loader.start()
        try:
            while not answers:
                time.sleep(0.05)
            result = _run(
                "simulate",
                "--count",
                "2000",
                "--seed",
                "44",
                "--url",
                f"{server.url}/ingest",
                "--batch-size",
                "100",
                cwd=tmp_path,
            )
        finally:
            loader.join()
        assert result.returncode == 0, result.stderr
        assert _totals(result) == {"accepted": 2000, "duplicates": 0, "rejected": 0}
        assert _stored(server) == 20_000 + 2000


def test_ingest_url_stopped_by_a_refusal_says_where_and_what_was_stored(
    tmp_path: Path, migrated_template: Path
) -> None:
    """A refusal no retry can fix (413 here; 401 when a key expires) stops the command with exit 1.
    It printed the server's answer alone: nothing said which file, from which record on, nor
    how much of the earlier files was stored. Now the line names both and the totals follow."""
    records = [msgspec.json.encode(record) for record in Simulator(seed=45).records(13)]
    (tmp_path / "small.ndjson").write_bytes(b"\n".join(records[:3]) + b"\n")
    (tmp_path / "large.ndjson").write_bytes(b"\n".join(records[3:]) + b"\n")
    env = {"ARB_INGEST__MAX_RECORDS_PER_BODY": "4"}
    with ServerProcess(fresh_data_dir(migrated_template, tmp_path / "data"), env=env) as server:
        url = f"{server.url}/ingest"
        result = _run("ingest", "small.ndjson", "large.ndjson", "--url", url, "--batch-size", "5", cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.strip() and "tx/s]" not in line]
        assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
        assert errors[0].startswith(f"arbitrage: large.ndjson: stopped at record 0: {url} answered 413: ")
        assert errors[0].endswith("(lower --batch-size)")
        assert _totals(result) == {"accepted": 3, "duplicates": 0, "rejected": 0}
        assert _stored(server) == 3


def test_ingest_url_sends_a_pretty_printed_json_array_record_by_record(tmp_path: Path, migrated_template: Path) -> None:
    """A JSON array as `json.dump(indent=2)` or jq writes it spreads each record over lines; its
    records went out as NDJSON as they were, cut into lines that are no JSON: none was stored
    (without --url all are)."""
    records = Simulator(seed=46).records(30)
    (tmp_path / "pretty.json").write_text(json.dumps(records, indent=2))
    with ServerProcess(fresh_data_dir(migrated_template, tmp_path / "data")) as server:
        result = _run("ingest", "pretty.json", "--url", f"{server.url}/ingest", "--batch-size", "20", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert _totals(result) == {"accepted": 30, "duplicates": 0, "rejected": 0}
        assert _stored(server) == 30
