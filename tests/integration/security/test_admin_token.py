"""The admin credential generated on first start: private file, same token after a restart."""

from __future__ import annotations

import os
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


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_token_file_of_another_user_stops_start_up(tmp_path: Path) -> None:
    """Its owner could read or rewrite it: a private file that someone else planted hands them admin."""
    path = tmp_path / "admin_token"
    path.write_text("planted-by-someone-else\n")
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    settings = load_settings(env={}, overrides={"auth.admin_token_file": str(path)})
    with pytest.raises(ConfigError, match=r"auth\.admin_token_file: .* another user"):
        admin_token(settings)


@pytest.mark.parametrize("source", ["setting", "file"])
def test_a_guessable_admin_token_stops_start_up(tmp_path: Path, source: str) -> None:
    """It opens /admin/*: `changeme` would fall to a few tries, whatever the rate limit."""
    path = tmp_path / "admin_token"
    path.write_text("changeme\n")
    path.chmod(0o600)
    overrides = {"auth.admin_token": "changeme"} if source == "setting" else {"auth.admin_token_file": str(path)}
    with pytest.raises(ConfigError, match=r"auth\.admin_token.*at least 32"):
        admin_token(load_settings(env={}, overrides=overrides))
