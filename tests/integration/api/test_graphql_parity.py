"""`/graphql` against the REST routes it mirrors: the same roles, the same errors, the same answers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from arbitrage.app import create_app
from arbitrage.config import load_settings
from tests.conftest import fresh_data_dir
from tests.integration.security.conftest import ADMIN_TOKEN, JWT_SECRET, bearer, jwt_for

pytestmark = pytest.mark.anyio
Client = AsyncTestClient[Any]


@pytest.fixture
async def secure_client(tmp_path: Path, migrated_template: Path) -> AsyncIterator[Client]:
    """The app with auth on: roles come from the JWT each request carries."""
    settings = load_settings(
        env={},
        overrides={
            "storage.data_dir": str(fresh_data_dir(migrated_template, tmp_path / "data")),
            "export.dir": str(tmp_path / "exports"),
            "auth.enabled": True,
            "auth.admin_token": ADMIN_TOKEN,
            "auth.jwt_secret": JWT_SECRET,
            "auth.rate_limit_per_minute": 0,
        },
    )
    async with AsyncTestClient(create_app(settings)) as client:
        yield client


async def _query(client: Client, query: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query}, headers=headers or {})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize(("field", "route"), [("exports", "/exports"), ("schedules", "/schedules")])
async def test_a_read_only_credential_gets_no_exports_or_schedules_through_graphql(
    secure_client: Client, field: str, route: str
) -> None:
    """`GET /exports` and `GET /schedules` need the `export` role; `/graphql` only checked `read`."""
    read = bearer(jwt_for("read"))
    assert (await secure_client.get(route, headers=read)).status_code == 403
    answer = await _query(secure_client, f"{{ {field} }}", read)
    assert answer.get("data") is None, answer
    assert [e["message"] for e in answer["errors"]] == [f"{field}: this field requires the 'export' role"]
    # Other fields of the same query still answer a read credential, and `export` gets all of them.
    assert (await _query(secure_client, "{ stats { transactions } }", read))["data"]["stats"]["transactions"] == 0
    for role in ("export", "admin"):
        granted = await _query(secure_client, f"{{ {field} }}", bearer(jwt_for(role)))
        assert granted == {"data": {field: []}}, (role, granted)


async def test_an_unavailable_warehouse_is_named_without_its_secrets(
    client: Client, records: list[dict[str, Any]]
) -> None:
    """REST answers 503 "warehouse unavailable"; GraphQL quoted the warehouse's own error, credentials and all."""
    await client.post("/ingest", content=msgspec.json.encode(records[:5]))
    warehouse = client.app.state.services.warehouse
    warehouse.fail("cannot reach clickhouse://app:hunter2@db.internal:9000/arbitrage")
    try:
        rest = await client.get("/transactions", params={"signer": records[0]["signer"]})
        assert rest.status_code == 503 and "hunter2" not in rest.text
        query = f'{{ transactions(filter: {{signer: "{records[0]["signer"]}"}}) {{ items {{ signature }} }} }}'
        answer = await _query(client, query)
    finally:
        warehouse.fail(None)
    assert "hunter2" not in msgspec.json.encode(answer).decode(), answer
    assert [e["message"] for e in answer["errors"]] == ["warehouse unavailable"], answer


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("query($n: Int!) { transactions(first: $n) { nextCursor } }", {"n": "x"}),
        ("query($f: TransactionFilterInput) { transactions(filter: $f) { nextCursor } }", {"f": {"bogus": 1}}),
    ],
)
async def test_a_bad_variable_is_told_to_the_client_and_not_logged_as_our_error(
    client: Client, caplog: pytest.LogCaptureFixture, query: str, variables: dict[str, Any]
) -> None:
    """REST answers a bad parameter 400 without an ERROR in the log; strawberry logged these with a traceback."""
    with caplog.at_level(logging.ERROR, logger="strawberry"):
        response = await client.post("/graphql", json={"query": query, "variables": variables})
    (error,) = response.json()["errors"]
    assert error["message"].startswith("Variable '$"), error
    assert [r for r in caplog.records if r.name.startswith("strawberry")] == []


async def test_a_read_only_credential_gets_no_exports_over_the_websocket_either(secure_client: Client) -> None:
    """graphql-transport-ws runs queries too, under the credential the socket was opened with."""
    headers = bearer(jwt_for("read"))
    with await secure_client.websocket_connect(
        "/graphql", subprotocols=["graphql-transport-ws"], headers=headers
    ) as ws:
        ws.send_json({"type": "connection_init"})
        assert ws.receive_json()["type"] == "connection_ack"
        ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": "{ schedules }"}})
        message = ws.receive_json(timeout=10)
    errors = message["payload"] if message["type"] == "error" else message["payload"].get("errors")
    assert [e["message"] for e in errors or ()] == ["schedules: this field requires the 'export' role"], message


@pytest.mark.parametrize("suffix", ["=", "!"])
async def test_an_after_cursor_the_rest_api_refuses_is_refused_naming_after(
    client: Client, records: list[dict[str, Any]], suffix: str
) -> None:
    """`GET /transactions?cursor=` holds a cursor to its alphabet; base64 decoding skips what is outside it."""
    await client.post("/ingest", content=msgspec.json.encode(records[:5]))
    cursor = (await client.get("/transactions", params={"limit": 2})).json()["next_cursor"] + suffix
    assert (await client.get("/transactions", params={"cursor": cursor})).status_code == 400
    answer = (
        await client.post(
            "/graphql",
            json={"query": "query($a: String) { transactions(after: $a) { nextCursor } }", "variables": {"a": cursor}},
        )
    ).json()
    assert [e["message"].split(":")[0] for e in answer.get("errors", ())] == ["after"], answer
