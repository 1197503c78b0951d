"""Apps with auth on (admin token, JWT secret, API keys) over a real embedded warehouse,
and a real redis-server started on a free loopback port and stopped by its PID."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app
from arbitrage.config import Settings, load_settings
from arbitrage.security import sign_hs256

ADMIN_TOKEN = "integration-admin-token-0123456789abcdef"
JWT_SECRET = "integration-jwt-secret-fedcba9876543210"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def secure_settings(directory: Path, **overrides: Any) -> Settings:
    return load_settings(
        env={},
        overrides={
            "storage.data_dir": str(directory / "data"),
            "export.dir": str(directory / "exports"),
            "auth.enabled": True,
            "auth.admin_token": ADMIN_TOKEN,
            "auth.jwt_secret": JWT_SECRET,
            "auth.rate_limit_per_minute": 0,
            **overrides,
        },
    )


def jwt_for(*roles: str, subject: str = "tester", lifetime: int = 300, **claims: Any) -> str:
    return sign_hs256({"sub": subject, "roles": list(roles), "exp": int(time.time()) + lifetime, **claims}, JWT_SECRET)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
async def secure_client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AsyncTestClient[Any]]:
    """One app with auth on for the module (starting chdb per test would dominate the run time)."""
    settings = secure_settings(tmp_path_factory.mktemp("secure"))
    async with AsyncTestClient(create_app(settings)) as client:
        yield client


class RedisProcess:
    def __init__(self, directory: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}/0"
        directory.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    if not (shutil.which("redis-server") or Path("/usr/bin/redis-server").exists()):
        pytest.skip("redis-server is not installed")
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


class LogCapture(logging.Handler):
    """Every record below a logger, formatted with its exception (Litestar's logging set-up
    replaces the root handlers, so pytest's caplog misses records logged by the app)."""

    def __init__(self, logger: str = "") -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.logger = logging.getLogger(logger)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def __enter__(self) -> LogCapture:
        self.logger.addHandler(self)
        self._level = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *_: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self._level)
