"""`make dist` builds one file that serves with nothing installed but Python 3.11."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import free_port

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "deploy" / "dist" / "build.py"

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(420)]


def bare_python() -> str | None:
    """A Python 3.11 outside our virtualenv (the trading box has only that), if the machine has one."""
    for candidate in ("/usr/bin/python3.11", "/usr/bin/python3"):
        if Path(candidate).is_file():
            version = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 11))"],
                                     capture_output=True, text=True)  # fmt: skip
            if version.stdout.strip() == "True":
                return candidate
    return None


def test_the_make_target_runs_the_dist_build() -> None:
    dry_run = subprocess.run(["make", "-n", "dist"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "deploy/dist/build.py" in dry_run.stdout


def test_the_built_file_starts_with_serve_and_answers_health(tmp_path: Path) -> None:
    if shutil.which("uv") is None and subprocess.run([sys.executable, "-m", "uv", "--version"]).returncode:
        pytest.skip("uv is not installed (make dist installs it)")
    artifact = tmp_path / "out" / "arbitrage"
    subprocess.run([sys.executable, str(BUILD), "--out", str(artifact)], cwd=ROOT, check=True, timeout=300)
    assert os.access(artifact, os.X_OK)

    box = tmp_path / "box"  # a directory with nothing in it but the file
    box.mkdir()
    shutil.copy2(artifact, box / "arbitrage")
    python = bare_python()
    env = {"HOME": str(tmp_path / "home"), "ARBITRAGE_DIST_CACHE": str(tmp_path / "cache")}
    if python is not None:
        env["PATH"] = f"{Path(python).parent}:/bin"  # `#!/usr/bin/env python3` finds the bare interpreter
        command = ["./arbitrage"]
    else:
        env["PATH"] = os.environ["PATH"]
        command = [sys.executable, "./arbitrage"]

    version = subprocess.run([*command, "--version"], cwd=box, env=env, capture_output=True, text=True, timeout=180)
    assert version.returncode == 0, version.stderr[-2000:]
    assert version.stdout.startswith("arbitrage 0.")

    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [*command, "serve", "--port", str(port)], cwd=box, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                if response.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the dist build did not answer /health in time"
            time.sleep(0.5)
        assert response.json()["components"]["warehouse"]["status"] == "healthy"
        assert (box / "data").is_dir()  # the embedded warehouse lives beside the file by default
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "arbitrage_build_info" in metrics
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
