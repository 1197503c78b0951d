"""Start the real `arbitrage serve` process on a free loopback port, and stop it by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import TracebackType

import httpx

from tests.services.kafka_broker import Broker

ARBITRAGE = Path(sys.executable).with_name("arbitrage")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """`arbitrage serve` as a subprocess; a context manager that always reaps it."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ARB_")} | (env or {})
        self.args = args or []
        self.log = data_dir.parent / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        command = [str(ARBITRAGE), "serve", "--port", str(self.port), "--data-dir", str(self.data_dir), *self.args]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.data_dir.parent,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code in (200, 503):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not answer within {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the server; SIGKILL goes to its whole process group (Granian's workers too)."""
        assert self.process is not None
        if self.process.poll() is None:
            if sig == signal.SIGKILL:
                os.killpg(self.process.pid, signal.SIGKILL)
            else:
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return int(self.process.returncode)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()


def kafka_env(broker: Broker, **kafka: str) -> tuple[dict[str, str], dict[str, str]]:
    """A server's environment to consume from `broker` with a group and topics of its own (plus `[kafka]`
    settings `kafka`), and those topics by role."""
    tag = uuid.uuid4().hex[:8]
    topics = {
        "transactions": f"tx-{tag}",
        "opportunities": f"opp-{tag}",
        "risk": f"risk-{tag}",
        "dlq": f"dlq-{tag}",
        "relay_progress": f"progress-{tag}",
    }
    env = {
        "ARB_KAFKA__ENABLED": "true",
        "ARB_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
        "ARB_KAFKA__GROUP_ID": f"group-{tag}",
        **{f"ARB_KAFKA__TOPIC_{role.upper()}": topic for role, topic in topics.items()},
        **{f"ARB_KAFKA__{key.upper()}": value for key, value in kafka.items()},
    }
    return env, topics
