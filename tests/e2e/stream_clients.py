"""Minimal SSE and WebSocket clients over plain sockets, for driving the real server.

Plain sockets because a test needs what library clients hide: dropping a connection at
once from another thread, or not reading at all (a slow consumer).
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import msgspec


@dataclass
class SseEvent:
    id: int
    event: str
    data: dict[str, object]


@dataclass
class SseReader:
    """GET an SSE URL in a thread and collect its events; `close()` drops the connection."""

    url: str
    params: dict[str, object] = field(default_factory=dict)
    last_event_id: int | None = None
    events: list[SseEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    ended: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._changed = threading.Condition()
        parts = urlsplit(self.url)
        query = urlencode({k: v for k, v in self.params.items() if v is not None})
        target = parts.path + (f"?{query}" if query else "")
        self._sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        resume = f"Last-Event-ID: {self.last_event_id}\r\n" if self.last_event_id is not None else ""
        extra = "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
        self._sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: text/event-stream\r\n{resume}{extra}\r\n".encode()
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def wait_for(self, predicate: Callable[[SseReader], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition not met; {len(self.events)} events, ended={self.ended}")
                self._changed.wait(remaining)

    def wait_connected(self, timeout: float = 30.0) -> None:
        self.wait_for(lambda r: any(c.startswith("connected") for c in r.comments) or r.ended, timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(10)

    def __enter__(self) -> SseReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _read(self) -> None:
        buffer = b""
        try:
            head, buffer = self._until(b"\r\n\r\n", buffer)
            assert head.startswith(b"HTTP/1.1 200"), head
            text = b""
            while True:
                size_line, buffer = self._until(b"\r\n", buffer)
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    break
                while len(buffer) < size + 2:
                    buffer += self._recv()
                text += buffer[:size]
                buffer = buffer[size + 2 :]
                *blocks, text = text.split(b"\n\n")
                for block in blocks:
                    self._parse(block.decode())
        except (OSError, ConnectionError, ValueError):
            pass
        finally:
            with self._changed:
                self.ended = True
                self._changed.notify_all()

    def _recv(self) -> bytes:
        data = self._sock.recv(1 << 16)
        if not data:
            raise ConnectionError("closed")
        return data

    def _until(self, marker: bytes, buffer: bytes) -> tuple[bytes, bytes]:
        while marker not in buffer:
            buffer += self._recv()
        head, _, rest = buffer.partition(marker)
        return head, rest

    def _parse(self, block: str) -> None:
        fields: dict[str, str] = {}
        comments = []
        for line in block.split("\n"):
            if line.startswith(":"):
                comments.append(line[1:].strip())
            elif ":" in line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        with self._changed:
            self.comments.extend(comments)
            if "data" in fields:
                event = SseEvent(int(fields["id"]), fields.get("event", "message"), msgspec.json.decode(fields["data"]))
                self.events.append(event)
            self._changed.notify_all()


class WsClosed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed with {code}: {reason}")
        self.code = code
        self.reason = reason


class WsClient:
    """A blocking RFC 6455 client: `send(obj)`, `recv()` → decoded JSON, `WsClosed` on close."""

    def __init__(
        self,
        url: str,
        timeout: float = 30.0,
        receive_buffer: int | None = None,
        subprotocols: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        parts = urlsplit(url)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self._sock.settimeout(timeout)
        self._sock.connect((parts.hostname, parts.port))
        key = base64.b64encode(os.urandom(16)).decode()
        protocols = f"Sec-WebSocket-Protocol: {', '.join(subprotocols)}\r\n" if subprotocols else ""
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self._sock.sendall(
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{protocols}{extra}\r\n".encode()
        )
        self._buffer = bytearray()
        head = self._take_until(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode(errors="replace"))

    def send(self, message: object) -> None:
        payload = msgspec.json.encode(message)
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x81, 0x80 | length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, length)
        key = (mask * (length // 4 + 1))[:length]
        masked = (int.from_bytes(payload) ^ int.from_bytes(key)).to_bytes(length)
        self._sock.sendall(header + mask + masked)

    def recv(self) -> dict[str, object]:
        message = bytearray()
        while True:
            first, second = self._take(2)
            opcode = first & 0x0F
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._take(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._take(8))
            payload = self._take(length)
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                raise WsClosed(code, payload[2:].decode(errors="replace"))
            if opcode in (0x9, 0xA):
                continue
            message += payload
            if first & 0x80:
                return msgspec.json.decode(message)  # type: ignore[no-any-return]

    def recv_until(self, predicate: Callable[[dict[str, object]], bool], limit: int = 100_000) -> dict[str, object]:
        for _ in range(limit):
            message = self.recv()
            if predicate(message):
                return message
        raise AssertionError("no matching message")

    def __enter__(self) -> WsClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendall(struct.pack("!BB", 0x88, 0x80 | 2) + b"\0\0\0\0" + struct.pack("!H", 1000))
        self._sock.close()

    def _take_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            self._fill()
        head, _, rest = self._buffer.partition(marker)
        self._buffer = bytearray(rest)
        return bytes(head)

    def _take(self, count: int) -> bytes:
        while len(self._buffer) < count:
            self._fill()
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def _fill(self) -> None:
        data = self._sock.recv(1 << 16)
        if not data:
            raise WsClosed(1006, "connection lost")
        self._buffer += data
