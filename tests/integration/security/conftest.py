"""Apps with auth on (admin token, JWT secret, API keys) over a real embedded warehouse,
and a real redis-server started on a free loopback port and stopped by its PID."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app
from arbitrage.config import Settings, load_settings
from arbitrage.security import sign_hs256
from tests.services.redis_server import RedisServer

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


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if RedisServer.binary() is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
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
