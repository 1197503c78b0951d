"""The admin credential generated on first start: private file, same token after a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app
from arbitrage.config import load_settings
from arbitrage.errors import ConfigError
from arbitrage.security import admin_token
from tests.integration.security.conftest import LogCapture, bearer

pytestmark = pytest.mark.anyio


async def test_the_generated_token_is_kept_across_restarts_and_never_logged(tmp_path: Path) -> None:
    fresh = tmp_path / "data"
    settings = load_settings(env={}, overrides={"storage.data_dir": str(fresh)})
    with LogCapture("arbitrage") as logs:
        async with AsyncTestClient(create_app(settings)) as first:
            token = (fresh / "admin_token").read_text().strip()
            assert (await first.get("/admin/status", headers=bearer(token))).status_code == 200
        async with AsyncTestClient(create_app(settings)) as second:
            assert (await second.get("/admin/status", headers=bearer(token))).status_code == 200
            assert (await second.get("/admin/status", headers=bearer(token + "x"))).status_code == 401
    assert "generated the admin credential" in logs.text
    assert token not in logs.text


@pytest.mark.parametrize("kind", ["directory", "not utf-8"])
def test_an_unreadable_token_file_stops_start_up_naming_the_key(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "admin_token"
    if kind == "directory":
        path.mkdir(mode=0o700)
    else:
        path.write_bytes(b"\xff\xfe token")
        path.chmod(0o600)
    settings = load_settings(env={}, overrides={"auth.admin_token_file": str(path)})
    with pytest.raises(ConfigError, match=r"auth\.admin_token_file"):
        admin_token(settings)
