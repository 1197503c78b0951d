"""`/graphql` on the real app and warehouse: queries, limits, the live subscription, GraphiQL."""

from __future__ import annotations

import base64
import logging
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

pytestmark = pytest.mark.anyio

TX_FIELDS = (
    "signature slot blockTime signer netProfitSol streamPosition source kafkaPartition kafkaOffset "
    "legs { dex tokenIn amountIn } features risk { score level }"
)


async def _ingest(client: AsyncTestClient[Any], records: list[dict[str, Any]]) -> None:
    response = await client.post("/ingest", content=msgspec.json.encode(records))
    assert response.json()["accepted"] == len(records)


async def _query(client: AsyncTestClient[Any], query: str, **variables: Any) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_queries_page_through_transactions_and_agree_with_the_rest_api(
    client: AsyncTestClient[Any], records: list[dict[str, Any]]
) -> None:
    await _ingest(client, records)
    query = (
        f"query($after: String) {{ transactions(first: 120, after: $after) {{ items {{ {TX_FIELDS} }} nextCursor }} }}"
    )
    first = (await _query(client, query))["data"]["transactions"]
    second = (await _query(client, query, after=first["nextCursor"]))["data"]["transactions"]
    assert len(first["items"]) == 120 and len(second["items"]) == 80 and second["nextCursor"] is None
    rest = (await client.get("/transactions", params={"limit": 200})).json()["items"]
    assert [t["signature"] for t in first["items"] + second["items"]] == [t["signature"] for t in rest]

    one = rest[0]
    single = await _query(client, f'{{ transaction(signature: "{one["signature"]}") {{ {TX_FIELDS} }} }}')
    tx = single["data"]["transaction"]
    assert tx["netProfitSol"] == one["net_profit_sol"]
    assert tx["legs"][0]["amountIn"] == str(one["legs"][0]["amount_in"])
    assert tx["features"] == one["features"] and tx["risk"]["score"] == one["risk"]["score"]
    assert (tx["source"], tx["kafkaPartition"], tx["kafkaOffset"]) == ("http", None, None)

    signer = records[0]["signer"]
    filtered = await _query(
        client, "query($s: String) { transactions(filter: {signer: $s}) { items { signer } } }", s=signer
    )
    assert {t["signer"] for t in filtered["data"]["transactions"]["items"]} == {signer}

    stats = (
        await _query(
            client, "{ stats { transactions netProfitSol topDexes } dailyStats(days: 3) { date transactions } }"
        )
    )["data"]
    assert stats["stats"]["transactions"] == 200
    assert sum(d["transactions"] for d in stats["dailyStats"]) == 200
    assert (await _query(client, "{ exports schedules }"))["data"] is not None


async def test_deep_wide_or_oversized_queries_are_refused(client: AsyncTestClient[Any]) -> None:
    deep = "{ transactions { items { legs { dex } } } }"
    assert "errors" not in await _query(client, deep)
    aliases = "{ " + " ".join(f"a{i}: stats {{ transactions }}" for i in range(20)) + " }"
    assert "errors" in await _query(client, aliases)
    too_many = await _query(client, "{ transactions(first: 5000) { items { signature } } }")
    assert "errors" in too_many


@pytest.mark.parametrize("key", ["99999999999999999999:x", "9" * 140 + ":x", "not-a-cursor"])
async def test_a_foreign_after_cursor_is_an_error_naming_after(client: AsyncTestClient[Any], key: str) -> None:
    after = base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")
    answer = await _query(client, "query($a: String) { transactions(after: $a) { nextCursor } }", a=after)
    assert [e["message"] for e in answer["errors"]] == ["after: not a cursor returned by this API"]


async def test_the_subscription_delivers_newly_stored_transactions_that_match(
    client: AsyncTestClient[Any], records: list[dict[str, Any]]
) -> None:
    signer = records[0]["signer"]
    expected = [r["signature"] for r in records if r["signer"] == signer]
    with await client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init"})
        assert ws.receive_json()["type"] == "connection_ack"
        ws.send_json(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {
                    "query": "subscription($s: String) { transactions(filter: {signer: $s}) { signature signer } }",
                    "variables": {"s": signer},
                },
            }
        )
        await _ingest(client, records)
        got = [ws.receive_json(timeout=30)["payload"]["data"]["transactions"]["signature"] for _ in expected]
    assert got == expected


async def test_graphiql_is_served_from_local_assets(client: AsyncTestClient[Any]) -> None:
    page = await client.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "/static/graphiql/graphiql.min.js" in page.text and "unpkg" not in page.text and "esm.sh" not in page.text
    assert (await client.get("/static/graphiql/graphiql.min.js")).status_code == 200


BAD_FILTERS = [
    ("dex", '"bad dex!"'),
    ("dex", '"' + "a" * 65 + '"'),
    ("signer", '"abc"'),
    ("signer", '"' + "0OIl" * 10 + '"'),
    ("token", '"' + "1" * 45 + '"'),
    ("minProfitSol", "1e10"),
]


@pytest.mark.parametrize(("name", "value"), BAD_FILTERS)
async def test_a_filter_out_of_the_rest_bounds_is_an_error_naming_it(
    client: AsyncTestClient[Any], name: str, value: str
) -> None:
    answer = await _query(client, f"{{ transactions(filter: {{{name}: {value}}}) {{ items {{ signature }} }} }}")
    assert answer["data"] is None
    (error,) = answer["errors"]
    assert error["message"].startswith(f"filter.{name}: "), error


@pytest.mark.parametrize("signature", ["abc", "0OIl" * 20, "1" * 89])
async def test_a_signature_out_of_the_rest_bounds_is_an_error_naming_it(
    client: AsyncTestClient[Any], signature: str
) -> None:
    answer = await _query(client, "query($s: String!) { transaction(signature: $s) { signature } }", s=signature)
    assert [e["message"].split(":")[0] for e in answer["errors"]] == ["signature"]


async def test_valid_filters_still_pass(client: AsyncTestClient[Any], records: list[dict[str, Any]]) -> None:
    await _ingest(client, records)
    leg = records[0]["legs"][0]
    answer = await _query(
        client,
        "query($d: String, $t: String, $p: Float) "
        "{ transactions(filter: {dex: $d, token: $t, minProfitSol: $p}) { items { dexes route } } }",
        d=leg["dex"],
        t=leg["token_in"],
        p=-1e9,
    )
    items = answer["data"]["transactions"]["items"]
    assert items and all(leg["dex"] in t["dexes"] and leg["token_in"] in t["route"] for t in items)


async def test_a_subscription_with_a_filter_out_of_bounds_is_refused_naming_it(client: AsyncTestClient[Any]) -> None:
    with await client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init"})
        assert ws.receive_json()["type"] == "connection_ack"
        query = 'subscription { transactions(filter: {dex: "bad dex!"}) { signature } }'
        ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": query}})
        message = ws.receive_json(timeout=10)
    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    assert [e["message"].split(":")[0] for e in errors] == ["filter.dex"], message


async def test_a_clients_bad_argument_is_not_logged_as_our_error(
    client: AsyncTestClient[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Strawberry logs every error with its traceback by default; a 400-class mistake is the client's."""
    with caplog.at_level(logging.ERROR, logger="strawberry"):
        answer = await _query(client, '{ transactions(filter: {dex: "bad dex!"}) { items { signature } } }')
        await _query(client, "{ noSuchField }")
    assert answer["errors"]
    assert [r for r in caplog.records if r.name.startswith("strawberry")] == []
