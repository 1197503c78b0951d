"""A full disk under the real server: data dir and exports on a small tmpfs (needs root to mount)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from arbitrage.simulator import Simulator
from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.e2e

NDJSON = {"content-type": "application/x-ndjson"}
MIB = 1 << 20


@contextlib.contextmanager
def small_disk(directory: Path, size_mib: int) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill needs root")
    directory.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(directory)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def free_bytes(directory: Path) -> int:
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


def fill(filler: Path, leave_bytes: int = 0) -> None:
    """Grow `filler` until `leave_bytes` are free, or until the disk refuses more."""
    chunk = bytes(MIB)
    with filler.open("ab") as out:
        try:
            while free_bytes(filler.parent) - MIB >= leave_bytes:
                out.write(chunk)
                out.flush()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise


def ended_export(server: ServerProcess, job_id: str, auth: dict[str, str], timeout: float = 20) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, object] = httpx.get(f"{server.url}/exports/{job_id}", headers=auth, timeout=10).json()
        if job["state"] not in ("queued", "running") or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def ingest_health(server: ServerProcess) -> dict[str, object]:
    component: dict[str, object] = httpx.get(f"{server.url}/health", timeout=10).json()["components"]["ingest"]
    return component


def test_a_full_disk_refuses_with_503_loses_nothing_and_recovers(tmp_path: Path) -> None:
    """While full: every refusal is a 503 with Retry-After (invalid records too: their dead
    letters cannot be kept), `/health` says why, reads answer, a restart works, and an export
    ends failed without holding on to the space it took. Once space returns, resent batches are
    stored exactly once, health recovers and an export succeeds."""
    simulator = Simulator(seed=31, start=Simulator.start_for(30_000))
    with small_disk(tmp_path / "disk", 48) as disk:
        env = {"ARB_EXPORT__DIR": str(disk / "exports")}
        server = ServerProcess(disk / "data", env=env).start()
        try:
            auth = {"authorization": f"Bearer {(disk / 'data' / 'admin_token').read_text().strip()}"}
            stored = httpx.post(f"{server.url}/ingest", content=simulator.ndjson(20_000), headers=NDJSON, timeout=60)
            assert stored.json()["accepted"] == 20_000

            # Room for the job's row, not for its ~55 MB of CSV.
            fill(disk / "filler-1", leave_bytes=11 * MIB)
            submitted = httpx.post(f"{server.url}/export/csv", json={}, headers=auth, timeout=30)
            assert submitted.status_code == 202, submitted.text
            failed = ended_export(server, submitted.json()["id"], auth)
            assert failed["state"] == "failed"
            assert "No space left on device" in str(failed["error"])
            assert list((disk / "exports").rglob("*")) in ([], [disk / "exports" / str(failed["id"])])
            assert free_bytes(disk) >= 10 * MIB, "the failed export still holds the disk space it wrote"

            fill(disk / "filler-2")
            refused_bodies = [b'{"signature": "not-a-signature"}\n', simulator.ndjson(1000)]
            for body in refused_bodies:
                refused = httpx.post(f"{server.url}/ingest", content=body, headers=NDJSON, timeout=30)
                assert refused.status_code == 503, refused.text
                assert refused.headers["retry-after"]
                health = ingest_health(server)
                assert health["status"] == "degraded"
                assert "NOT_ENOUGH_SPACE" in str(health["error"])
            assert httpx.get(f"{server.url}/stats", timeout=10).json()["transactions"] == 20_000

            assert server.stop() == 0
            server = ServerProcess(disk / "data", env=env).start()
            assert httpx.get(f"{server.url}/stats", timeout=10).json()["transactions"] == 20_000

            for filler in disk.glob("filler-*"):
                filler.unlink()
            answers = [
                httpx.post(f"{server.url}/ingest", content=b, headers=NDJSON, timeout=30) for b in refused_bodies
            ]
            assert [a.status_code for a in answers] == [422, 200]
            assert answers[1].json()["accepted"] == 1000
            assert ingest_health(server)["status"] == "healthy"
            assert httpx.get(f"{server.url}/stats", timeout=10).json()["transactions"] == 21_000
            again = httpx.post(f"{server.url}/ingest", content=refused_bodies[1], headers=NDJSON, timeout=30).json()
            assert (again["accepted"], again["duplicates"]) == (0, 1000)
            dead = httpx.get(f"{server.url}/admin/dead-letters", headers=auth, timeout=10).json()["items"]
            assert len(dead) == 1

            # Just the signatures: all the columns would not fit on this disk either.
            wanted = {"columns": ["signature"]}
            exported = httpx.post(f"{server.url}/export/csv", json=wanted, headers=auth, timeout=30).json()
            done = ended_export(server, exported["id"], auth, timeout=40)
            assert (done["state"], done["rows"]) == ("done", 21_000)
            # If even its end could not be stored before the restart, the sweep marks it failed (interrupted).
            assert ended_export(server, str(failed["id"]), auth, timeout=40)["state"] == "failed"
        finally:
            server.stop()
