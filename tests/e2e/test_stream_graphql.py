"""`/graphql` subscriptions against the real server (Granian): what one client may make it hold."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest

from tests.e2e.server import ServerProcess
from tests.e2e.stream_clients import WsClient, WsClosed

pytestmark = pytest.mark.e2e

MESSAGE_TOO_BIG = 1009
INVALID_MESSAGE = 4400
SUBSCRIPTION = "subscription { transactions { signature } }"
START = {"graphql-transport-ws": "subscribe", "graphql-ws": "start"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("graphql") / "data") as process:
        yield process


def _connect(server: ServerProcess, protocol: str) -> WsClient:
    client = WsClient(f"{server.url}/graphql", timeout=20, subprotocols=[protocol])
    client.send({"type": "connection_init"})
    assert client.recv()["type"] == "connection_ack"
    return client


@pytest.mark.parametrize("protocol", list(START))
def test_an_oversized_subscription_message_closes_the_socket_instead_of_being_parsed_and_held(
    server: ServerProcess, protocol: str
) -> None:
    """Granian takes WebSocket messages up to 64 MiB; variables no operation declares were decoded and
    kept with the subscription, so 16 subscriptions of 8 MiB `[[],[],…]` held gigabytes on one socket."""
    padding = [[] for _ in range(400_000)]  # 1.2 MB of JSON, about 20 MB once decoded
    with _connect(server, protocol) as client:
        client.send(
            {"id": "big", "type": START[protocol], "payload": {"query": SUBSCRIPTION, "variables": {"p": padding}}}
        )
        # Answered with an error while the oversized subscription still runs, when it was taken.
        client.send({"id": "probe", "type": START[protocol], "payload": {"query": "subscription { nope }"}})
        with pytest.raises(WsClosed) as closed:
            client.recv()
    assert closed.value.code == MESSAGE_TOO_BIG


@pytest.mark.parametrize("protocol", list(START))
def test_a_subscription_message_of_ordinary_size_is_served(server: ServerProcess, protocol: str) -> None:
    with _connect(server, protocol) as client:
        padding = "x" * 50_000
        client.send(
            {"id": "1", "type": START[protocol], "payload": {"query": SUBSCRIPTION, "variables": {"p": padding}}}
        )
        client.send({"id": "2", "type": START[protocol], "payload": {"query": "subscription { nope }"}})
        answer = client.recv()
    assert answer["id"] == "2" and answer["type"] == "error", answer


@pytest.mark.parametrize("protocol", list(START))
def test_deeply_nested_json_is_refused_as_invalid_not_answered_as_our_internal_error(
    server: ServerProcess, protocol: str
) -> None:
    """Python's JSON decoder raises RecursionError there, which strawberry took for a server failure (4500)."""
    nested = "[" * 5_000 + "]" * 5_000
    message = '{"id": "1", "type": "%s", "payload": {"query": "%s", "variables": {"p": %s}}}'
    with _connect(server, protocol) as client:
        client.send(msgspec.Raw((message % (START[protocol], SUBSCRIPTION, nested)).encode()))
        if protocol == "graphql-transport-ws":
            with pytest.raises(WsClosed) as closed:
                client.recv()
            assert closed.value.code == INVALID_MESSAGE
            return
        # graphql-ws ignores what it cannot parse, and carries on.
        client.send({"id": "2", "type": "start", "payload": {"query": "subscription { nope }"}})
        answer = client.recv()
    assert answer["id"] == "2" and answer["type"] == "error", answer
