"""Large response bodies are handed to the server in slices that add up to the same bytes."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from arbitrage.api._sliced_bodies import SLICE_BYTES, sliced_response_bodies


def _sent_by(messages: list[dict[str, Any]], scope_type: str = "http") -> list[dict[str, Any]]:
    """What the server receives when an app sends `messages` through the wrapper."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)

    received: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        received.append(message)

    async def receive() -> Any:
        return {}

    asyncio.run(sliced_response_bodies(app)({"type": scope_type}, receive, send))  # type: ignore[arg-type]
    return received


def _body(message: dict[str, Any]) -> bytes:
    return bytes(message.get("body", b""))


@pytest.mark.parametrize("size", [2 * SLICE_BYTES + 1, 5 * SLICE_BYTES, 7 * SLICE_BYTES + 123])
def test_a_large_body_goes_in_slices_that_add_up_to_it_and_only_the_last_ends_the_response(size: int) -> None:
    body = os.urandom(size)
    start = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(size).encode())]}
    sent = _sent_by([start, {"type": "http.response.body", "body": body}])
    assert sent[0] is start
    pieces = sent[1:]
    assert len(pieces) == -(-size // SLICE_BYTES) > 2
    assert all(len(_body(piece)) <= SLICE_BYTES for piece in pieces)
    assert b"".join(map(_body, pieces)) == body
    assert [piece["more_body"] for piece in pieces] == [True] * (len(pieces) - 1) + [False]


def test_the_chunks_of_a_streamed_body_pass_as_they_are_the_last_one_too() -> None:
    chunks = [
        {"type": "http.response.body", "body": os.urandom(3 * SLICE_BYTES), "more_body": True},
        {"type": "http.response.body", "body": os.urandom(3 * SLICE_BYTES), "more_body": False},
    ]
    sent = _sent_by(chunks)
    assert len(sent) == 2 and all(a is b for a, b in zip(sent, chunks, strict=True))


def test_small_bodies_and_other_connections_pass_as_they_are() -> None:
    small = {"type": "http.response.body", "body": os.urandom(2 * SLICE_BYTES), "more_body": False}
    sent = _sent_by([small])
    assert sent == [small] and sent[0] is small
    frame = {"type": "websocket.send", "bytes": os.urandom(3 * SLICE_BYTES)}
    assert _sent_by([frame], scope_type="websocket")[0] is frame
