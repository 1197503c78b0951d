"""The real server with auth on: the admin credential file, `arbitrage keys` (which sends that credential
in clear only to loopback), 401/403, the refusal to listen beyond loopback without auth, no secret in the
server's log; and with auth off, no local trust for web pages of other sites."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import stat
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest

from arbitrage.security import is_loopback
from arbitrage.simulator import Simulator
from tests.e2e.server import ARBITRAGE, ServerProcess
from tests.e2e.stream_clients import SseReader, WsClient, WsClosed

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
        odd = subprocess.run(
            [str(ARBITRAGE), "keys", "--data-dir", str(data), "--url", server.url, "revoke", "../keys"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin"},
        )
        assert odd.returncode == 1 and "answered 404" in odd.stderr, odd.stderr  # an id, not a path to follow
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


def _upgrade_status(url: str, headers: dict[str, str]) -> bytes:
    """The status line a WebSocket handshake to `/ws/transactions` gets."""
    parts = urlsplit(url)
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = (
        f"GET /ws/transactions HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request.encode())
        return sock.recv(4096).split(b"\r\n", 1)[0]


def test_with_auth_off_web_pages_of_other_sites_get_no_local_trust(tmp_path: Path) -> None:
    """A browser on this machine also runs other sites' pages: with auth off they could post
    transactions, start exports and schedules (a form or `no-cors` fetch, `Origin` theirs or `null`),
    open the live WebSocket, and through DNS rebinding (`Host` theirs) read every answer."""
    dashboard = "https://dashboard.example"
    with ServerProcess(tmp_path / "data", env={"ARB_AUTH__CORS_ORIGINS": json.dumps([dashboard])}) as server:
        url, port = server.url, server.port
        plain = {"Content-Type": "text/plain"}
        for origin in ("https://evil.example", "null", f"http://evil.example:{port}"):
            posted = httpx.post(f"{url}/ingest", content=b"[]", headers={**plain, "Origin": origin})
            assert posted.status_code == 401, (origin, posted.text)
            exported = httpx.post(f"{url}/export/csv", content=b"{}", headers={**plain, "Origin": origin})
            assert exported.status_code == 401, (origin, exported.text)
            assert _upgrade_status(url, {"Origin": origin}).split(b" ")[1] != b"101", origin
        for host in (f"evil.example:{port}", "localhost.evil.example", "127.0.0.1.nip.io"):
            rebound = httpx.get(f"{url}/transactions", headers={"Host": host})
            assert rebound.status_code == 401, (host, rebound.text)
            assert "another site" in rebound.json()["detail"]

        for origin in (dashboard, f"http://127.0.0.1:{port}", "http://localhost:3000", None):
            headers = {"Origin": origin} if origin else {}
            assert httpx.post(f"{url}/ingest", content=b"[]", headers=headers).status_code == 200, origin
            assert _upgrade_status(url, headers).split(b" ")[1] == b"101", origin
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", f"testserver:{port}"):
            assert httpx.get(f"{url}/transactions", headers={"Host": host}).status_code == 200, host
        assert httpx.get(f"{url}/health", headers={"Host": "evil.example"}).status_code == 200


def test_keys_over_http_never_sends_the_admin_credential_in_clear_beyond_loopback(tmp_path: Path) -> None:
    """A host name may resolve to any machine (here it is this one, so nothing leaves it)."""
    name = socket.gethostname()
    if not is_loopback(socket.gethostbyname(name)):
        pytest.skip(f"{name} does not resolve to a loopback address here")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        # The kernel accepts a connection and keeps what it sends until we look, after the CLI is done.
        result = subprocess.run(
            [str(ARBITRAGE), "keys", "--data-dir", str(tmp_path / "data"), "--url", f"http://{name}:{port}", "list"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "ARB_AUTH__ADMIN_TOKEN": "admin-token-never-in-clear-0123456789abcdef"},
        )
        listener.settimeout(0.5)
        received = b""
        with contextlib.suppress(TimeoutError), listener.accept()[0] as connection:
            connection.settimeout(0.5)
            received = connection.recv(65536)
    assert not received, received
    assert result.returncode != 0
    assert "https://" in result.stderr and "admin-token-never" not in result.stderr


def test_open_streams_end_once_their_key_is_revoked(tmp_path: Path) -> None:
    """A guard admits a stream once; revoking its key must still end it (within the 5 s re-check),
    before anything stored after the revocation reaches it."""
    records = Simulator(seed=41).records(40)
    data = tmp_path / "data"
    with ServerProcess(data, env={"ARB_AUTH__ENABLED": "true"}) as server:
        admin = {"Authorization": f"Bearer {(data / 'admin_token').read_text().strip()}"}
        created = httpx.post(f"{server.url}/admin/keys", json={"roles": ["read"]}, headers=admin).json()
        reader = {"X-API-Key": created["token"]}

        def ingest(batch: list[dict[str, object]]) -> None:
            answer = httpx.post(f"{server.url}/ingest", content=msgspec.json.encode(batch), headers=admin, timeout=60)
            assert answer.json()["accepted"] == len(batch)

        with (
            SseReader(f"{server.url}/sse/stream", params={"fields": "signature"}, headers=reader) as sse,
            WsClient(f"{server.url}/ws/transactions", headers=reader) as ws,
            WsClient(f"{server.url}/graphql", subprotocols=["graphql-transport-ws"], headers=reader) as graphql,
        ):
            sse.wait_connected()
            ws.send({"op": "subscribe", "fields": ["signature"]})
            assert ws.recv_until(lambda m: m["type"] == "subscribed")
            graphql.send({"type": "connection_init"})
            assert graphql.recv()["type"] == "connection_ack"
            query = "subscription { transactions { signature } }"
            graphql.send({"id": "1", "type": "subscribe", "payload": {"query": query}})
            ingest(records[:20])
            sse.wait_for(lambda r: len(r.events) == 20)
            assert ws.recv_until(lambda m: m["type"] == "transactions")
            assert graphql.recv_until(lambda m: m["type"] == "next")

            assert httpx.delete(f"{server.url}/admin/keys/{created['key']['id']}", headers=admin).status_code == 200
            time.sleep(5.5)
            ingest(records[20:])
            sse.wait_for(lambda r: r.ended)
            with pytest.raises(WsClosed) as closed:
                ws.recv_until(lambda m: False)
            answers = []
            while (message := graphql.recv())["type"] == "next":
                answers.append(message["payload"])
    assert "revoked" in str(answers[-1].get("errors")), answers[-1]
    assert len(answers) == 20, "the first batch's other 19 transactions, then the error: nothing stored later"
    assert "closed: the credential was revoked or has expired" in sse.comments
    assert len(sse.events) == 20, "nothing stored after the revocation reached the stream"
    assert closed.value.code == 1008
