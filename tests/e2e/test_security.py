"""The real server with auth on: the admin credential file, `arbitrage keys`, 401/403, the refusal to
listen beyond loopback without auth, and no secret in the server's log."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import ARBITRAGE, ServerProcess

pytestmark = pytest.mark.e2e


def _keys(*args: str, data_dir: Path, url: str | None = None) -> dict[str, object]:
    command = [str(ARBITRAGE), "keys", "--data-dir", str(data_dir)]
    if url:
        command += ["--url", url]
    result = subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=data_dir.parent,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_keys_made_by_the_cli_open_exactly_their_routes_on_a_server_with_auth(tmp_path: Path) -> None:
    data = tmp_path / "data"
    offline = _keys("create", "--name", "offline", "--role", "ingest", data_dir=data)
    ingest_token = str(offline["token"])
    with ServerProcess(data, env={"ARB_AUTH__ENABLED": "true"}) as server:
        token_file = data / "admin_token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        admin = token_file.read_text().strip()
        assert httpx.get(f"{server.url}/health").status_code == 200
        assert httpx.get(f"{server.url}/transactions").status_code == 401
        assert httpx.post(f"{server.url}/ingest", content=b"[]", headers={"X-API-Key": ingest_token}).status_code != 401

        created = _keys("create", "--role", "read", data_dir=data, url=server.url)
        reader = {"Authorization": f"Bearer {created['token']}"}
        assert httpx.get(f"{server.url}/transactions", headers=reader).status_code == 200
        assert httpx.get(f"{server.url}/admin/status", headers=reader).status_code == 403
        listed = _keys("list", data_dir=data, url=server.url)
        assert {k["name"] for k in listed["items"]} >= {"offline"}  # type: ignore[index]
        _keys("revoke", str(created["key"]["id"]), data_dir=data, url=server.url)  # type: ignore[index]
        assert httpx.get(f"{server.url}/transactions", headers=reader).status_code == 401
        assert httpx.get(f"{server.url}/admin/config", headers={"Authorization": f"Bearer {admin}"}).status_code == 200
        assert httpx.get(f"{server.url}/health").headers["x-content-type-options"] == "nosniff"
    log = server.log.read_text()
    for secret in (admin, ingest_token, str(created["token"])):
        assert secret not in log


def test_serving_beyond_loopback_without_auth_exits_2_with_the_reason(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(ARBITRAGE), "serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "auth.enabled" in result.stderr
    assert not (tmp_path / "data").exists()
