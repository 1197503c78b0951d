"""The status page in headless Chromium against the real server: live rows appear."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import ServerProcess
from tests.e2e.stream_clients import WsClient

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)"),
]


class DevTools:
    """One page of a headless Chromium, driven over the DevTools protocol."""

    def __init__(self, socket: WsClient) -> None:
        self.socket = socket
        self._next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        self.socket.send({"id": self._next_id, "method": method, "params": params})
        reply = self.socket.recv_until(lambda m: m.get("id") == self._next_id)
        assert "error" not in reply, reply
        return reply["result"]  # type: ignore[return-value]

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    profile = tmp_path / "chromium"
    assert CHROMIUM is not None
    process = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"]
        url = pages[0]["webSocketDebuggerUrl"].replace("ws://", "http://")
        with WsClient(url) as socket:
            yield DevTools(socket)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_the_status_page_shows_live_transactions_health_and_the_profit_chart(tmp_path: Path, browser: DevTools) -> None:
    with ServerProcess(tmp_path / "data", args=["--demo", "--demo-rate", "200"]) as server:
        browser.call("Page.navigate", url=f"{server.url}/")
        deadline = time.monotonic() + 30
        while browser.evaluate("document.querySelectorAll('#live tr.tx').length") < 5:
            assert time.monotonic() < deadline, "no live rows appeared"
            time.sleep(0.2)
        first = browser.evaluate("document.querySelector('#live tr.tx').dataset.signature")
        assert httpx.get(f"{server.url}/transactions/{first}").status_code == 200, "rows are stored transactions"
        assert browser.evaluate("document.getElementById('feed-state').textContent") == "live"
        while "warehouse" not in browser.evaluate("document.getElementById('health').textContent"):
            assert time.monotonic() < deadline, "component health did not render"
            time.sleep(0.2)
        assert browser.evaluate("document.querySelectorAll('#chart polyline').length") == 1
        scripts = browser.evaluate("[...document.scripts].map(s => s.src).join(' ')")
        assert scripts == f"{server.url}/static/status.js", "local assets only"
