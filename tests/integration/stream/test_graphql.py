"""`/graphql` on the real app and warehouse: queries, limits, the live subscription, GraphiQL."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from arbitrage.api.graphql import MAX_SUBSCRIPTIONS

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
            client, "{ stats { transactions netProfitSol topDexes { dex } } dailyStats(days: 3) { date transactions } }"
        )
    )["data"]
    assert stats["stats"]["transactions"] == 200
    assert sum(d["transactions"] for d in stats["dailyStats"]) == 200
    assert (await _query(client, "{ exports { id } schedules { id } }"))["data"] is not None


async def test_deep_wide_or_oversized_queries_are_refused(client: AsyncTestClient[Any]) -> None:
    deep = "{ transactions { items { legs { dex } } } }"
    assert "errors" not in await _query(client, deep)
    aliases = "{ " + " ".join(f"a{i}: stats {{ transactions }}" for i in range(20)) + " }"
    assert "errors" in await _query(client, aliases)
    too_many = await _query(client, "{ transactions(first: 5000) { items { signature } } }")
    assert "errors" in too_many


@pytest.mark.parametrize(
    "key",
    [
        "99999999999999999999:x",
        "9" * 140 + ":x",
        "not-a-cursor",
        "1:1",  # decodes, but no stored row has that key: an empty page before
        "1767225600000:" + "1" * 20,  # a plausible time, but no signature
    ],
)
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


def _aliased_pages(count: int, first: str) -> str:
    fields = " ".join(
        f"a{i}: transactions(first: {first}, filter: {{minProfitSol: -{i + 1}e8}}) {{ items {{ signature }} }}"
        for i in range(count)
    )
    return "{ " + fields + " }"


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        (_aliased_pages(3, "1000"), {}),
        ("query($n: Int!) " + _aliased_pages(2, "$n"), {"n": 600}),
        ("query($n: Int! = 600) " + _aliased_pages(2, "$n"), {}),
        ("query { ...Pages } fragment Pages on Query " + _aliased_pages(2, "700"), {}),
        ("{ ... on Query " + _aliased_pages(2, "600") + " }", {}),
    ],
)
async def test_aliases_cannot_multiply_the_bound_on_first(
    client: AsyncTestClient[Any], records: list[dict[str, Any]], query: str, variables: dict[str, Any]
) -> None:
    """One 2 KB query of 15 aliased `transactions(first: 1000)` held the event loop 3.6 s and answered 40 MB."""
    await _ingest(client, records)
    answer = await _query(client, query, **variables)
    assert answer.get("data") is None, str(answer)[:300]
    assert [e["message"].split(":")[0] for e in answer["errors"]] == ["first"], answer["errors"]


async def test_aliased_pages_within_the_bound_are_answered(
    client: AsyncTestClient[Any], records: list[dict[str, Any]]
) -> None:
    await _ingest(client, records)
    same = "{ transactions(first: 1000) { items { signature } } transactions(first: 1000) { nextCursor } }"
    assert len((await _query(client, same))["data"]["transactions"]["items"]) == 200
    answer = await _query(client, "query($n: Int!) " + _aliased_pages(2, "$n"), n=500)
    profitable = (await client.get("/transactions", params={"limit": 1000, "min_profit_sol": -1e8})).json()["items"]
    assert [len(answer["data"][f"a{i}"]["items"]) for i in range(2)] == [len(profitable)] * 2
    # Only the operation that runs counts (GraphiQL sends every operation in its editor).
    page = "transactions(first: 1000) { items { signature } }"
    document = {"query": f"query A {{ {page} }} query B {{ {page} }}", "operationName": "B"}
    assert len((await client.post("/graphql", json=document)).json()["data"]["transactions"]["items"]) == 200


async def _until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(30):
        while not condition():  # noqa: ASYNC110 (the hub offers no event to wait on)
            await anyio.sleep(0.01)


async def test_one_connection_holds_a_bounded_number_of_subscriptions(
    client: AsyncTestClient[Any], records: list[dict[str, Any]]
) -> None:
    """Every subscription costs a decode and a serialization per event: 100 on one socket took 8 s per 1000 rows."""
    limit = MAX_SUBSCRIPTIONS
    hub = client.app.state.services.feed.hub
    query = {"query": "subscription { transactions { signature } }"}
    with await client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init"})
        assert ws.receive_json()["type"] == "connection_ack"
        for i in range(limit + 1):
            ws.send_json({"id": str(i), "type": "subscribe", "payload": query})
        await _until(lambda: hub.subscribers >= limit)
        await _ingest(client, records[:1])
        messages: list[dict[str, Any]] = []
        while len(messages) < limit + 1:
            message = ws.receive_json(timeout=30)
            if message["type"] != "complete":
                messages.append(message)
        refused = [m for m in messages if m["type"] == "error" or m["payload"].get("errors")]
        assert [m["id"] for m in refused] == [str(limit)], refused
        errors = refused[0]["payload"] if refused[0]["type"] == "error" else refused[0]["payload"]["errors"]
        assert errors[0]["message"].startswith("subscription: ")
        ws.send_json({"id": "0", "type": "complete"})
        await _until(lambda: hub.subscribers == limit - 1)
        ws.send_json({"id": "again", "type": "subscribe", "payload": query})
        await _until(lambda: hub.subscribers == limit)


@pytest.mark.parametrize("limit", [0, -5, 1001])
async def test_an_exports_limit_out_of_the_rest_bounds_is_an_error_naming_it(
    client: AsyncTestClient[Any], limit: int
) -> None:
    """`GET /exports?limit=` answers 400 outside 1-1000; GraphQL used to answer 1 or 1000 jobs instead."""
    answer = await _query(client, "query($n: Int!) { exports(limit: $n) { id } }", n=limit)
    assert [e["message"].split(":")[0] for e in answer["errors"]] == ["limit"], answer
    assert (await client.get("/exports", params={"limit": limit})).status_code == 400


async def _warehouse_queries(client: AsyncTestClient[Any]) -> float:
    metrics = (await client.get("/metrics")).text
    line = next(
        x for x in metrics.splitlines() if x.startswith('database_query_duration_seconds_count{operation="query"}')
    )
    return float(line.rsplit(" ", 1)[1])


async def test_aliased_aggregates_are_computed_once_like_the_rest_ones(
    client: AsyncTestClient[Any], records: list[dict[str, Any]]
) -> None:
    """`/stats` is computed once for concurrent readers (`ShortCache`); GraphQL ran 4 queries per alias."""
    await _ingest(client, records)
    before = await _warehouse_queries(client)
    aliases = " ".join(f"a{i}: stats {{ transactions }} d{i}: dailyStats(days: 3) {{ transactions }}" for i in range(7))
    answer = await _query(client, f"{{ {aliases} }}")
    assert {answer["data"][f"a{i}"]["transactions"] for i in range(7)} == {200}
    assert await _warehouse_queries(client) - before <= 8  # one stats (4 queries), one daily, some slack


async def test_an_oversized_request_body_is_refused_before_it_is_parsed(client: AsyncTestClient[Any]) -> None:
    """The app-wide body bound is the ingest one (64 MiB): a GraphQL body that large was decoded whole."""
    padding = [[] for _ in range(400_000)]  # 1.2 MB of JSON, about 20 MB once decoded
    body = {"query": "{ stats { transactions } }", "variables": {"p": padding}}
    assert (await client.post("/graphql", json=body)).status_code == 413
    ordinary = {"query": "{ stats { transactions } }", "variables": {"p": "x" * 50_000}}
    assert (await client.post("/graphql", json=ordinary)).json()["data"]["stats"]["transactions"] == 0
