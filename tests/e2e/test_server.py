"""The real server process (Granian + Litestar + chdb) on loopback, driven like a user would."""

from __future__ import annotations

import contextlib
import gzip
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import msgspec
import polars as pl
import pytest

from arbitrage.simulator import Simulator
from tests.e2e.server import ARBITRAGE, ServerProcess, free_port

pytestmark = pytest.mark.e2e


def test_ingested_data_is_served_and_survives_a_restart(tmp_path: Path) -> None:
    records = Simulator(seed=21).records(3000)
    data = tmp_path / "data"
    with ServerProcess(data) as server:
        report = httpx.post(f"{server.url}/ingest", content=msgspec.json.encode(records), timeout=60).json()
        assert report["accepted"] == 3000
        first_page = httpx.get(f"{server.url}/transactions", params={"limit": 10}).json()
    with ServerProcess(data) as server:
        assert httpx.get(f"{server.url}/stats").json()["transactions"] == 3000
        assert httpx.get(f"{server.url}/transactions", params={"limit": 10}).json() == first_page
        again = httpx.post(f"{server.url}/ingest", content=msgspec.json.encode(records[:100]), timeout=60).json()
        assert (again["accepted"], again["duplicates"]) == (0, 100)
        # A page of ≈ 13 MB leaves the server in slices (`arbitrage/api/_sliced_bodies.py`) and arrives whole.
        everything = {"start": "2020-03-16", "end": "2100-01-01", "limit": 3000}
        page = httpx.get(f"{server.url}/historical", params=everything, headers={"accept-encoding": "identity"})
        assert int(page.headers["content-length"]) == len(page.content) > 2_000_000
        assert sorted(row["signature"] for row in page.json()) == sorted(r["signature"] for r in records)


def test_a_killed_server_keeps_everything_it_acknowledged(tmp_path: Path) -> None:
    simulator = Simulator(seed=22)
    data = tmp_path / "data"
    acknowledged = 0
    server = ServerProcess(data).start()
    try:
        for _ in range(5):
            acknowledged += httpx.post(f"{server.url}/ingest", content=simulator.ndjson(1000), timeout=60).json()[
                "accepted"
            ]
    finally:
        server.stop(signal.SIGKILL)
    with ServerProcess(data) as restarted:
        assert httpx.get(f"{restarted.url}/stats").json()["transactions"] == acknowledged == 5000


def test_a_stopped_server_exits_cleanly_and_keeps_what_it_acknowledged(tmp_path: Path) -> None:
    """SIGTERM while a client keeps posting: exit 0 without the SIGKILL fallback, nothing acknowledged lost."""
    simulator = Simulator(seed=23)
    bodies = [simulator.ndjson(1000) for _ in range(40)]
    data = tmp_path / "data"
    acknowledged = 0
    two_stored = threading.Event()
    server = ServerProcess(data).start()

    def post_all() -> None:
        nonlocal acknowledged
        with httpx.Client(timeout=60) as client:
            for body in bodies:
                try:
                    response = client.post(f"{server.url}/ingest", content=body)
                except httpx.HTTPError:
                    continue
                if response.status_code == 200:
                    acknowledged += response.json()["accepted"]
                if acknowledged >= 2000:
                    two_stored.set()

    poster = threading.Thread(target=post_all)
    poster.start()
    try:
        assert two_stored.wait(60)
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.stop(signal.SIGKILL)
        poster.join()
    with ServerProcess(data) as restarted:
        assert httpx.get(f"{restarted.url}/stats").json()["transactions"] >= acknowledged >= 2000


def _running(pid: int) -> bool:
    """Not exited (a zombie has exited; the parent that would reap it may be an init that does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_worker_whose_main_process_was_killed_stops_and_the_server_starts_again(tmp_path: Path) -> None:
    """A supervisor kills `serve`'s PID (Granian's main process), not its group: the worker used to
    keep the port and the data dir's lock for good. Bound by host name, which Granian takes only as an IP."""
    data = tmp_path / "data"
    server = ServerProcess(data, args=["--host", "localhost"]).start()
    try:
        stored = httpx.post(f"{server.url}/ingest", content=Simulator(seed=24).ndjson(500), timeout=60).json()
        assert stored["accepted"] == 500
        assert server.process is not None
        workers = [
            int(pid)
            for pid in Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
        ]
        assert workers
        server.process.kill()  # SIGKILL to the main process alone
        server.process.wait(10)
        deadline = time.monotonic() + 30
        while any(map(_running, workers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(_running, workers))
    finally:
        server.stop(signal.SIGKILL)
    with ServerProcess(data, port=server.port) as restarted:
        assert httpx.get(f"{restarted.url}/stats").json()["transactions"] == 500


def test_a_worker_orphaned_while_it_starts_stops_too(tmp_path: Path) -> None:
    """Killed before the worker's app existed: the worker's own parent is then init, not `serve`."""
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    command = [str(ARBITRAGE), "serve", "--port", str(port), "--data-dir", str(data)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARB_")} | {"ARB_SERVER__STOP_TIMEOUT_SECONDS": "2"}
    main = subprocess.Popen(command, env=env, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        children = Path(f"/proc/{main.pid}/task/{main.pid}/children")
        deadline = time.monotonic() + 60
        while not children.read_text().split() and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = [int(pid) for pid in children.read_text().split()]
        assert workers
        main.kill()
        main.wait(10)
        deadline = time.monotonic() + 60
        while any(map(_running, workers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(_running, workers))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(main.pid, signal.SIGKILL)
    with ServerProcess(data, port=port) as restarted:
        assert httpx.get(f"{restarted.url}/health").status_code == 200


def test_with_json_logs_every_line_the_server_writes_is_one_json_object(tmp_path: Path) -> None:
    """Granian's own lines (listening, workers) were plain `[INFO] …` text among them."""
    server = ServerProcess(tmp_path / "data", env={"ARB_TELEMETRY__LOG_FORMAT": "json"}).start()
    try:
        assert httpx.post(f"{server.url}/ingest", content=Simulator(seed=25).ndjson(100), timeout=60).status_code == 200
    finally:
        assert server.stop(signal.SIGTERM) == 0
    lines = [line for line in server.log.read_text().splitlines() if line.strip()]
    entries = [msgspec.json.decode(line) for line in lines]
    assert any(entry["logger"].startswith("_granian") and "Listening" in entry["message"] for entry in entries)


def test_a_stop_is_not_held_up_by_an_open_sse_stream(tmp_path: Path) -> None:
    """Granian waited for every connection to close; a live SSE client never closes its own."""
    server = ServerProcess(tmp_path / "data", env={"ARB_SERVER__STOP_TIMEOUT_SECONDS": "2"}).start()
    opened = threading.Event()

    def follow() -> None:
        with contextlib.suppress(httpx.HTTPError), httpx.stream("GET", f"{server.url}/sse/stream", timeout=120) as live:
            opened.set()
            for _ in live.iter_bytes():
                pass

    client = threading.Thread(target=follow, daemon=True)
    client.start()
    try:
        assert opened.wait(30)
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(20)
    finally:
        server.stop(signal.SIGKILL)
    client.join(10)
    assert not client.is_alive()


def test_a_second_server_on_the_same_data_dir_refuses_to_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data):
        second = ServerProcess(data)
        with pytest.raises(RuntimeError, match="in use by pid"):
            second.start(timeout=30)


def test_the_demo_feed_shows_data_at_once(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data", args=["--demo", "--demo-rate", "500"]) as server:
        for _ in range(50):
            items = httpx.get(f"{server.url}/transactions", params={"limit": 5}).json()["items"]
            if items:
                break
            subprocess.run(["sleep", "0.2"], check=True)
        assert items
        assert items[0]["source"] == "demo"


def test_a_bad_config_value_exits_2_naming_the_key(tmp_path: Path) -> None:
    env = {"ARB_SERVER__PORT": "not-a-port", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [str(ARBITRAGE), "serve"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 2
    assert "server.port" in result.stderr
    config = tmp_path / "config.toml"
    config.write_text("[storage]\nbakend = 'embedded'\n")
    result = subprocess.run(
        [str(ARBITRAGE), "--config", str(config), "migrate"], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 2
    assert "storage.bakend" in result.stderr


def test_cli_simulate_and_ingest_load_a_file(tmp_path: Path) -> None:
    out = tmp_path / "sim.ndjson"
    subprocess.run(
        [str(ARBITRAGE), "simulate", "--count", "2500", "--seed", "5", "--out", str(out)], check=True, timeout=120
    )
    lines = out.read_bytes().splitlines()
    assert len(lines) == 2500
    # Chunks of 1,000 are stored two at a time: the repeats of the second chunk arrive while it may be in flight.
    out.write_bytes(b"\n".join([*lines, *lines[1000:1300], b'{"signature": "x"}']) + b"\n")
    loaded = subprocess.run(
        [str(ARBITRAGE), "ingest", str(out), "--data-dir", str(tmp_path / "data"), "--batch-size", "1000"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert msgspec.json.decode(loaded.stdout.strip().splitlines()[-1]) == {
        "accepted": 2500,
        "duplicates": 300,
        "rejected": 1,
    }
    assert "record 2800: signature" in loaded.stderr  # its index in the file


def test_cli_simulate_posts_to_a_running_server(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as server:
        subprocess.run(
            [str(ARBITRAGE), "simulate", "--count", "1500", "--url", f"{server.url}/ingest", "--batch-size", "500"],
            check=True,
            timeout=120,
        )
        assert httpx.get(f"{server.url}/stats").json()["transactions"] == 1500


def test_cli_ingest_posts_files_to_a_running_server(tmp_path: Path) -> None:
    """While the server owns the data dir, `ingest --url` sends files through it: NDJSON.gz as
    JSON, Parquet as Arrow IPC, errors by their index in the file, then the totals."""
    records = Simulator(seed=24).records(2600)
    records[1777]["slot"] = 0
    ndjson = tmp_path / "first.ndjson.gz"
    ndjson.write_bytes(gzip.compress(b"\n".join(msgspec.json.encode(r) for r in records[:2000])))
    parquet = tmp_path / "second.parquet"
    pl.DataFrame(records[1500:]).write_parquet(parquet)
    data = tmp_path / "data"
    with ServerProcess(data) as server:
        local = subprocess.run(
            [str(ARBITRAGE), "ingest", str(parquet), "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert local.returncode == 1
        assert "use `arbitrage ingest --url" in local.stderr
        loaded = subprocess.run(
            [
                str(ARBITRAGE),
                "ingest",
                str(ndjson),
                str(parquet),
                "--url",
                f"{server.url}/ingest",
                "--batch-size",
                "300",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        assert msgspec.json.decode(loaded.stdout.strip().splitlines()[-1]) == {
            "accepted": 2599,
            "duplicates": 499,
            "rejected": 2,
        }
        assert "first.ndjson.gz: record 1777: slot" in loaded.stderr
        assert "second.parquet: record 277: slot" in loaded.stderr
        assert httpx.get(f"{server.url}/stats").json()["transactions"] == 2599
        gone = subprocess.run(
            [str(ARBITRAGE), "ingest", str(parquet), "--url", "http://127.0.0.1:9/ingest"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert gone.returncode == 1
        assert "http://127.0.0.1:9/ingest: cannot connect" in gone.stderr


def test_bad_requests_answer_one_shape_through_the_real_server(tmp_path: Path) -> None:
    """Granian hands the raw query string on: a repeated parameter and one Litestar refuses both name the field."""
    with ServerProcess(tmp_path / "data") as server:
        repeated = httpx.get(f"{server.url}/transactions?dex=orca&dex=raydium_amm")
        out_of_range = httpx.get(f"{server.url}/transactions", params={"limit": 0})
        missing = httpx.get(f"{server.url}/historical", params={"start": "2025-01-01"})
    assert (repeated.status_code, repeated.json()["extra"]) == (400, {"field": "dex", "reason": "given more than once"})
    assert (out_of_range.status_code, out_of_range.json()["extra"]["field"]) == (400, "limit")
    assert missing.json() == {
        "status_code": 400,
        "detail": "end: required",
        "extra": {"field": "end", "reason": "required"},
    }
